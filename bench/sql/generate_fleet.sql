-- The benchmark fleet, generated inside PostgreSQL (never row by row from Python).
-- Settings read with current_setting():
--   device_sync_bench.window_end    end of the 24 hours of measurements (timestamptz)
--   device_sync_bench.devices       registered devices (90 % active: every 10th is inactive)
--   device_sync_bench.parameters    known parameters
--   device_sync_bench.per_device    parameters each device reports
--   device_sync_bench.step_minutes  minutes between two measurements of one pair
--   device_sync_bench.hours         hours of measurements
-- Drift, so a sync has some thousand rows to change: every 20th device (5, 25, ...) is new (its pairs are
-- inserted), every 50th (7, 57, ...) was renamed and 10 parameters were renamed (updates), every odd device
-- kept a parameter it no longer reports and every 30th inactive device still has rows (deletes), and the
-- last parameter of every 7th device stopped 6 hours ago (in a 24 h window, not in a 1 h one).
-- No index is created here: the benchmark builds the indexes it compares. The target table comes next,
-- from the package's own ensure_schema.sql, then its drifted state from drift_target.sql.
CREATE SCHEMA IF NOT EXISTS iot_data;
DROP TABLE IF EXISTS iot_data.measurements, iot_data.redshift_devices, iot_data.timescale_parameters,
    iot_data.device_parameters;

CREATE TABLE iot_data.redshift_devices (device_id TEXT, device_name TEXT, status BOOLEAN);
CREATE TABLE iot_data.timescale_parameters (parameter_id TEXT, parameter_name TEXT);
CREATE TABLE iot_data.measurements (
    device_id TEXT,
    parameter_id TEXT,
    "time" TIMESTAMPTZ,
    value DOUBLE PRECISION
);

INSERT INTO iot_data.redshift_devices (device_id, device_name, status)
SELECT format('dev-%s', lpad(d::text, 6, '0')), format('Sensor %s', d), d % 10 <> 0
FROM generate_series(1, current_setting('device_sync_bench.devices')::int) AS d;

INSERT INTO iot_data.timescale_parameters (parameter_id, parameter_name)
SELECT format('par-%s', lpad(p::text, 4, '0')), format('parameter_%s', p)
FROM generate_series(1, current_setting('device_sync_bench.parameters')::int) AS p;

-- Parameter k of device d is number 1 + (d * 7 + k) mod parameters: 20 distinct parameters per device.
INSERT INTO iot_data.measurements (device_id, parameter_id, "time", value)
SELECT format('dev-%s', lpad(d::text, 6, '0')),
       format('par-%s', lpad((1 + (d * 7 + k) % current_setting('device_sync_bench.parameters')::int)::text, 4, '0')),
       ts,
       (d + k) % 100
FROM generate_series(1, current_setting('device_sync_bench.devices')::int) AS d
CROSS JOIN generate_series(1, current_setting('device_sync_bench.per_device')::int) AS k
CROSS JOIN generate_series(
    current_setting('device_sync_bench.window_end')::timestamptz
        - make_interval(hours => current_setting('device_sync_bench.hours')::int),
    current_setting('device_sync_bench.window_end')::timestamptz - interval '1 second',
    make_interval(mins => current_setting('device_sync_bench.step_minutes')::int)) AS ts
WHERE NOT (d % 7 = 0 AND k = current_setting('device_sync_bench.per_device')::int
           AND ts >= current_setting('device_sync_bench.window_end')::timestamptz - interval '6 hours');
