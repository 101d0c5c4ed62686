-- Floor (ii): the same pairs by a loose index scan ("skip scan") over the composite index
-- (device_id, parameter_id, "time"): hop from device to device and, per device, from parameter to
-- parameter, then probe the window once per pair. Only meaningful when that index exists.
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
        (SELECT m.parameter_id FROM iot_data.measurements AS m
         WHERE m.device_id = d.device_id AND m.parameter_id IS NOT NULL ORDER BY m.parameter_id LIMIT 1)
        UNION ALL
        SELECT (SELECT m.parameter_id FROM iot_data.measurements AS m
                WHERE m.device_id = d.device_id AND m.parameter_id > params.parameter_id
                ORDER BY m.parameter_id LIMIT 1)
        FROM params WHERE params.parameter_id IS NOT NULL
    )
    SELECT params.parameter_id FROM params WHERE params.parameter_id IS NOT NULL
) AS params
CROSS JOIN LATERAL (
    SELECT 1 FROM iot_data.measurements AS m
    WHERE m.device_id = d.device_id AND m.parameter_id = params.parameter_id
      AND m."time" >= %(window_start)s AND m."time" < %(window_end)s
    LIMIT 1
) AS hit
WHERE d.device_id IS NOT NULL;
