-- The benchmark fleet's target (created by the package's ensure_schema.sql), as it was yesterday; the
-- drift is described in generate_fleet.sql. Reads the same device_sync_bench.* settings.
-- The reported pairs as named then, with the drift described above.
INSERT INTO iot_data.device_parameters (device_id, device_name, parameter_id, parameter_name)
SELECT format('dev-%s', lpad(d::text, 6, '0')),
       CASE WHEN d % 50 = 7 THEN format('Old sensor %s', d) ELSE format('Sensor %s', d) END,
       format('par-%s', lpad(p::text, 4, '0')),
       CASE WHEN p % 20 = 3 THEN format('old_parameter_%s', p) ELSE format('parameter_%s', p) END
FROM generate_series(1, current_setting('device_sync_bench.devices')::int) AS d
CROSS JOIN generate_series(1, current_setting('device_sync_bench.per_device')::int + 1) AS k
CROSS JOIN LATERAL (SELECT 1 + (d * 7 + k) % current_setting('device_sync_bench.parameters')::int AS p) AS par
WHERE d % 20 <> 5
  AND (d % 10 <> 0 OR d % 30 = 0)
  AND (k <= current_setting('device_sync_bench.per_device')::int OR d % 2 = 1);

ANALYZE iot_data.redshift_devices, iot_data.timescale_parameters, iot_data.device_parameters;
