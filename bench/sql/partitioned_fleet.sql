-- The partitioned benchmark's fleet, generated inside PostgreSQL into {measurements} (already created:
-- native daily or hourly partitions, or a hypertable): every device reports every parameter once a minute
-- from %(data_start)s to %(data_end)s, rows arriving in time order as in production. The sources of the sync
-- (iot_data.redshift_devices, all active; iot_data.timescale_parameters) are created once per database by the
-- caller. The ids are nullable, as in the seed's DDL (TimescaleDB's SkipScan needs them NOT NULL: the
-- benchmark alters them for that measurement only).
INSERT INTO {measurements} (device_id, parameter_id, "time", value)
SELECT format('dev-%%s', lpad(d::text, 5, '0')),
       format('par-%%s', lpad(p::text, 4, '0')),
       t,
       (d * 31 + p * 7) %% 100
FROM generate_series(%(data_start)s::timestamptz, %(data_end)s::timestamptz - interval '1 minute',
                     interval '1 minute') AS t
CROSS JOIN generate_series(1, %(devices)s::int) AS d
CROSS JOIN generate_series(1, %(parameters)s::int) AS p;
