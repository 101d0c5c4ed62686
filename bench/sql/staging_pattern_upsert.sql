-- Staging pattern, step 2: one set-based upsert; a conflicting row is only rewritten when a name differs.
-- RETURNING tells inserted rows (xmax = 0) from updated ones.
INSERT INTO iot_data.device_parameters AS t (device_id, device_name, parameter_id, parameter_name)
SELECT device_id, device_name, parameter_id, parameter_name FROM bench_staging
ON CONFLICT (device_id, parameter_id) DO UPDATE
SET device_name = excluded.device_name, parameter_name = excluded.parameter_name, updated_at = now()
WHERE (t.device_name, t.parameter_name) IS DISTINCT FROM (excluded.device_name, excluded.parameter_name)
RETURNING (t.xmax = 0) AS inserted;
