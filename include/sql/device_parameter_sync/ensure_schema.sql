-- Creates what the sync needs, idempotently; safe when everything already exists.
-- The target table is exactly the one of the original service (seed DDL).
-- {staging_schema}: the package's own schema for per-run staging tables.
CREATE SCHEMA IF NOT EXISTS iot_data;
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
