-- Creates what the sync needs, idempotently. Run only when something is missing (see target_ready.sql),
-- since IF NOT EXISTS still demands CREATE privileges that a least-privileged role need not have.
-- The target table is exactly the one of the original service (seed DDL); the schema iot_data holds
-- the source tables, so it exists already.
-- {staging_schema}: the package's own schema for per-run staging tables.
CREATE SCHEMA IF NOT EXISTS {staging_schema};

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
