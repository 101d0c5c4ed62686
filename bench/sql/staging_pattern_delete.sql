-- Staging pattern, step 3: delete the rows whose pair was not staged.
DELETE FROM iot_data.device_parameters AS t
WHERE NOT EXISTS (
    SELECT 1 FROM bench_staging AS s WHERE s.device_id = t.device_id AND s.parameter_id = t.parameter_id
);
