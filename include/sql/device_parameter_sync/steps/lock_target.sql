-- Serializes every writer of iot_data.device_parameters (scheduled, manual and backfill runs alike)
-- until the end of the current transaction. Transaction-scoped, so it cannot leak through a pooler.
SELECT pg_advisory_xact_lock(hashtextextended('device_sync:iot_data.device_parameters', 0));
