-- Adds the missing rows; created_at and updated_at take their defaults (now()).
INSERT INTO iot_data.device_parameters (device_id, device_name, parameter_id, parameter_name)
SELECT d.device_id, d.new_device_name, d.parameter_id, d.new_parameter_name
FROM {delta} AS d
WHERE d.operation = 'insert';
