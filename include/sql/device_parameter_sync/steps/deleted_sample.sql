-- A few of the pairs a run waiting for approval would delete, shown in the question (first by pair).
SELECT device_id, parameter_id, old_device_name AS device_name, old_parameter_name AS parameter_name
FROM {pending_changes}
WHERE operation = 'delete'
ORDER BY device_id, parameter_id
LIMIT %(limit)s;
