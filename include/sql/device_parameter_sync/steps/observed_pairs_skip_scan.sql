-- Loose index scan ("skip scan"): the same pairs as observed_pairs_window_scan.sql, found by stepping
-- through an index on (device_id, parameter_id, time) of the source (the measurements table, or one
-- partition of it) instead of reading the window's rows. Its cost is a
-- few index probes per distinct pair stored in the index, whatever the window's length or row count:
--   devices: one probe per distinct device id (the next id after the previous one);
--   params:  for each active device of this shard, one probe per distinct parameter id, which also reads
--            the pair's newest time; a second probe only when that time is not before the window's end.
-- Every probe is an ORDER BY ... LIMIT 1 subquery (in a LATERAL join or a CASE) on purpose: the planner
-- flattens a top-level EXISTS into a hash semi-join over the whole window, which defeats the skip scan.
-- Pairs with a NULL parameter (per active device) or a NULL device (shard 0) are kept, to be counted.
WITH RECURSIVE devices AS (
    (SELECT m.device_id FROM {source} AS m
     WHERE m.device_id IS NOT NULL ORDER BY m.device_id LIMIT 1)
    UNION ALL
    SELECT (SELECT m.device_id FROM {source} AS m
            WHERE m.device_id > devices.device_id ORDER BY m.device_id LIMIT 1)
    FROM devices
    WHERE devices.device_id IS NOT NULL
),
shard_devices AS MATERIALIZED (
    SELECT devices.device_id
    FROM devices
    WHERE devices.device_id IS NOT NULL
      AND devices.device_id::text IN (SELECT device_id FROM {active_devices})
      AND (%(shards)s::int = 1
           OR mod(hashtext(devices.device_id::text)::bigint + 2147483648, %(shards)s::int) = %(shard)s::int)
)
SELECT d.device_id::text AS device_id, params.parameter_id::text AS parameter_id
FROM shard_devices AS d
CROSS JOIN LATERAL (
    -- Backwards through the device's parameters: each probe lands on the next parameter's newest row.
    WITH RECURSIVE params AS (
        (SELECT m.parameter_id, m.{time_column} AS newest FROM {source} AS m
         WHERE m.device_id = d.device_id AND m.parameter_id IS NOT NULL
         ORDER BY m.parameter_id DESC, m.{time_column} DESC LIMIT 1)
        UNION ALL
        SELECT previous.parameter_id, previous.newest
        FROM params
        CROSS JOIN LATERAL (
            SELECT m.parameter_id, m.{time_column} AS newest FROM {source} AS m
            WHERE m.device_id = d.device_id AND m.parameter_id < params.parameter_id
            ORDER BY m.parameter_id DESC, m.{time_column} DESC LIMIT 1
        ) AS previous
    )
    SELECT params.parameter_id FROM params
    -- A pair whose newest row is before the window's end was measured in the window exactly when that
    -- row is inside it: no second probe. Rows at or after the end (a window in the past) or with a NULL
    -- time (sorted first when descending) need a probe bounded by the window.
    WHERE CASE
              WHEN params.newest < %(window_end)s THEN params.newest >= %(window_start)s
              ELSE EXISTS (
                  SELECT 1 FROM {source} AS m
                  WHERE m.device_id = d.device_id AND m.parameter_id = params.parameter_id
                    AND m.{time_column} >= %(window_start)s AND m.{time_column} < %(window_end)s)
          END
) AS params
UNION ALL
SELECT d.device_id::text, NULL
FROM shard_devices AS d
CROSS JOIN LATERAL (
    SELECT 1 FROM {source} AS m
    WHERE m.device_id = d.device_id AND m.parameter_id IS NULL
      AND m.{time_column} >= %(window_start)s AND m.{time_column} < %(window_end)s
    LIMIT 1
) AS hit
UNION ALL
SELECT DISTINCT NULL::text, m.parameter_id::text
FROM {source} AS m
WHERE m.device_id IS NULL
  AND m.{time_column} >= %(window_start)s AND m.{time_column} < %(window_end)s
  AND %(shard)s::int = 0
