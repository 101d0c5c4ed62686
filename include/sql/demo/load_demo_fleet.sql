-- A realistic demo fleet, generated inside PostgreSQL. Settings read with current_setting():
--   device_sync_demo.window_end  the end of the day of measurements (timestamptz)
--   device_sync_demo.devices     number of registered devices
--   device_sync_demo.parameters  number of known parameters
--   device_sync_demo.per_device  parameters each device reports
--   device_sync_demo.step_minutes  minutes between two measurements of one pair
-- It replaces the sources and the target; nothing else is touched.
CREATE SCHEMA IF NOT EXISTS iot_data;
DROP TABLE IF EXISTS iot_data.measurements, iot_data.redshift_devices, iot_data.timescale_parameters,
    iot_data.device_parameters;

CREATE TABLE iot_data.redshift_devices (
    device_id TEXT,
    device_name TEXT,
    status BOOLEAN
);
CREATE TABLE iot_data.timescale_parameters (
    parameter_id TEXT,
    parameter_name TEXT
);
CREATE TABLE iot_data.measurements (
    device_id TEXT,
    parameter_id TEXT,
    "time" TIMESTAMPTZ,
    value DOUBLE PRECISION
);

-- Devices: 90 % active; every 50th device is inactive and every 97th has no name yet.
INSERT INTO iot_data.redshift_devices (device_id, device_name, status)
SELECT format('dev-%s', lpad(d::text, 5, '0')),
       CASE WHEN d % 97 = 0 THEN NULL ELSE format('Sensor %s (hall %s)', d, d % 12) END,
       d % 10 <> 0
FROM generate_series(1, current_setting('device_sync_demo.devices')::int) AS d;

-- Parameters: every 23rd is missing from the catalog (its measurements are skipped as unknown).
INSERT INTO iot_data.timescale_parameters (parameter_id, parameter_name)
SELECT format('par-%s', lpad(p::text, 4, '0')),
       (ARRAY['temperature', 'humidity', 'pressure', 'voltage', 'current', 'rpm', 'vibration', 'co2'])[1 + p % 8]
           || '_' || p
FROM generate_series(1, current_setting('device_sync_demo.parameters')::int) AS p
WHERE p % 23 <> 0;

-- A day of measurements: each device reports per_device parameters every step_minutes;
-- device d stopped reporting its last parameter 30 hours ago (outside a one-day window).
INSERT INTO iot_data.measurements (device_id, parameter_id, "time", value)
SELECT format('dev-%s', lpad(d::text, 5, '0')),
       format('par-%s', lpad((1 + (d * 7 + k) % current_setting('device_sync_demo.parameters')::int)::text, 4, '0')),
       ts,
       random() * 100
FROM generate_series(1, current_setting('device_sync_demo.devices')::int) AS d
CROSS JOIN generate_series(1, current_setting('device_sync_demo.per_device')::int) AS k
CROSS JOIN generate_series(
    current_setting('device_sync_demo.window_end')::timestamptz - interval '24 hours',
    current_setting('device_sync_demo.window_end')::timestamptz - interval '1 second',
    make_interval(mins => current_setting('device_sync_demo.step_minutes')::int)) AS ts
WHERE NOT (k = current_setting('device_sync_demo.per_device')::int AND d % 7 = 0)
UNION ALL
SELECT format('dev-%s', lpad(d::text, 5, '0')),
       format('par-%s', lpad((1 + (d * 7 + current_setting('device_sync_demo.per_device')::int)
                              % current_setting('device_sync_demo.parameters')::int)::text, 4, '0')),
       current_setting('device_sync_demo.window_end')::timestamptz - interval '30 hours',
       0
FROM generate_series(7, current_setting('device_sync_demo.devices')::int, 7) AS d;

CREATE INDEX ON iot_data.measurements ("time");

-- Yesterday's state of the target, with drift: what it knew before the last day.
CREATE TABLE iot_data.device_parameters (
    device_id TEXT NOT NULL,
    device_name TEXT NOT NULL,
    parameter_id TEXT NOT NULL,
    parameter_name TEXT NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
    PRIMARY KEY (device_id, parameter_id)
);
CREATE INDEX idx_device_parameters_device_id ON iot_data.device_parameters(device_id);
CREATE INDEX idx_device_parameters_parameter_id ON iot_data.device_parameters(parameter_id);

-- Every pair measured at any time, as named a day ago, minus the pairs of every 11th device
-- (new devices: to insert); devices whose number ends in 3 had another name (renamed: to update).
INSERT INTO iot_data.device_parameters (device_id, device_name, parameter_id, parameter_name, created_at, updated_at)
SELECT m.device_id,
       CASE WHEN right(m.device_id, 1) = '3' THEN 'old name of ' || m.device_id ELSE coalesce(d.device_name, m.device_id) END,
       m.parameter_id,
       coalesce(p.parameter_name, 'retired parameter'),
       current_setting('device_sync_demo.window_end')::timestamptz - interval '30 days',
       current_setting('device_sync_demo.window_end')::timestamptz - interval '30 days'
FROM (SELECT DISTINCT device_id, parameter_id FROM iot_data.measurements) AS m
LEFT JOIN iot_data.redshift_devices AS d USING (device_id)
LEFT JOIN iot_data.timescale_parameters AS p USING (parameter_id)
WHERE substring(m.device_id FROM 5)::int % 11 <> 0;

ANALYZE iot_data.redshift_devices, iot_data.timescale_parameters, iot_data.measurements,
    iot_data.device_parameters;
