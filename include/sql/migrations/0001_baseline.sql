-- 0001 baseline: the package's own tables exactly as device-sync created them before versioned migrations
-- (device_parameter_sync/ensure_schema.sql and history_schema.sql), so a database made by that code is "at
-- 0001" once this file has run on it: every statement is IF NOT EXISTS and leaves existing objects and rows
-- alone. Never edit an applied migration; change the schema with a new, higher-numbered file.
--
-- The schema {staging_schema} itself is created by the migration runner before this file runs (the record
-- of applied migrations, {schema_version}, lives in it), and only when it is missing: CREATE SCHEMA IF NOT
-- EXISTS would demand CREATE on the database even when the schema exists.

-- The target table is exactly the one of the original service (seed DDL); the schema iot_data holds the
-- source tables, so it exists already.
CREATE TABLE IF NOT EXISTS iot_data.device_parameters (
    device_id TEXT NOT NULL,
    device_name TEXT NOT NULL,
    parameter_id TEXT NOT NULL,
    parameter_name TEXT NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
    PRIMARY KEY (device_id, parameter_id)
);

CREATE INDEX IF NOT EXISTS idx_device_parameters_device_id
ON iot_data.device_parameters(device_id);

CREATE INDEX IF NOT EXISTS idx_device_parameters_parameter_id
ON iot_data.device_parameters(parameter_id);

-- Run history and change log, next to the data in the package's own schema; both are written in the same
-- transaction as the change they describe.
CREATE TABLE IF NOT EXISTS {run_history} (
    run_id TEXT PRIMARY KEY,
    dag_id TEXT NOT NULL,
    logical_date TIMESTAMPTZ,
    window_start TIMESTAMPTZ,
    window_end TIMESTAMPTZ,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at TIMESTAMPTZ,
    status TEXT NOT NULL CHECK (status IN ('running', 'success', 'failed')),
    dry_run BOOLEAN NOT NULL DEFAULT false,
    applied BOOLEAN NOT NULL DEFAULT false,
    device_scope INTEGER,
    active_devices INTEGER,
    observed_pairs INTEGER,
    inserted INTEGER,
    deleted INTEGER,
    updated INTEGER,
    skipped INTEGER,
    skipped_by_reason JSONB,
    error TEXT,
    -- the safety guard that kept this run from applying: mass_delete, stale_measurements, older_window
    guard TEXT
);
-- The health check's newest successful applied sync.
CREATE INDEX IF NOT EXISTS run_history_last_applied_idx
    ON {run_history} (finished_at DESC) WHERE status = 'success' AND applied;
CREATE INDEX IF NOT EXISTS run_history_started_at_idx ON {run_history} (started_at DESC);

CREATE TABLE IF NOT EXISTS {change_log} (
    change_id BIGSERIAL PRIMARY KEY,
    run_id TEXT NOT NULL,
    operation TEXT NOT NULL CHECK (operation IN ('insert', 'update', 'delete')),
    device_id TEXT NOT NULL,
    parameter_id TEXT NOT NULL,
    old_device_name TEXT,
    old_parameter_name TEXT,
    new_device_name TEXT,
    new_parameter_name TEXT,
    changed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- "When and why did parameter X disappear from device Y?" is one indexed query.
CREATE INDEX IF NOT EXISTS change_log_pair_idx ON {change_log} (device_id, parameter_id, changed_at DESC);
CREATE INDEX IF NOT EXISTS change_log_changed_at_idx ON {change_log} (changed_at);
