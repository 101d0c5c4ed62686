-- Staging pattern, step 1: the usual Airflow staging table, a plain DISTINCT over the window joined to the
-- active devices and the parameters' names (dropped at commit).
CREATE TEMP TABLE bench_staging ON COMMIT DROP AS
SELECT pairs.device_id, pairs.parameter_id, devices.device_name, parameters.parameter_name
FROM (
    SELECT DISTINCT device_id, parameter_id
    FROM iot_data.measurements
    WHERE "time" >= %(window_start)s AND "time" < %(window_end)s
) AS pairs
JOIN iot_data.redshift_devices AS devices ON devices.device_id = pairs.device_id AND devices.status IS TRUE
JOIN iot_data.timescale_parameters AS parameters ON parameters.parameter_id = pairs.parameter_id;
