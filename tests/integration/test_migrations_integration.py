"""Versioned migrations of the package's own tables (device_sync.migrations, scripts/migrate.py), on real
PostgreSQL: a fresh install, an upgrade of a database created by the code before migrations existed (its rows
kept), the DAG's read-only check (also as a least-privileged login), concurrent runs of the migrator.

Roles are cluster-wide: the login made here has a unique name and is dropped at the end.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from conftest import ADMIN_URL, REPO, Worker
from device_sync import db, migrations
from device_sync.config import Settings, load_settings
from device_sync.migrations import SchemaBehind, SchemaError

MIGRATE = REPO / "scripts" / "migrate.py"
NEW_INDEX = "run_history_last_finished_idx"

# The schema exactly as device-sync created it before versioned migrations (ensure_schema.sql and
# history_schema.sql of that time, for the default staging schema), frozen here: the databases deployed with
# that code look like this whatever the package's files say later.
TODAYS_SCHEMA = """
CREATE SCHEMA IF NOT EXISTS device_sync;
CREATE TABLE IF NOT EXISTS iot_data.device_parameters (
    device_id TEXT NOT NULL,
    device_name TEXT NOT NULL,
    parameter_id TEXT NOT NULL,
    parameter_name TEXT NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
    PRIMARY KEY (device_id, parameter_id)
);
CREATE INDEX IF NOT EXISTS idx_device_parameters_device_id ON iot_data.device_parameters(device_id);
CREATE INDEX IF NOT EXISTS idx_device_parameters_parameter_id ON iot_data.device_parameters(parameter_id);
CREATE TABLE IF NOT EXISTS device_sync.run_history (
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
    guard TEXT
);
CREATE INDEX IF NOT EXISTS run_history_last_applied_idx
    ON device_sync.run_history (finished_at DESC) WHERE status = 'success' AND applied;
CREATE INDEX IF NOT EXISTS run_history_started_at_idx ON device_sync.run_history (started_at DESC);
CREATE TABLE IF NOT EXISTS device_sync.change_log (
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
CREATE INDEX IF NOT EXISTS change_log_pair_idx ON device_sync.change_log (device_id, parameter_id, changed_at DESC);
CREATE INDEX IF NOT EXISTS change_log_changed_at_idx ON device_sync.change_log (changed_at);
"""

ROWS = {
    "iot_data.device_parameters": "SELECT device_id, device_name, parameter_id, parameter_name FROM {}",
    "device_sync.run_history": "SELECT run_id, status, applied, inserted, finished_at IS NOT NULL FROM {}",
    "device_sync.change_log": "SELECT change_id, run_id, operation, device_id, parameter_id FROM {}",
}


def create_todays_schema(conn: psycopg.Connection[Any]) -> None:
    """A database as the code before migrations left it: its tables, a target row, finished and running runs."""
    with conn.transaction():
        conn.execute(TODAYS_SCHEMA)
        conn.execute(
            "INSERT INTO iot_data.device_parameters (device_id, device_name, parameter_id, parameter_name) "
            "VALUES ('d1', 'Device 1', 'p1', 'Temperature')"
        )
        conn.execute(
            "INSERT INTO device_sync.run_history (run_id, dag_id, started_at, finished_at, status, applied, inserted) "
            "VALUES ('old', 'device_parameter_sync', now() - interval '2 hours', now() - interval '1 hour', "
            "'success', true, 1), ('now', 'device_parameter_sync', now(), NULL, 'running', false, NULL)"
        )
        conn.execute(
            "INSERT INTO device_sync.change_log (run_id, operation, device_id, parameter_id, new_device_name, "
            "new_parameter_name) VALUES ('old', 'insert', 'd1', 'p1', 'Device 1', 'Temperature')"
        )


def rows(conn: psycopg.Connection[Any]) -> dict[str, list[tuple[Any, ...]]]:
    with conn.transaction():
        return {table: sorted(conn.execute(query.format(table)).fetchall(), key=repr) for table, query in ROWS.items()}


def catalog(conn: psycopg.Connection[Any], schemas: tuple[str, ...] = ("iot_data", "device_sync")) -> set[str]:
    """Columns, constraints and indexes of every table in ``schemas`` (the source tables included), as text."""
    query = """
        SELECT format('column %%s.%%s %%s %%s default %%s', c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
                      CASE WHEN a.attnotnull THEN 'not null' ELSE 'null' END, pg_get_expr(d.adbin, d.adrelid))
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
        WHERE n.nspname = ANY(%(schemas)s) AND c.relkind = 'r'
        UNION ALL
        SELECT format('constraint %%s.%%s %%s', c.relname, k.conname, pg_get_constraintdef(k.oid))
        FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY(%(schemas)s)
        UNION ALL
        SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname = ANY(%(schemas)s)
    """
    with conn.transaction():
        return {row[0] for row in conn.execute(query, {"schemas": list(schemas)})}


def index_exists(conn: psycopg.Connection[Any], name: str, schema: str = "device_sync") -> bool:
    with conn.transaction():
        found = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{schema}.{name}",)).fetchone()
    return bool(found and found[0])


def recorded(conn: psycopg.Connection[Any], schema: str = "device_sync") -> list[tuple[int, str]]:
    with conn.transaction():
        query = sql.SQL("SELECT version, name FROM {} ORDER BY version").format(
            sql.Identifier(schema, "schema_version")
        )
        return [(int(version), name) for version, name in conn.execute(query)]


def everything() -> list[tuple[int, str]]:
    return [(migration.version, migration.name) for migration in migrations.available()]


def run_migrate(*args: str) -> subprocess.CompletedProcess[str]:
    """scripts/migrate.py as the admin would run it (the DAG's environment: the Airflow connection of conftest)."""
    return subprocess.run(
        [sys.executable, str(MIGRATE), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ.copy(),
        cwd=REPO,
    )


def test_migration_files_are_a_gapless_sequence_that_composes() -> None:
    found = migrations.available()
    assert [migration.version for migration in found] == list(range(1, len(found) + 1))
    assert found[0].label == "0001_baseline"
    assert migrations.newest() >= 2
    ids = migrations.identifiers(Settings(staging_schema="ds_custom"))
    with psycopg.connect(ADMIN_URL) as conn:
        for migration in found:
            # sql.SQL.format raises KeyError on a placeholder that identifiers() does not know
            text = db.compose(f"{migrations.SQL}{migration.file}", ids).as_string(conn)
            assert "device_sync." not in text, migration.label  # the staging schema is never written literally


def test_misnumbered_migration_files_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(migrations, "migrations_dir", lambda: tmp_path)
    migrations.available.cache_clear()
    try:
        (tmp_path / "state.sql").write_text("SELECT 1")
        (tmp_path / "0001_baseline.sql").write_text("SELECT 1")
        (tmp_path / "0003_gap.sql").write_text("SELECT 1")
        with pytest.raises(migrations.MigrationFileError, match="without gaps"):
            migrations.available()
        migrations.available.cache_clear()
        (tmp_path / "0003_gap.sql").unlink()
        (tmp_path / "0002-Typo.sql").write_text("SELECT 1")
        with pytest.raises(migrations.MigrationFileError, match=r"NNNN_<name>\.sql"):
            migrations.available()
        migrations.available.cache_clear()
        (tmp_path / "0002-Typo.sql").unlink()
        assert [migration.label for migration in migrations.available()] == ["0001_baseline"]
    finally:
        migrations.available.cache_clear()


def test_fresh_database_is_created_at_the_newest_version(conn: psycopg.Connection[Any]) -> None:
    settings = load_settings()
    state = migrations.schema_state(conn, settings)
    assert (state.status, state.version, state.legacy) == ("empty", 0, False)

    assert migrations.ensure_current(conn, settings) == [version for version, _ in everything()]

    assert recorded(conn) == everything()
    state = migrations.require_current(conn, settings)
    assert (state.status, state.version, state.absent) == ("current", migrations.newest(), ())
    assert index_exists(conn, NEW_INDEX)
    assert rows(conn) == {table: [] for table in ROWS}
    assert migrations.ensure_current(conn, settings) == []
    assert migrations.migrate(conn, settings) == []
    assert recorded(conn) == everything()


def test_database_of_todays_code_is_behind_until_the_script_migrates_it(conn: psycopg.Connection[Any]) -> None:
    settings = load_settings()
    create_todays_schema(conn)
    before = rows(conn)
    assert not index_exists(conn, NEW_INDEX)

    # The DAG's first task: a read-only check that names the command and the versions, and changes nothing.
    for check in (migrations.require_current, migrations.ensure_current):
        with pytest.raises(SchemaBehind) as behind:
            check(conn, settings)
        message = str(behind.value)
        assert "`device-sync-migrate`" in message, message
        assert 'trigger the DAG device_sync_maintenance with conf {"conn_id"' in message, message
        assert "schema version 1 (created before versioned migrations" in message, message
        assert f"this package needs {migrations.newest()}" in message, message
        assert "0002_run_history_last_finished_idx" in message, message
    assert not index_exists(conn, NEW_INDEX)
    assert migrations.schema_state(conn, settings).legacy

    checked = run_migrate("--check", "--database-url", conn.info.dsn)
    assert checked.returncode == 1, checked.stderr
    assert "schema version 1" in checked.stdout

    # `make migrate` with the DAG's environment: the Airflow connection device_sync_postgres.
    first = run_migrate()
    assert first.returncode == 0, first.stderr
    for migration in migrations.available():
        assert f"applied {migration.label}" in first.stdout, first.stdout
    assert f"now at version {migrations.newest()}" in first.stdout

    assert rows(conn) == before
    assert index_exists(conn, NEW_INDEX)
    assert recorded(conn) == everything()

    again = run_migrate("--database-url", conn.info.dsn)
    assert again.returncode == 0, again.stderr
    assert "applied" not in again.stdout
    assert f"already current at {migrations.newest()}" in again.stdout
    assert run_migrate("--check", "--database-url", conn.info.dsn).returncode == 0

    assert migrations.ensure_current(conn, settings) == []
    assert migrations.require_current(conn, settings).status == "current"
    assert rows(conn) == before


def test_baseline_is_todays_schema_and_the_upgrade_only_adds(conn: psycopg.Connection[Any]) -> None:
    settings = load_settings()
    create_todays_schema(conn)
    todays = catalog(conn)
    migrations.migrate(conn, settings)
    upgraded = catalog(conn)

    added = upgraded - todays
    assert todays <= upgraded  # nothing of the old schema changed or went away
    assert {line for line in added if "schema_version" not in line} == {
        f"index CREATE INDEX {NEW_INDEX} ON device_sync.run_history USING btree (finished_at DESC) "
        "WHERE (finished_at IS NOT NULL)",
        "column run_history.apply_attempt integer null default ",
        "column run_history.apply_host text null default ",
    }

    with conn.transaction():
        conn.execute("DROP SCHEMA device_sync CASCADE; DROP TABLE iot_data.device_parameters")
    migrations.migrate(conn, settings)
    assert catalog(conn) == upgraded  # a fresh install and an upgrade end with the same schema


def test_a_migration_that_is_not_recorded_is_behind_and_applied_alone(conn: psycopg.Connection[Any]) -> None:
    settings = load_settings()
    migrations.migrate(conn, settings)
    with conn.transaction():
        conn.execute(f"DROP INDEX device_sync.{NEW_INDEX}; DELETE FROM device_sync.schema_version WHERE version = 2")

    with pytest.raises(SchemaBehind, match=r"schema version \d+, this package needs \d+ \(to apply: 0002_"):
        migrations.require_current(conn, settings)
    assert migrations.migrate(conn, settings) == [2]
    assert index_exists(conn, NEW_INDEX)
    assert migrations.require_current(conn, settings).status == "current"


def test_a_newer_database_runs_with_a_warning(conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings()
    migrations.migrate(conn, settings)
    with conn.transaction():
        conn.execute("INSERT INTO device_sync.schema_version (version, name) VALUES (999, 'from_a_newer_package')")
    with caplog.at_level(logging.WARNING, logger="device_sync.migrations"):
        state = migrations.require_current(conn, settings)
    assert (state.status, state.version) == ("ahead", 999)
    assert "newer than this package" in caplog.text
    assert migrations.ensure_current(conn, settings) == []
    assert migrations.migrate(conn, settings) == []

    # The command an admin runs says so, and fails: a newer database is not "already current".
    result = run_migrate("--database-url", conn.info.dsn)
    assert result.returncode == 2, result.stdout
    assert f"schema version 999, newer than this package's {migrations.newest()}" in result.stderr
    assert "already current" not in result.stdout


def test_a_missing_table_of_a_migrated_schema_is_named(conn: psycopg.Connection[Any]) -> None:
    settings = load_settings()
    migrations.migrate(conn, settings)
    with conn.transaction():
        conn.execute("DROP TABLE iot_data.device_parameters")
    with pytest.raises(SchemaError, match=r"iot_data\.device_parameters of database .* do not exist") as error:
        migrations.ensure_current(conn, settings)
    assert not isinstance(error.value, SchemaBehind)
    assert "device-sync-migrate" in str(error.value)

    # What the message says: drop the record, migrate again; every migration is idempotent.
    with conn.transaction():
        conn.execute("DROP TABLE device_sync.schema_version")
    assert migrations.migrate(conn, settings) == [version for version, _ in everything()]
    assert migrations.require_current(conn, settings).absent == ()


def test_custom_staging_schema(conn: psycopg.Connection[Any]) -> None:
    settings = Settings(staging_schema="ds_migrations")
    try:
        assert migrations.ensure_current(conn, settings) == [version for version, _ in everything()]
        assert recorded(conn, "ds_migrations") == everything()
        assert index_exists(conn, NEW_INDEX, "ds_migrations")
        with conn.transaction():
            found = conn.execute("SELECT to_regnamespace('device_sync') IS NULL").fetchone()
        assert found == (True,)
        assert migrations.require_current(conn, settings).status == "current"
        # The default schema has nothing yet but the (shared) target table: a fresh install of its own.
        assert migrations.schema_state(conn, load_settings()).status == "empty"
    finally:
        with conn.transaction():
            conn.execute("DROP SCHEMA IF EXISTS ds_migrations CASCADE")


def migrate_with_own_connection(database_url: str) -> list[int]:
    with psycopg.connect(database_url) as own:
        return migrations.migrate(own, load_settings())


def test_concurrent_migrations_serialize_and_apply_each_once(conn: psycopg.Connection[Any], database_url: str) -> None:
    lock = db.load_sql(migrations.LOCK)
    with psycopg.connect(database_url) as holder:
        holder.execute(lock)  # a running apply (or migrate) holds the writers' lock
        workers = [Worker(lambda: migrate_with_own_connection(database_url)) for _ in range(2)]
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + 30
        while True:
            with psycopg.connect(database_url, autocommit=True) as observer:
                waiting = observer.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                ).fetchone()
            if waiting == (2,):
                break
            assert time.monotonic() < deadline, "both migrators should wait for the writers' lock"
            time.sleep(0.05)
        assert not index_exists(conn, NEW_INDEX)  # nothing happened while the lock was held
        holder.rollback()
    for worker in workers:
        worker.join(timeout=60)
        assert not worker.is_alive()
        assert worker.error is None, repr(worker.error)
    applied = sorted(workers[0].result + workers[1].result)
    assert applied == [version for version, _ in everything()]  # each migration exactly once
    assert recorded(conn) == everything()


@pytest.fixture
def reader(database_url: str) -> Iterator[str]:
    """A login with what the grants script gives the role device_sync here: CONNECT, USAGE on the staging
    schema and SELECT on schema_version (nothing to create, alter or write)."""
    name = f"device_sync_test_reader_{uuid.uuid4().hex[:10]}"
    role = sql.Identifier(name)
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(role))
    try:
        yield name
    finally:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP OWNED BY {}").format(role))
            admin.execute(sql.SQL("DROP ROLE {}").format(role))


def test_the_check_runs_as_a_least_privileged_login(
    conn: psycopg.Connection[Any], database_url: str, reader: str
) -> None:
    settings = load_settings()
    url = psycopg.conninfo.make_conninfo(database_url, user=reader)
    with psycopg.connect(url) as login, pytest.raises(SchemaBehind, match="may not create them") as fresh:
        migrations.ensure_current(login, settings)  # a fresh database, but this role may not create the tables
    assert "device-sync-migrate" in str(fresh.value)
    assert migrations.schema_state(conn, settings).status == "empty"

    migrations.migrate(conn, settings)
    role = sql.Identifier(reader)
    with conn.transaction():
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA device_sync TO {}").format(role))
        conn.execute(sql.SQL("GRANT SELECT ON device_sync.schema_version TO {}").format(role))

    with psycopg.connect(url) as login:
        assert migrations.ensure_current(login, settings) == []
        assert migrations.require_current(login, settings).status == "current"

    with conn.transaction():
        conn.execute("DELETE FROM device_sync.schema_version WHERE version = 2")
    with psycopg.connect(url) as login:
        with pytest.raises(SchemaBehind, match="device-sync-migrate"):
            migrations.ensure_current(login, settings)  # never tries to migrate itself
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            migrations.migrate(login, settings)
    refused = run_migrate("--database-url", url)
    assert refused.returncode == 2
    assert "run it as the admin" in refused.stderr, refused.stderr

    with conn.transaction():
        conn.execute(sql.SQL("REVOKE SELECT ON device_sync.schema_version FROM {}").format(role))
    with psycopg.connect(url) as login, pytest.raises(SchemaError, match=r"device_sync_role\.sql"):
        migrations.require_current(login, settings)


# --- the maintenance DAG: the migrations from inside Airflow (no shell, e.g. Amazon MWAA) ---------------------


def maintenance_run(conf: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    from airflow.dag_processing.dagbag import DagBag

    from device_sync import maintenance

    dag = DagBag(dag_folder=str(REPO / "dags" / "device_sync_maintenance.py")).dags[maintenance.DAG_ID]
    run = dag.test(run_conf=conf)
    (ti,) = run.get_task_instances()
    return str(ti.state), ti.xcom_pull(task_ids=maintenance.TASK_ID) or {}


def test_the_maintenance_dag_migrates_as_the_connection_it_is_given(
    airflow_db: None, conn: psycopg.Connection[Any]
) -> None:
    settings = load_settings()
    state, _ = maintenance_run({"check_only": True, "conn_id": "device_sync_postgres"})
    assert state == "success"
    assert migrations.schema_state(conn, settings).status == "empty"  # check_only changed nothing

    state, summary = maintenance_run({"conn_id": "device_sync_postgres"})

    assert state == "success"
    assert summary["applied"] == [migration.version for migration in migrations.available()]
    assert (summary["status"], summary["version"]) == ("current", migrations.newest())
    assert migrations.schema_state(conn, settings).status == "current"


def test_the_maintenance_dag_does_nothing_without_a_connection(airflow_db: None, conn: psycopg.Connection[Any]) -> None:
    settings = load_settings()
    assert maintenance_run({})[0] == "failed"
    assert maintenance_run({"conn_id": "no_such_connection"})[0] == "failed"
    assert migrations.schema_state(conn, settings).status == "empty"
