-- Counts for the run summary: active devices and the device rows that were skipped, by reason (a blank
-- device id, %(blank_name)s, counts as device_id_empty).
-- A run limited to %(device_ids)s counts only the rows of those devices (rows without an id are in no scope).
SELECT
    (SELECT count(*) FROM {active_devices}) AS active_devices,
    (SELECT count(*) FROM {active_devices} WHERE name_missing) AS device_name_missing,
    count(*) FILTER (WHERE device_id IS NULL) AS device_id_null,
    count(*) FILTER (WHERE status IS TRUE AND device_id::text ~ %(blank_name)s) AS device_id_empty,
    count(*) FILTER (WHERE status IS NULL AND device_id IS NOT NULL) AS device_status_null,
    count(*) FILTER (WHERE status IS TRUE AND device_id IS NOT NULL AND device_id::text !~ %(blank_name)s)
        - (SELECT count(*) FROM {active_devices}) AS device_duplicate_rows
FROM iot_data.redshift_devices
WHERE %(device_ids)s::text[] IS NULL OR device_id::text = ANY (%(device_ids)s::text[]);
