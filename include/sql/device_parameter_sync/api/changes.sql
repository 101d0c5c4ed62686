-- A page of the change log, newest first, optionally for one device, parameter and/or run.
-- No total: counting every matching row (count(*) OVER ()) read the whole log on each request. The caller
-- asks for limit + 1 rows to know whether there is a next page; the ORDER BY follows the changed_at index
-- (or the (device_id, parameter_id, changed_at) index when filtered by a pair), so a page stops early.
SELECT change_id, run_id, operation, device_id, parameter_id, old_device_name, old_parameter_name,
       new_device_name, new_parameter_name, changed_at
FROM {change_log}
WHERE (%(device_id)s::text IS NULL OR device_id = %(device_id)s::text)
  AND (%(parameter_id)s::text IS NULL OR parameter_id = %(parameter_id)s::text)
  AND (%(run_id)s::text IS NULL OR run_id = %(run_id)s::text)
ORDER BY changed_at DESC, change_id DESC
LIMIT %(limit)s OFFSET %(offset)s;
