-- Puts iot_data.device_parameters back to the drifted state saved after generation (not timed).
-- The package's run history and change log are emptied too, so its guards see a fresh history
-- (no newer applied window), and staging tables left by an interrupted run are dropped.
TRUNCATE iot_data.device_parameters;
INSERT INTO iot_data.device_parameters SELECT * FROM bench.target_snapshot;
DO $$
DECLARE
    leftover RECORD;
BEGIN
    IF to_regclass('device_sync.run_history') IS NOT NULL THEN
        TRUNCATE device_sync.run_history;
    END IF;
    IF to_regclass('device_sync.change_log') IS NOT NULL THEN
        TRUNCATE device_sync.change_log;
    END IF;
    FOR leftover IN
        SELECT format('%I.%I', schemaname, tablename) AS name FROM pg_tables
        WHERE schemaname = 'device_sync' AND tablename LIKE 'stage\_%'
    LOOP
        EXECUTE 'DROP TABLE ' || leftover.name;
    END LOOP;
END
$$;
