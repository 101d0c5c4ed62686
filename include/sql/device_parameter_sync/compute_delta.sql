-- The changes that make iot_data.device_parameters equal the desired set of this run:
--   insert: a named pair that the table lacks;
--   update: a named pair whose device or parameter name differs in the table;
--   delete: a table row whose pair was not observed for an active device in the window.
-- Skipped pairs (observed but not nameable) are never inserted, updated or deleted.
-- %(device_ids)s limits deletes to those devices (NULL: every device); inserts and updates are already
-- limited by the staged active devices.
CREATE UNLOGGED TABLE {delta} AS
SELECT 'insert'::text AS operation,
       r.device_id, r.parameter_id,
       NULL::text AS old_device_name, NULL::text AS old_parameter_name,
       r.device_name AS new_device_name, r.parameter_name AS new_parameter_name
FROM {resolved_pairs} AS r
WHERE r.skip_reason IS NULL
  AND NOT EXISTS (
      SELECT 1 FROM iot_data.device_parameters AS t
      WHERE t.device_id = r.device_id AND t.parameter_id = r.parameter_id)
UNION ALL
SELECT 'update', r.device_id, r.parameter_id,
       t.device_name, t.parameter_name,
       r.device_name, r.parameter_name
FROM {resolved_pairs} AS r
JOIN iot_data.device_parameters AS t
  ON t.device_id = r.device_id AND t.parameter_id = r.parameter_id
WHERE r.skip_reason IS NULL
  AND (t.device_name IS DISTINCT FROM r.device_name OR t.parameter_name IS DISTINCT FROM r.parameter_name)
UNION ALL
SELECT 'delete', t.device_id, t.parameter_id,
       t.device_name, t.parameter_name,
       NULL, NULL
FROM iot_data.device_parameters AS t
WHERE NOT EXISTS (
    SELECT 1 FROM {resolved_pairs} AS r
    WHERE r.device_id = t.device_id AND r.parameter_id = t.parameter_id)
  AND (%(device_ids)s::text[] IS NULL OR t.device_id = ANY (%(device_ids)s::text[]));
