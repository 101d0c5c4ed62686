-- The distinct (device, parameter) pairs measured in the window [window_start, window_end),
-- kept for active devices only (plus pairs with a NULL device id, so they can be counted).
-- Distinct over the native columns first, so an index on the measurements table stays usable;
-- ids are cast to text afterwards. Rows with a NULL time never match the window.
CREATE UNLOGGED TABLE {observed_pairs} AS
SELECT window_pairs.device_id::text AS device_id,
       window_pairs.parameter_id::text AS parameter_id
FROM (
    SELECT DISTINCT m.device_id, m.parameter_id
    FROM {measurements} AS m
    WHERE m.{time_column} >= %(window_start)s
      AND m.{time_column} < %(window_end)s
) AS window_pairs
WHERE window_pairs.device_id IS NULL
   OR window_pairs.device_id::text IN (SELECT device_id FROM {active_devices});
