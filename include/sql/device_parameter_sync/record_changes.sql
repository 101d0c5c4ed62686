-- One change-log row per applied change of this run (same transaction as the change itself).
INSERT INTO {change_log} (run_id, operation, device_id, parameter_id,
                          old_device_name, old_parameter_name, new_device_name, new_parameter_name)
SELECT %(run_id)s, operation, device_id, parameter_id,
       old_device_name, old_parameter_name, new_device_name, new_parameter_name
FROM {delta};
