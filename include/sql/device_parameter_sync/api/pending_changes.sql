-- A page of the changes a run waiting for approval of a mass delete would apply, by pair (its primary key).
SELECT operation, device_id, parameter_id, old_device_name, old_parameter_name, new_device_name,
       new_parameter_name
FROM {pending_changes}
ORDER BY device_id, parameter_id
LIMIT %(limit)s OFFSET %(offset)s;
