-- Least privilege for the device-sync DAG: the group role device_sync and exactly what it may do.
--
-- Who runs what (in the IoT database):
--   1. An admin (the owner of iot_data's tables, or a superuser) creates the package's objects, and brings
--      them to each new version's schema, so that the DAG never needs CREATE on the database: the target
--      table iot_data.device_parameters and the schema device_sync with run_history, change_log and
--      schema_version. These are the package's migrations (include/sql/migrations/), each applied once:
--        make migrate MIGRATE_ARGS='--database-url postgresql://admin@db.example:5432/iot'
--      (or python -m device_sync.migrations --database-url ... where only the wheel is installed; with the
--      same DEVICE_SYNC_* environment as the DAG, for a non-default DEVICE_SYNC_STAGING_SCHEMA).
--   2. The same admin runs this file; it is idempotent, re-run it after every upgrade of the package:
--        psql "postgresql://admin@db.example:5432/iot" -v ON_ERROR_STOP=1 -f include/sql/grants/device_sync_role.sql
--      Non-default settings are passed as custom settings (same values as DEVICE_SYNC_MEASUREMENTS_TABLE
--      and DEVICE_SYNC_STAGING_SCHEMA):
--        PGOPTIONS='-c device_sync.measurements_table=telemetry.readings -c device_sync.staging_schema=ds' psql ...
--   3. The deployer creates a login for the Airflow connection and makes it a member of device_sync
--      (this file never creates logins or passwords):
--        CREATE ROLE device_sync_airflow LOGIN PASSWORD '...' IN ROLE device_sync;
--        ALTER ROLE device_sync_airflow SET role = 'device_sync';
--      The second line makes every session of the login act as device_sync, so the staging tables are
--      owned by device_sync and any member login (after a password rotation, a second Airflow) can drop
--      or rebuild what another one left. Without it the DAG still works, but a staging table left behind
--      by one login can only be dropped by that login.
--
-- What device_sync may do (the script first revokes whatever device_sync held on these objects, then
-- grants exactly this, so a re-run also removes privileges granted by hand):
--   database                 CONNECT
--   schema iot_data          USAGE (no CREATE), and nothing on any table of iot_data but:
--     redshift_devices, timescale_parameters, the measurements table      SELECT
--     device_parameters                                                   SELECT, INSERT, UPDATE, DELETE
--   the measurements table's schema, when not iot_data                    USAGE, nothing on its other tables
--   schema device_sync       USAGE, CREATE: each run creates (and owns) its UNLOGGED staging tables there,
--                            drops them at the end; it owns nothing else, so it cannot drop the history.
--     run_history            SELECT, INSERT, UPDATE (a run's row is written, then completed), DELETE
--     change_log             SELECT, INSERT, DELETE (no UPDATE: the log is append-only)
--     change_log's sequence  USAGE (nextval of the bigserial)
--     schema_version         SELECT (the first task checks the schema's version; only the admin migrates)
--   DELETE on the history is there only for the retention pruning of every applied run, which deletes
--   rows older than DEVICE_SYNC_HISTORY_RETENTION_DAYS (at least 1). A trigger owned by the admin refuses
--   (insufficient_privilege) any delete of a history row younger than one day by anyone but the tables'
--   owner, so the role cannot erase the trace of what it just did; TRUNCATE is not granted.
-- The schemas, the source tables, the target table and the history tables belong to the admin: the role
-- cannot ALTER, DROP or TRUNCATE any of them, and the script refuses to run if device_sync owns one.
-- No default privileges are needed: the only tables created later are the staging tables, created and
-- owned by device_sync itself. Partitions and hypertable chunks of the measurements table are read one by one
-- (each through its own index): the script grants SELECT on each existing one (see below for later ones). The script warns if default privileges exist that would
-- give device_sync more. Privileges every role gets through PUBLIC (by default CONNECT and TEMPORARY on
-- the database) are a database-wide policy and are left alone.

BEGIN;

DO $role$
DECLARE
    r pg_roles;
    parents text;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'device_sync') THEN
        BEGIN
            CREATE ROLE device_sync NOLOGIN;
        EXCEPTION WHEN duplicate_object THEN
            NULL;  -- created concurrently by another run of this script
        END;
    END IF;
    SELECT * INTO r FROM pg_roles WHERE rolname = 'device_sync';
    IF r.rolcanlogin OR r.rolsuper OR r.rolcreatedb OR r.rolcreaterole OR r.rolreplication OR r.rolbypassrls THEN
        RAISE EXCEPTION 'role device_sync must be a plain NOLOGIN group role'
            USING HINT = 'ALTER ROLE device_sync NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION '
                         'NOBYPASSRLS; logins are separate roles granted device_sync';
    END IF;
    SELECT string_agg(g.rolname, ', ') INTO parents
    FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
    WHERE m.member = r.oid;
    IF parents IS NOT NULL THEN
        RAISE EXCEPTION 'role device_sync is a member of %, which gives it more than it needs', parents
            USING HINT = 'REVOKE those roles FROM device_sync';
    END IF;
END
$role$;

DO $grants$
DECLARE
    staging text := coalesce(nullif(current_setting('device_sync.staging_schema', true), ''), 'device_sync');
    measurements text := coalesce(
        nullif(current_setting('device_sync.measurements_table', true), ''), 'iot_data.measurements');
    measurements_schema text := split_part(measurements, '.', 1);
    measurements_table text := split_part(measurements, '.', 2);
    identifier constant text := '^[A-Za-z_][A-Za-z0-9_]{0,62}$';
    sources text[];
    history text[];
    version_table text;
    change_seq regclass;
    object text;
    owner_name text;
BEGIN
    -- The same rules as the package's settings (plain identifiers, schema-qualified table).
    IF staging !~ identifier THEN
        RAISE EXCEPTION 'device_sync.staging_schema %L is not a plain SQL identifier', staging;
    END IF;
    IF measurements !~ '^[^.]+\.[^.]+$' OR measurements_schema !~ identifier OR measurements_table !~ identifier THEN
        RAISE EXCEPTION 'device_sync.measurements_table %L must be schema.table, plain identifiers', measurements;
    END IF;
    sources := ARRAY['iot_data.redshift_devices', 'iot_data.timescale_parameters',
                     format('%I.%I', measurements_schema, measurements_table)];
    history := ARRAY[format('%I.run_history', staging), format('%I.change_log', staging)];
    version_table := format('%I.schema_version', staging);

    -- Everything must exist already, owned by someone device_sync does not act as.
    IF to_regnamespace(quote_ident(staging)) IS NULL
       OR to_regclass('iot_data.device_parameters') IS NULL
       OR to_regclass(history[1]) IS NULL OR to_regclass(history[2]) IS NULL
       OR to_regclass(version_table) IS NULL THEN
        RAISE EXCEPTION 'iot_data.device_parameters, schema % and its run_history, change_log and schema_version must exist', staging
            USING HINT = 'as the admin, run make migrate (scripts/migrate.py) once (see the header of this file)';
    END IF;
    FOREACH object IN ARRAY sources LOOP
        IF to_regclass(object) IS NULL THEN
            RAISE EXCEPTION 'source table % does not exist', object
                USING HINT = 'set device_sync.measurements_table like DEVICE_SYNC_MEASUREMENTS_TABLE';
        END IF;
    END LOOP;
    change_seq := pg_get_serial_sequence(history[2], 'change_id')::regclass;
    IF change_seq IS NULL THEN
        RAISE EXCEPTION '%.change_id has no sequence: the history tables are not the package''s', history[2];
    END IF;
    FOR object, owner_name IN
        SELECT 'database ' || quote_ident(datname), pg_get_userbyid(datdba)
            FROM pg_database WHERE datname = current_database()
        UNION ALL
        SELECT 'schema ' || quote_ident(nspname), pg_get_userbyid(nspowner)
            FROM pg_namespace WHERE nspname IN ('iot_data', staging, measurements_schema)
        UNION ALL
        SELECT 'table ' || oid::regclass::text, pg_get_userbyid(relowner)
            FROM pg_class
            WHERE oid = ANY (ARRAY(SELECT to_regclass(name) FROM unnest(
                sources || history || ARRAY['iot_data.device_parameters', change_seq::text, version_table]) AS name))
    LOOP
        IF pg_has_role('device_sync', owner_name, 'USAGE') THEN
            RAISE EXCEPTION '% is owned by %, whose privileges device_sync has', object, owner_name
                USING HINT = format('ALTER %s OWNER TO <admin>: the owner may drop and alter it', object);
        END IF;
    END LOOP;

    -- Start from nothing on every object this file is about, then grant exactly what the DAG needs.
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM device_sync', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO device_sync', current_database());

    REVOKE ALL ON SCHEMA iot_data FROM device_sync;
    REVOKE ALL ON ALL TABLES IN SCHEMA iot_data FROM device_sync;
    REVOKE ALL ON ALL SEQUENCES IN SCHEMA iot_data FROM device_sync;
    GRANT USAGE ON SCHEMA iot_data TO device_sync;
    IF measurements_schema <> 'iot_data' THEN
        EXECUTE format('REVOKE ALL ON SCHEMA %I FROM device_sync', measurements_schema);
        EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA %I FROM device_sync', measurements_schema);
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO device_sync', measurements_schema);
    END IF;
    FOREACH object IN ARRAY sources LOOP
        EXECUTE format('GRANT SELECT ON TABLE %s TO device_sync', object);
    END LOOP;
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE iot_data.device_parameters TO device_sync;
    -- The partitions (or hypertable chunks) of the measurements table, read one by one to find the pairs
    -- by their own indexes: SELECT on each existing one (and USAGE on its schema). Partitions created later
    -- need the same (re-run this file, or let pg_partman's inherit_privileges do it; TimescaleDB copies the
    -- hypertable's privileges to new chunks); until then the DAG reads them through the parent, slower.
    FOR object IN
        WITH RECURSIVE descendants AS (
            SELECT inhrelid AS relid FROM pg_inherits WHERE inhparent = to_regclass(sources[3])
            UNION
            SELECT i.inhrelid FROM pg_inherits AS i JOIN descendants AS d ON i.inhparent = d.relid
        )
        SELECT format('GRANT SELECT ON TABLE %s TO device_sync', d.relid::regclass) FROM descendants AS d
        UNION ALL
        SELECT DISTINCT format('GRANT USAGE ON SCHEMA %I TO device_sync', n.nspname)
        FROM descendants AS d
        JOIN pg_class AS c ON c.oid = d.relid
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname NOT IN ('iot_data', measurements_schema)
    LOOP
        EXECUTE object;
    END LOOP;

    EXECUTE format('REVOKE ALL ON SCHEMA %I FROM device_sync', staging);
    EXECUTE format('GRANT USAGE, CREATE ON SCHEMA %I TO device_sync', staging);
    EXECUTE format('REVOKE ALL ON TABLE %s, %s FROM device_sync', history[1], history[2]);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE %s TO device_sync', history[1]);
    EXECUTE format('GRANT SELECT, INSERT, DELETE ON TABLE %s TO device_sync', history[2]);
    EXECUTE format('REVOKE ALL ON TABLE %s FROM device_sync', version_table);
    EXECUTE format('GRANT SELECT ON TABLE %s TO device_sync', version_table);
    EXECUTE format('REVOKE ALL ON SEQUENCE %s FROM device_sync', change_seq);
    EXECUTE format('GRANT USAGE ON SEQUENCE %s TO device_sync', change_seq);

    -- The history guard: only the retention pruning (rows older than the shortest retention the settings
    -- accept, one day) may delete history rows, unless the tables' owner deletes them. Owned by the admin;
    -- device_sync can neither replace the function nor disable the triggers.
    EXECUTE format($fn$
        CREATE OR REPLACE FUNCTION %I.refuse_recent_history_delete() RETURNS trigger
        LANGUAGE plpgsql SET search_path = pg_catalog AS $body$
        BEGIN
            IF pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'USAGE') THEN
                RETURN OLD;
            END IF;
            RAISE EXCEPTION 'permission denied to delete from %%.%%: rows younger than one day are kept',
                TG_TABLE_SCHEMA, TG_TABLE_NAME
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'only the retention pruning of device-sync deletes history, or the table owner';
        END
        $body$
    $fn$, staging);
    EXECUTE format('REVOKE ALL ON FUNCTION %I.refuse_recent_history_delete() FROM PUBLIC', staging);
    EXECUTE format($t$
        CREATE OR REPLACE TRIGGER keep_recent_history BEFORE DELETE ON %s
        FOR EACH ROW WHEN (OLD.started_at >= now() - interval '1 day')
        EXECUTE FUNCTION %I.refuse_recent_history_delete()
    $t$, history[1], staging);
    EXECUTE format($t$
        CREATE OR REPLACE TRIGGER keep_recent_history BEFORE DELETE ON %s
        FOR EACH ROW WHEN (OLD.changed_at >= now() - interval '1 day')
        EXECUTE FUNCTION %I.refuse_recent_history_delete()
    $t$, history[2], staging);

    IF EXISTS (SELECT FROM pg_default_acl, aclexplode(defaclacl) AS acl
               WHERE acl.grantee = 'device_sync'::regrole) THEN
        RAISE WARNING 'default privileges (pg_default_acl, \ddp in psql) grant device_sync more on future objects';
    END IF;
END
$grants$;

COMMIT;
