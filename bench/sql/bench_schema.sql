-- The benchmark's own bookkeeping in the fleet database, created right after generate_fleet.sql:
--   bench.target_snapshot  the drifted iot_data.device_parameters every timed run starts from
--   bench.fleet            what was generated (so --reuse can tell whether the same fleet is there)
--   bench.index_builds     how long each index on iot_data.measurements took to build
DROP SCHEMA IF EXISTS bench CASCADE;
CREATE SCHEMA bench;
CREATE TABLE bench.target_snapshot AS TABLE iot_data.device_parameters;
CREATE TABLE bench.fleet (
    spec JSONB NOT NULL,
    generator TEXT NOT NULL,
    measurement_rows BIGINT NOT NULL,
    target_rows BIGINT NOT NULL,
    measurements_bytes BIGINT NOT NULL,
    generation_seconds DOUBLE PRECISION NOT NULL,
    vacuum_analyze_seconds DOUBLE PRECISION NOT NULL,
    generated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE bench.index_builds (
    index_name TEXT PRIMARY KEY,
    build_seconds DOUBLE PRECISION NOT NULL,
    vacuum_analyze_seconds DOUBLE PRECISION NOT NULL,
    index_bytes BIGINT NOT NULL,
    built_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
