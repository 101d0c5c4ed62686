-- A page of the change log, newest first, optionally for one device, parameter and/or run.
SELECT change_id, run_id, operation, device_id, parameter_id, old_device_name, old_parameter_name,
       new_device_name, new_parameter_name, changed_at, count(*) OVER () AS total
FROM {change_log}
WHERE (%(device_id)s::text IS NULL OR device_id = %(device_id)s::text)
  AND (%(parameter_id)s::text IS NULL OR parameter_id = %(parameter_id)s::text)
  AND (%(run_id)s::text IS NULL OR run_id = %(run_id)s::text)
ORDER BY changed_at DESC, change_id DESC
LIMIT %(limit)s OFFSET %(offset)s;
