-- The changes that make iot_data.device_parameters equal the desired set of this run (a SELECT that the
-- other statements embed; it is computed, never stored):
--   insert: a named pair that the table lacks;
--   update: a named pair whose device or parameter name differs in the table;
--   delete: a table row whose pair was not observed for an active device in the window.
-- Skipped pairs (observed but not nameable) are never inserted, updated or deleted.
-- %(device_ids)s limits deletes to those devices (NULL: every device); inserts and updates are already
-- limited by the staged active devices.
-- One full join of the observed pairs with the table finds all three (one hash of each side).
SELECT change.operation, change.device_id, change.parameter_id,
       change.old_device_name, change.old_parameter_name, change.new_device_name, change.new_parameter_name
FROM (
    SELECT CASE
               WHEN t.device_id IS NULL THEN 'insert'
               WHEN r.device_id IS NULL THEN 'delete'
               ELSE 'update'
           END AS operation,
           coalesce(r.device_id, t.device_id) AS device_id,
           coalesce(r.parameter_id, t.parameter_id) AS parameter_id,
           t.device_name AS old_device_name, t.parameter_name AS old_parameter_name,
           r.device_name AS new_device_name, r.parameter_name AS new_parameter_name,
           r.skip_reason
    FROM {resolved_pairs} AS r
    FULL JOIN iot_data.device_parameters AS t
      ON t.device_id = r.device_id AND t.parameter_id = r.parameter_id
) AS change
WHERE CASE change.operation
          WHEN 'insert' THEN change.skip_reason IS NULL
          WHEN 'delete' THEN %(device_ids)s::text[] IS NULL OR change.device_id = ANY (%(device_ids)s::text[])
          ELSE change.skip_reason IS NULL
               AND (change.old_device_name IS DISTINCT FROM change.new_device_name
                    OR change.old_parameter_name IS DISTINCT FROM change.new_parameter_name)
      END
