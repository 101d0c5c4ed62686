-- Active devices: one row per device id (as text, compared exactly: no trimming, no case folding).
-- A device is active when one of its rows has status TRUE; NULL status counts as inactive.
-- A blank device id (empty, or only whitespace or invisible characters: %(blank_name)s) is no device: it is
-- skipped and counted (discover_active_devices_summary.sql). A blank name is missing.
-- Duplicate rows of one device resolve deterministically: a usable name first, then the smallest name.
-- %(device_ids)s limits a run to those devices (NULL: every device).
CREATE UNLOGGED TABLE {active_devices} AS
SELECT DISTINCT ON (device_id::text)
       device_id::text AS device_id,
       device_name,
       (device_name IS NULL OR device_name ~ %(blank_name)s) AS name_missing
FROM iot_data.redshift_devices
WHERE status IS TRUE
  AND device_id IS NOT NULL
  AND device_id::text !~ %(blank_name)s
  AND (%(device_ids)s::text[] IS NULL OR device_id::text = ANY (%(device_ids)s::text[]))
ORDER BY device_id::text, (device_name IS NULL OR device_name ~ %(blank_name)s), device_name;
