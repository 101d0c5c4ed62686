-- Applies this run's changes (see changes.sql) and logs each one, in one statement: every part sees the
-- table as it was before the statement, and the three writes touch disjoint rows.
--   delete: rows whose pair is no longer reported;
--   update: renamed rows get the new names and updated_at = now(); created_at is kept;
--   insert: missing rows, created_at and updated_at take their defaults (now()).
-- Unchanged rows are never written. Returns the number of rows of each operation.
WITH changes AS MATERIALIZED (
    {changes}
),
deleted AS (
    DELETE FROM iot_data.device_parameters AS t
    USING changes AS c
    WHERE c.operation = 'delete' AND t.device_id = c.device_id AND t.parameter_id = c.parameter_id
    RETURNING c.*
),
updated AS (
    UPDATE iot_data.device_parameters AS t
    SET device_name = c.new_device_name,
        parameter_name = c.new_parameter_name,
        updated_at = now()
    FROM changes AS c
    WHERE c.operation = 'update' AND t.device_id = c.device_id AND t.parameter_id = c.parameter_id
    RETURNING c.*
),
inserted AS (
    INSERT INTO iot_data.device_parameters (device_id, device_name, parameter_id, parameter_name)
    SELECT c.device_id, c.new_device_name, c.parameter_id, c.new_parameter_name
    FROM changes AS c
    WHERE c.operation = 'insert'
    RETURNING device_id, parameter_id
),
applied AS (
    SELECT * FROM deleted
    UNION ALL
    SELECT * FROM updated
    UNION ALL
    SELECT c.* FROM inserted AS i
    JOIN changes AS c ON c.operation = 'insert' AND c.device_id = i.device_id AND c.parameter_id = i.parameter_id
),
logged AS (
    -- One change-log row per applied change (same transaction as the change itself).
    INSERT INTO {change_log} (run_id, operation, device_id, parameter_id,
                              old_device_name, old_parameter_name, new_device_name, new_parameter_name)
    SELECT %(run_id)s, operation, device_id, parameter_id,
           old_device_name, old_parameter_name, new_device_name, new_parameter_name
    FROM applied
    RETURNING operation
)
SELECT
    count(*) FILTER (WHERE operation = 'insert') AS inserted,
    count(*) FILTER (WHERE operation = 'update') AS updated,
    count(*) FILTER (WHERE operation = 'delete') AS deleted
FROM logged;
