-- Seeds the bundled IoT database (service iot-db of docker-compose.yaml) with the demo fleet of `make demo`:
-- 400 devices, 60 parameters, 12 parameters per device every 5 minutes over the day before the current
-- hour, with drift (new, renamed, quiet, inactive and unnamed devices, unknown parameters).
--
-- The postgres entrypoint runs it once, on the first start with an empty data volume, after the image's
-- own scripts (which install the timescaledb extension). The fleet itself is the project's
-- include/sql/demo/load_demo_fleet.sql, mounted at /opt/device-sync/load_demo_fleet.sql; it reads its
-- parameters with current_setting(), set here for this session (the defaults of device_sync.demo).
-- To reload a fresh day later (it replaces the demo tables, nothing else):
--   docker compose exec iot-db sh -c 'psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" -f /docker-entrypoint-initdb.d/10-device-sync-demo-fleet.sql'
\set ON_ERROR_STOP on

SELECT set_config('device_sync_demo.window_end', date_trunc('hour', now())::text, false),
       set_config('device_sync_demo.devices', '400', false),
       set_config('device_sync_demo.parameters', '60', false),
       set_config('device_sync_demo.per_device', '12', false),
       set_config('device_sync_demo.step_minutes', '5', false);

\i /opt/device-sync/load_demo_fleet.sql

-- With TimescaleDB (the iot-db image has it), the measurements become a hypertable, as in production.
-- Optional: on a server without the extension, or if the conversion fails, the table stays a plain one
-- (the package reads plain, partitioned and hypertable measurement tables alike).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
        PERFORM create_hypertable('iot_data.measurements', 'time', chunk_time_interval => interval '1 day',
                                  create_default_indexes => false, migrate_data => true);
        RAISE NOTICE 'iot_data.measurements is a TimescaleDB hypertable';
    ELSE
        RAISE NOTICE 'timescaledb is not available: iot_data.measurements stays a plain table';
    END IF;
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'iot_data.measurements stays a plain table: %', SQLERRM;
END
$$;

SELECT (SELECT count(*) FROM iot_data.redshift_devices) AS devices,
       (SELECT count(*) FROM iot_data.timescale_parameters) AS parameters,
       (SELECT count(*) FROM iot_data.measurements) AS measurements,
       (SELECT count(*) FROM iot_data.device_parameters) AS device_parameters,
       current_setting('device_sync_demo.window_end') AS window_end;
