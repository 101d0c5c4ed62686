-- Removes the rows the delta marks for deletion.
DELETE FROM iot_data.device_parameters AS t
USING {delta} AS d
WHERE d.operation = 'delete'
  AND t.device_id = d.device_id
  AND t.parameter_id = d.parameter_id;
