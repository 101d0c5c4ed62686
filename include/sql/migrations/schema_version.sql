-- The record of the package's applied migrations (include/sql/migrations/NNNN_<name>.sql), one row each,
-- written by the migration runner in the same transaction as the migration. Created by the runner when missing.
CREATE TABLE IF NOT EXISTS {schema_version} (
    version INTEGER PRIMARY KEY CHECK (version > 0),
    name TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
