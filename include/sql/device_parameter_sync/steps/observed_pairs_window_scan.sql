-- Window scan: the distinct (device, parameter) pairs of the source (the measurements table, or one
-- partition of it) measured in the window [window_start, window_end), for this shard's active devices (plus
-- pairs with a NULL device id, in shard 0, so they can be counted). Used where there is no
-- (device_id, parameter_id, time) index or too few rows per pair: its cost grows with the rows of the window,
-- so it can run in parallel (CREATE TABLE AS may use parallel workers).
-- Distinct over the native columns first, so an index on the measurements table stays usable;
-- ids are cast to text afterwards. Rows with a NULL time never match the window.
-- A device belongs to shard mod(hashtext(device id as text), shards); with one shard the test folds away.
SELECT window_pairs.device_id::text AS device_id,
       window_pairs.parameter_id::text AS parameter_id
FROM (
    SELECT DISTINCT m.device_id, m.parameter_id
    FROM {source} AS m
    WHERE m.{time_column} >= %(window_start)s
      AND m.{time_column} < %(window_end)s
      AND (%(shards)s::int = 1
           OR mod(hashtext(m.device_id::text)::bigint + 2147483648, %(shards)s::int) = %(shard)s::int
           OR (m.device_id IS NULL AND %(shard)s::int = 0))
) AS window_pairs
WHERE window_pairs.device_id IS NULL
   OR window_pairs.device_id::text IN (SELECT device_id FROM {active_devices})
