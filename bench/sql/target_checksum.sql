-- A fingerprint of iot_data.device_parameters (pairs and names), to check that every variant that
-- applies changes leaves the same table behind.
SELECT count(*) AS target_rows,
       md5(coalesce(string_agg(concat_ws('|', device_id, parameter_id, device_name, parameter_name), E'\n'
                               ORDER BY device_id, parameter_id), '')) AS checksum
FROM iot_data.device_parameters;
