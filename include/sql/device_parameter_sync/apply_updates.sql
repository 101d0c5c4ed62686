-- Renames the rows whose device or parameter name changed; created_at is kept.
UPDATE iot_data.device_parameters AS t
SET device_name = d.new_device_name,
    parameter_name = d.new_parameter_name,
    updated_at = now()
FROM {delta} AS d
WHERE d.operation = 'update'
  AND t.device_id = d.device_id
  AND t.parameter_id = d.parameter_id;
