-- Floor (ii): the window's pairs by the fastest loose index scan ("skip scan") we know over the composite
-- index (device_id, parameter_id, "time"): hop from device to device and, per device, backwards from
-- parameter to parameter; each hop lands on the pair's newest row, which decides the pair when it is
-- before the window's end (one probe per pair); otherwise one more probe bounded by the window.
-- The same technique as the sync's aggregate_recent_measurements_skip_scan.sql, minus staging, the
-- active-device filter and the NULL-id bookkeeping. Only meaningful when that index exists.
WITH RECURSIVE devices AS (
    (SELECT m.device_id FROM iot_data.measurements AS m WHERE m.device_id IS NOT NULL ORDER BY m.device_id LIMIT 1)
    UNION ALL
    SELECT (SELECT m.device_id FROM iot_data.measurements AS m
            WHERE m.device_id > devices.device_id ORDER BY m.device_id LIMIT 1)
    FROM devices WHERE devices.device_id IS NOT NULL
)
SELECT d.device_id, params.parameter_id
FROM devices AS d
CROSS JOIN LATERAL (
    WITH RECURSIVE params AS (
        (SELECT m.parameter_id, m."time" AS newest FROM iot_data.measurements AS m
         WHERE m.device_id = d.device_id AND m.parameter_id IS NOT NULL
         ORDER BY m.parameter_id DESC, m."time" DESC LIMIT 1)
        UNION ALL
        SELECT previous.parameter_id, previous.newest
        FROM params
        CROSS JOIN LATERAL (
            SELECT m.parameter_id, m."time" AS newest FROM iot_data.measurements AS m
            WHERE m.device_id = d.device_id AND m.parameter_id < params.parameter_id
            ORDER BY m.parameter_id DESC, m."time" DESC LIMIT 1
        ) AS previous
    )
    SELECT params.parameter_id FROM params
    WHERE CASE
              WHEN params.newest < %(window_end)s THEN params.newest >= %(window_start)s
              ELSE EXISTS (
                  SELECT 1 FROM iot_data.measurements AS m
                  WHERE m.device_id = d.device_id AND m.parameter_id = params.parameter_id
                    AND m."time" >= %(window_start)s AND m."time" < %(window_end)s)
          END
) AS params
WHERE d.device_id IS NOT NULL;
