"""The DAG runs as a least-privileged login (a member of the role device_sync of
``include/sql/grants/device_sync_role.sql``), and that login cannot modify the sources, the package's schemas
or the history. Real PostgreSQL, real Airflow (``dag.test()``), moto as CloudWatch.

Roles are cluster-wide: every login made here has a unique name and is dropped at the end; the group role
device_sync may stay (the grants script creates it when missing and is re-run by every test).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql

from conftest import ADMIN_URL, REPO, psycopg_url_to_airflow_uri, reset_sources, run_dag_test
from device_sync import sync
from device_sync.config import Settings
from device_sync.staging import StagingTables, drop_tables
from device_sync.window import Window

DAG_ID = "device_parameter_sync"
T = datetime(2026, 11, 30, 12, tzinfo=UTC)
GRANTS = REPO / "include" / "sql" / "grants" / "device_sync_role.sql"
SOURCES = {
    "iot_data.redshift_devices": "device_id",
    "iot_data.timescale_parameters": "parameter_id",
    "iot_data.measurements": "device_id",
}
TARGET_QUERY = "SELECT device_id, device_name, parameter_id, parameter_name FROM iot_data.device_parameters"
EXPECTED = {
    ("d1", "Device 1", "p1", "Temperature"),
    ("d1", "Device 1", "p2", "Humidity"),
    ("d2", "Device 2 renamed", "p1", "Temperature"),
}


def run_grants(url: str, **custom: str) -> None:
    """Run the grants file as the admin, as psql would (the file has its own BEGIN / COMMIT)."""
    with psycopg.connect(url, autocommit=True) as admin:
        for name, value in custom.items():  # what PGOPTIONS='-c device_sync.<name>=…' does for psql
            admin.execute("SELECT set_config(%s, %s, false)", (f"device_sync.{name}", value))
        admin.execute(GRANTS.read_text(encoding="utf-8"))


def with_user(url: str, user: str) -> str:
    return psycopg.conninfo.make_conninfo(url, user=user)


def snapshot(cur: psycopg.Connection[Any] | psycopg.Cursor[Any]) -> dict[str, list[tuple[Any, ...]]]:
    return {table: sorted(cur.execute(f"SELECT * FROM {table}").fetchall(), key=repr) for table in SOURCES}


@pytest.fixture(scope="module")
def make_login(database_url: str) -> Iterator[Callable[..., str]]:
    """Factory of login roles that are members of device_sync (unique names); all dropped at the end."""
    created: list[str] = []

    def make(act_as_group: bool = True) -> str:
        name = f"device_sync_test_login_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
            created.append(name)
            admin.execute(sql.SQL("GRANT device_sync TO {}").format(sql.Identifier(name)))
            if act_as_group:  # the recommended deployment: the login's sessions act as device_sync
                admin.execute(sql.SQL("ALTER ROLE {} SET role = 'device_sync'").format(sql.Identifier(name)))
        return name

    yield make
    with psycopg.connect(database_url, autocommit=True) as admin:
        for name in created:
            role = sql.Identifier(name)
            admin.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(role))
            admin.execute(sql.SQL("DROP OWNED BY {}").format(role))
            admin.execute(sql.SQL("DROP ROLE {}").format(role))


def seed(admin: psycopg.Connection[Any]) -> None:
    """Two active devices (one renamed since), an inactive one; stale target rows; old and recent history."""
    admin.execute(
        "INSERT INTO iot_data.redshift_devices VALUES "
        "('d1', 'Device 1', true), ('d2', 'Device 2 renamed', true), ('d3', 'Device 3', false)"
    )
    admin.execute("INSERT INTO iot_data.timescale_parameters VALUES ('p1', 'Temperature'), ('p2', 'Humidity')")
    admin.execute(
        "INSERT INTO iot_data.measurements VALUES ('d1', 'p1', %(t)s, 1), ('d1', 'p2', %(t)s, 2), "
        "('d2', 'p1', %(t)s, 3), ('d3', 'p1', %(t)s, 4)",
        {"t": T - timedelta(hours=1)},
    )
    admin.execute(
        "INSERT INTO iot_data.device_parameters (device_id, device_name, parameter_id, parameter_name) VALUES "
        "('d2', 'Device 2', 'p1', 'Temperature'), ('d3', 'Device 3', 'p1', 'Temperature'), "
        "('d1', 'Device 1', 'p9', 'Retired')"
    )
    for run_id, age in (("ancient", "400 days"), ("recent", "1 hour")):
        admin.execute(
            "INSERT INTO device_sync.run_history (run_id, dag_id, started_at, finished_at, status) "
            "VALUES (%s, 'other_dag', now() - %s::interval, now() - %s::interval, 'failed')",
            (run_id, age, age),
        )
        admin.execute(
            "INSERT INTO device_sync.change_log (run_id, operation, device_id, parameter_id, changed_at) "
            "VALUES (%s, 'insert', 'dx', 'px', now() - %s::interval)",
            (run_id, age),
        )


@pytest.fixture(scope="module")
def deployed(
    database_url: str, airflow_db: None, moto_server: str, make_login: Callable[..., str]
) -> Iterator[dict[str, Any]]:
    """The deployment of the README, then one whole DAG run as the least-privileged login.

    The admin creates the package's objects with the package's own ensure_schema(), runs the grants file
    (twice: it is re-runnable), a login that is a member of device_sync runs the DAG with dag.test().
    """
    with psycopg.connect(database_url, autocommit=True) as admin:
        reset_sources(admin)
        sync.ensure_schema(admin, Settings())
        seed(admin)
        sources_before = snapshot(admin)
    run_grants(database_url)
    run_grants(database_url)
    login = make_login()

    env = {
        "AIRFLOW_CONN_DEVICE_SYNC_POSTGRES": psycopg_url_to_airflow_uri(with_user(database_url, login)),
        "DEVICE_SYNC_RETRIES": "0",  # a missing privilege must show at once
    }
    dag_run = run_dag_test(T, **env)
    yield {
        "login": login,
        "url": with_user(database_url, login),
        "state": dag_run.state,
        "task_states": {ti.task_id: ti.state for ti in dag_run.get_task_instances()},
        "run_id": dag_run.run_id,
        "sources_before": sources_before,
    }


def test_whole_dag_runs_as_the_least_privileged_login(deployed: dict[str, Any], database_url: str) -> None:
    task_states = dict(deployed["task_states"])
    assert deployed["state"] == "success", task_states
    assert task_states.pop("fail_if_sync_failed") == "skipped"
    assert set(task_states.values()) == {"success"}

    with psycopg.connect(database_url) as admin:
        assert set(admin.execute(TARGET_QUERY)) == EXPECTED
        assert snapshot(admin) == deployed["sources_before"]
        history = admin.execute(
            "SELECT run_id, status, applied, inserted, deleted, updated FROM device_sync.run_history"
        )
        # The run's row was written; the 400-day-old row was pruned by the run; the recent one is kept.
        assert set(history) == {
            ("recent", "failed", False, None, None, None),
            (deployed["run_id"], "success", True, 2, 2, 1),
        }
        changes = admin.execute(
            "SELECT operation, count(*) FROM device_sync.change_log WHERE run_id = %s GROUP BY 1",
            (deployed["run_id"],),
        )
        assert dict(changes.fetchall()) == {"insert": 2, "delete": 2, "update": 1}
        others = admin.execute("SELECT run_id FROM device_sync.change_log WHERE run_id <> %s", (deployed["run_id"],))
        assert others.fetchall() == [("recent",)]
        # The staging tables are gone, and the login owns nothing (they belonged to device_sync).
        left = admin.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'device_sync' AND tablename ~ '^stage_'"
        )
        assert left.fetchone() == (0,)
        owned = admin.execute("SELECT count(*) FROM pg_class WHERE relowner = %s::regrole", (deployed["login"],))
        assert owned.fetchone() == (0,)


FORBIDDEN = [
    *(
        statement.format(table=table, column=column)
        for table, column in SOURCES.items()
        for statement in (
            "INSERT INTO {table} ({column}) VALUES ('x')",
            "UPDATE {table} SET {column} = {column}",
            "DELETE FROM {table}",
            "TRUNCATE {table}",
            "DROP TABLE {table}",
            "ALTER TABLE {table} ADD COLUMN sneaky integer",
            "CREATE INDEX ON {table} ({column})",
        )
    ),
    "CREATE TABLE iot_data.sneaky (x integer)",
    "CREATE VIEW iot_data.sneaky AS SELECT 1 AS x",
    "CREATE FUNCTION iot_data.sneaky() RETURNS integer LANGUAGE sql AS 'SELECT 1'",
    "CREATE SCHEMA sneaky",
    "DROP SCHEMA iot_data CASCADE",
    "DROP SCHEMA device_sync CASCADE",
    "TRUNCATE iot_data.device_parameters",
    "DROP TABLE iot_data.device_parameters",
    "ALTER TABLE iot_data.device_parameters ADD COLUMN sneaky integer",
    *(
        statement.format(table=f"device_sync.{table}")
        for table in ("run_history", "change_log")
        for statement in (
            "DELETE FROM {table}",  # refused by the history guard: recent rows are kept
            "TRUNCATE {table}",
            "DROP TABLE {table}",
            "ALTER TABLE {table} DISABLE TRIGGER keep_recent_history",
        )
    ),
    "UPDATE device_sync.change_log SET device_id = 'forged'",
    "DROP FUNCTION device_sync.refuse_recent_history_delete() CASCADE",
    "CREATE OR REPLACE FUNCTION device_sync.refuse_recent_history_delete() RETURNS trigger "
    "LANGUAGE plpgsql AS 'BEGIN RETURN OLD; END'",
    "SET session_replication_role = replica",  # would disable the history guard's triggers
]


@pytest.mark.parametrize("statement", FORBIDDEN)
def test_the_login_cannot_modify_sources_schemas_or_history(deployed: dict[str, Any], statement: str) -> None:
    with psycopg.connect(deployed["url"]) as login:
        try:
            with pytest.raises(errors.InsufficientPrivilege):
                login.execute(statement)
        finally:
            login.rollback()  # should a statement unexpectedly succeed, undo it for the other tests


def test_the_login_reads_the_sources_and_owns_only_what_it_creates(deployed: dict[str, Any]) -> None:
    with psycopg.connect(deployed["url"]) as login:
        assert login.execute("SELECT current_user").fetchone() == ("device_sync",)
        assert snapshot(login) == deployed["sources_before"]
        assert login.execute("SELECT count(*) FROM device_sync.run_history").fetchone() == (2,)
        # The staging pattern: create, analyze and drop its own UNLOGGED table in the package's schema.
        login.execute("CREATE UNLOGGED TABLE device_sync.stage_privilege_probe AS SELECT 1 AS x")
        login.execute("ANALYZE device_sync.stage_privilege_probe")
        login.execute("DROP TABLE device_sync.stage_privilege_probe")
        login.commit()


@pytest.fixture
def fresh_database() -> Iterator[str]:
    """A database of its own (the module's deployment in the session database stays as it is)."""
    name = f"device_sync_test_lp_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield psycopg.conninfo.make_conninfo(ADMIN_URL, dbname=name)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_the_grants_follow_custom_tables_and_remove_privileges_granted_by_hand(
    make_login: Callable[..., str], fresh_database: str
) -> None:
    """A measurements table in another schema and another staging schema (passed to the grants file as
    custom settings); a login that does not act as device_sync; an extra privilege granted by hand goes."""
    url = fresh_database
    settings = Settings(
        measurements_table="telemetry.readings", measurements_time_column="ts", staging_schema="ds_custom"
    )
    custom = {"measurements_table": "telemetry.readings", "staging_schema": "ds_custom"}
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(
            "CREATE SCHEMA iot_data;"
            "CREATE TABLE iot_data.redshift_devices (device_id TEXT, device_name TEXT, status BOOLEAN);"
            "CREATE TABLE iot_data.timescale_parameters (parameter_id TEXT, parameter_name TEXT);"
            "CREATE SCHEMA telemetry;"
            "CREATE TABLE telemetry.readings (device_id TEXT, parameter_id TEXT, ts TIMESTAMPTZ);"
            "CREATE TABLE telemetry.secrets (x TEXT);"
            "INSERT INTO iot_data.redshift_devices VALUES ('d1', 'Device 1', true);"
            "INSERT INTO iot_data.timescale_parameters VALUES ('p1', 'Temperature');"
        )
        admin.execute("INSERT INTO telemetry.readings VALUES ('d1', 'p1', %s)", (T - timedelta(minutes=5),))
        sync.ensure_schema(admin, settings)
    run_grants(url, **custom)
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("GRANT SELECT, INSERT ON telemetry.secrets, iot_data.redshift_devices TO device_sync")
    run_grants(url, **custom)
    login = make_login(act_as_group=False)

    with psycopg.connect(with_user(url, login), autocommit=True) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (login,)
        staging = StagingTables.for_run("ds_custom", DAG_ID, "custom")
        result = sync.sync_once(conn, settings, staging, Window.ending_at(T, 60), run_id="custom")
        assert (result["inserted"], result["deleted"], result["updated"]) == (1, 0, 0)
        assert set(conn.execute(TARGET_QUERY)) == {("d1", "Device 1", "p1", "Temperature")}
        stage = "SELECT count(*) FROM pg_tables WHERE schemaname = 'ds_custom' AND tablename ~ '^stage_'"
        assert conn.execute(stage).fetchone() == (0,)
        for statement in (
            "SELECT * FROM telemetry.secrets",
            "INSERT INTO iot_data.redshift_devices VALUES ('d9', 'Device 9', true)",
            "INSERT INTO telemetry.readings VALUES ('d9', 'p9', now())",
            "CREATE TABLE telemetry.sneaky (x integer)",
            "DELETE FROM ds_custom.change_log",
            "DROP TABLE ds_custom.run_history",
        ):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(statement)


def test_partitions_are_granted_and_a_later_one_is_read_through_the_parent(
    make_login: Callable[..., str], fresh_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The grants cover the partitions that exist, which the login reads one by one; a partition created
    after the grants (no SELECT on it yet) makes the run warn and scan the window through the parent."""
    url = fresh_database
    settings = Settings()
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(
            "CREATE SCHEMA iot_data;"
            "CREATE TABLE iot_data.redshift_devices (device_id TEXT, device_name TEXT, status BOOLEAN);"
            "CREATE TABLE iot_data.timescale_parameters (parameter_id TEXT, parameter_name TEXT);"
            'CREATE TABLE iot_data.measurements (device_id TEXT, parameter_id TEXT, "time" TIMESTAMPTZ)'
            ' PARTITION BY RANGE ("time");'
            "CREATE TABLE iot_data.measurements_old PARTITION OF iot_data.measurements"
            " FOR VALUES FROM (MINVALUE) TO ('2026-11-30 11:30+00');"
            "CREATE TABLE iot_data.measurements_default PARTITION OF iot_data.measurements DEFAULT;"
            "INSERT INTO iot_data.redshift_devices VALUES ('d1', 'Device 1', true);"
            "INSERT INTO iot_data.timescale_parameters VALUES ('p1', 'Temperature'), ('p2', 'Voltage');"
        )
        admin.execute(
            "INSERT INTO iot_data.measurements VALUES ('d1', 'p1', %s), ('d1', 'p2', %s)",
            (T - timedelta(minutes=50), T - timedelta(minutes=5)),
        )
        sync.ensure_schema(admin, settings)
    run_grants(url)
    login = make_login()
    staging = StagingTables.for_run(settings.staging_schema, DAG_ID, "partitions")
    with psycopg.connect(with_user(url, login), autocommit=True) as conn:
        sync.discover_active_devices(conn, settings, staging)
        summary = sync.aggregate_recent_measurements(conn, settings, staging, Window.ending_at(T, 60))
        assert summary["partitions_by_method"] == {"window_scan": 2} and summary["shard_pairs"] == 2
        readable = "SELECT has_table_privilege(%s, 'SELECT')"
        for partition in ("iot_data.measurements_old", "iot_data.measurements_default"):
            assert conn.execute(readable, (partition,)).fetchone() == (True,), partition

    with psycopg.connect(url, autocommit=True) as admin:  # a new partition, created after the grants
        admin.execute(
            "CREATE TABLE iot_data.measurements_new (LIKE iot_data.measurements);"
            "ALTER TABLE iot_data.measurements DETACH PARTITION iot_data.measurements_default;"
            "ALTER TABLE iot_data.measurements ATTACH PARTITION iot_data.measurements_new"
            " FOR VALUES FROM ('2026-11-30 11:30+00') TO ('2026-12-01');"
        )
        admin.execute("INSERT INTO iot_data.measurements VALUES ('d1', 'p2', %s)", (T - timedelta(minutes=4),))
    with psycopg.connect(with_user(url, login), autocommit=True) as conn, caplog.at_level("WARNING"):
        summary = sync.aggregate_recent_measurements(conn, settings, staging, Window.ending_at(T, 60))
        assert summary["partitions_by_method"] == {"window_scan": 1} and summary["shard_pairs"] == 2
        drop_tables(conn, settings, staging)
    assert any("iot_data.measurements_new" in record.getMessage() for record in caplog.records)


def test_the_grants_refuse_a_role_that_owns_what_it_must_not_alter(fresh_database: str) -> None:
    """If device_sync owned the history (say the DAG created it), its grants would mean nothing: refused."""
    with psycopg.connect(fresh_database, autocommit=True) as admin:
        reset_sources(admin)
        sync.ensure_schema(admin, Settings())
        run_grants(fresh_database)
        admin.execute("ALTER TABLE device_sync.run_history OWNER TO device_sync")
        with pytest.raises(errors.RaiseException, match="run_history is owned by device_sync"):
            run_grants(fresh_database)
