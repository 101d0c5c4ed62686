"""Faults produced for real against real PostgreSQL and real Airflow (``dag.test()``), no mocks.

- the apply transaction's backend is terminated (``pg_terminate_backend``) after it has started writing,
  step by step and through a whole DAG run whose Airflow retry then completes the run;
- PostgreSQL refuses connections (``ALTER DATABASE … ALLOW_CONNECTIONS false``) when a task connects and
  comes back two seconds later;
- a statement runs longer than ``DEVICE_SYNC_STATEMENT_TIMEOUT_SECONDS`` (a view that sleeps per row);
- the CloudWatch endpoint is down (a closed port), then back (the moto server);
- two runs at once, serialized by the writers' advisory lock.

Every statement the tests themselves run goes through ``execute``/``query`` (one committed transaction each),
so the sync's transactions are never nested inside an open one. Target tables stay far below the mass-delete
guard's 100 rows, every applying run has a measurement in its window, and window ends never go backwards.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import psycopg
import pytest
from airflow.sdk.exceptions import AirflowFailException
from psycopg import sql

from conftest import ADMIN_URL, Worker, free_port, run_dag_test
from device_sync import db, metrics, sync
from device_sync.config import Settings, load_settings
from device_sync.errors import CONNECT_ATTEMPTS, connection, is_statement_timeout
from device_sync.staging import StagingTables, drop_tables
from device_sync.summary import STEP_TASK_IDS
from device_sync.window import Window
from source_data import add_devices, add_measurements, add_parameters, add_target, execute, query, snapshot, target

DAG_ID = "device_parameter_sync"
T = datetime(2026, 11, 30, 12, tzinfo=UTC)  # window end of the step-level runs and logical date of DAG runs
LOOKBACK = 60
INSIDE = T - timedelta(minutes=30)  # inside both the step-level window and the DAG's default 1440-minute one
NAMESPACE = "IoT/DeviceParameterSync"
LOCK_TARGET = db.load_sql(f"{db.STEPS_SQL}lock_target.sql")


# --- helpers -------------------------------------------------------------------------------------------


def history(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    cur = conn.cursor()
    with conn.transaction():
        cur.execute(
            "SELECT run_id, status, applied, inserted, deleted, updated, error, window_end, finished_at "
            "FROM device_sync.run_history ORDER BY finished_at, run_id"
        )
        assert cur.description is not None
        names = [column.name for column in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def change_log(conn: psycopg.Connection[Any]) -> list[tuple[str, str, str, str]]:
    return [
        tuple(row)  # type: ignore[misc]
        for row in query(
            conn,
            "SELECT run_id, operation, device_id, parameter_id FROM device_sync.change_log "
            "ORDER BY run_id, operation, device_id, parameter_id",
        )
    ]


def staging_tables(conn: psycopg.Connection[Any]) -> list[str]:
    rows = query(
        conn, "SELECT tablename FROM pg_tables WHERE schemaname = 'device_sync' AND starts_with(tablename, 'stage_')"
    )
    return sorted(name for (name,) in rows)


def staging_for(settings: Settings, run_id: str) -> StagingTables:
    return StagingTables.for_run(settings.staging_schema, DAG_ID, run_id)


def run_steps(
    conn: psycopg.Connection[Any], settings: Settings, staging: StagingTables, window: Window
) -> dict[str, int]:
    """The four steps before apply_changes, as the DAG runs them; returns the planned delta's counts."""
    sync.discover_active_devices(conn, settings, staging)
    sync.aggregate_recent_measurements(conn, settings, staging, window)
    sync.resolve_parameter_names(conn, settings, staging)
    return sync.compute_delta(conn, settings, staging)


def run_record(run_id: str, window: Window) -> dict[str, Any]:
    return {"run_id": run_id, "dag_id": DAG_ID, "window_start": window.start, "window_end": window.end}


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def error_chain(error: BaseException | None) -> list[BaseException]:
    chain = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


# --- DAG runs ------------------------------------------------------------------------------------------


@pytest.fixture
def cloudwatch(moto_server: str) -> Any:
    urllib.request.urlopen(urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST"))
    return boto3.client("cloudwatch", endpoint_url=moto_server, region_name="us-east-1")


def published(cloudwatch: Any) -> dict[str, float]:
    now = datetime.now(UTC)
    return metrics.read_back(
        cloudwatch, namespace=NAMESPACE, stage="dev", since=now - timedelta(hours=1), until=now + timedelta(hours=1)
    )


@pytest.fixture
def run_dag(airflow_db: None, moto_server: str, conn: psycopg.Connection[Any]) -> Any:
    """Run the whole DAG with dag.test() for a logical date under extra environment variables.

    Returns the finished DagRun and, per task, (state, try_number). ``prepare`` may adjust the parsed DAG
    before the run (dag.test() runs exactly that object's tasks).
    """

    def run(
        logical_date: datetime = T, prepare: Callable[[Any], None] | None = None, **env: str
    ) -> tuple[Any, dict[str, tuple[str, int]]]:
        conn.commit()  # the test's own connection must hold no locks while the DAG runs
        dag_run = run_dag_test(logical_date, prepare, **env)
        return dag_run, {ti.task_id: (ti.state, ti.try_number) for ti in dag_run.get_task_instances()}

    return run


# --- the apply transaction's backend is terminated -------------------------------------------------------

# d1/p1 stays, d2/p1 is renamed, d1/p9 and d3/p1 are deleted, d1/p2 and d2/p3 are inserted.
BEFORE = {
    ("d1", "p1"): ("Device 1", "Temp"),
    ("d2", "p1"): ("Device 2 old", "Temp"),
    ("d1", "p9"): ("Device 1", "Gone"),
    ("d3", "p1"): ("Ghost", "Temp"),
}
DESIRED = {
    ("d1", "p1"): ("Device 1", "Temp"),
    ("d1", "p2"): ("Device 1", "Volt"),
    ("d2", "p1"): ("Device 2 new", "Temp"),
    ("d2", "p3"): ("Device 2 new", "Pressure"),
}
EXPECTED_CHANGES = [
    ("delete", "d1", "p9"),
    ("delete", "d3", "p1"),
    ("insert", "d1", "p2"),
    ("insert", "d2", "p3"),
    ("update", "d2", "p1"),
]
RENAMED = ("d2", "p1")  # the row the blocker locks: the apply has deleted its rows when it waits for this one
DELETED = [("d1", "p9"), ("d3", "p1")]


def seed_apply_with_every_kind_of_change(conn: psycopg.Connection[Any]) -> None:
    add_devices(conn, ("d1", "Device 1", True), ("d2", "Device 2 new", True), ("d3", "Ghost", False))
    add_parameters(conn, ("p1", "Temp"), ("p2", "Volt"), ("p3", "Pressure"), ("p9", "Gone"))
    add_measurements(conn, ("d1", "p1", INSIDE), ("d1", "p2", INSIDE), ("d2", "p1", INSIDE), ("d2", "p3", INSIDE))
    sync.ensure_schema(conn, load_settings())
    add_target(conn, *((d, dn, p, pn) for (d, p), (dn, pn) in BEFORE.items()))


def hold_row_lock(database_url: str, pair: tuple[str, str]) -> psycopg.Connection[Any]:
    """Another session that holds a row lock (SELECT … FOR UPDATE) on one target row until it rolls back."""
    blocker = psycopg.connect(database_url)
    locked = blocker.execute(
        "SELECT 1 FROM iot_data.device_parameters WHERE device_id = %s AND parameter_id = %s FOR UPDATE", pair
    ).fetchall()
    assert locked == [(1,)]
    return blocker


@contextmanager
def release(blocker: psycopg.Connection[Any]) -> Iterator[None]:
    try:
        yield
    finally:
        blocker.rollback()


def terminate_apply_when_blocked(database_url: str, blocker: psycopg.Connection[Any]) -> dict[str, Any]:
    """Wait until a backend is blocked by ``blocker``'s row lock, prove it has written, terminate it, look
    again, then release the row lock (so that a retry is not blocked in turn).

    Returns what was seen: the blocked backend's query, whether the rows it deleted carry its transaction id
    as xmax (it had started writing), whether pg_terminate_backend succeeded, and the committed state
    right after the termination.
    """
    blocker_pid = blocker.info.backend_pid
    with psycopg.connect(database_url, autocommit=True) as observer, release(blocker):
        blocked = wait_for(
            lambda: observer.execute(
                "SELECT pid, backend_xid::text, query FROM pg_stat_activity "
                "WHERE datname = current_database() AND %s = ANY (pg_blocking_pids(pid))",
                (blocker_pid,),
            ).fetchall(),
            "apply_changes to block on the locked row",
        )
        ((pid, xid, statement),) = blocked
        deleted_xmax = {
            (d, p): xmax
            for d, p, xmax in observer.execute(
                "SELECT device_id, parameter_id, xmax::text FROM iot_data.device_parameters "
                "WHERE (device_id, parameter_id) IN (('d1', 'p9'), ('d3', 'p1'))"
            )
        }
        (terminated,) = observer.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,)).fetchone() or (None,)
        still_there = observer.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
        return {
            "query": statement,
            "xid": xid,
            "deleted_xmax": deleted_xmax,
            "terminated": terminated,
            "backend_gone": still_there == (0,),
            "snapshot": snapshot(observer),
            "change_log": observer.execute("SELECT count(*) FROM device_sync.change_log").fetchone(),
            "successes": observer.execute(
                "SELECT count(*) FROM device_sync.run_history WHERE status = 'success'"
            ).fetchone(),
        }


def assert_terminated_mid_apply_without_trace(seen: dict[str, Any], before: dict[Any, Any]) -> None:
    assert seen["query"].startswith("-- Applies this run's changes"), seen["query"]  # apply_changes.sql
    assert seen["xid"] is not None
    # The DELETE had run inside the apply's transaction: the deleted rows carry its xid as xmax.
    assert seen["deleted_xmax"] == dict.fromkeys(DELETED, seen["xid"])
    assert seen["terminated"] is True
    assert seen["backend_gone"]
    # Nothing of the killed transaction is visible: same rows, same xmin, no change log, no success row.
    assert seen["snapshot"] == before
    assert seen["change_log"] == (0,)
    assert seen["successes"] == (0,)


@pytest.mark.parametrize("retry", ["apply_changes", "sync_once"])
def test_apply_backend_terminated_mid_transaction_leaves_no_trace_and_a_retry_completes_the_run(
    conn: psycopg.Connection[Any], database_url: str, retry: str
) -> None:
    """``apply_changes``: the earlier steps ran, only the apply is killed and retried (as Airflow does).
    ``sync_once``: the whole sync is killed in its apply, then run again with the same run id / staging names."""
    settings = load_settings()
    seed_apply_with_every_kind_of_change(conn)
    window = Window.ending_at(T, LOOKBACK)
    staging = staging_for(settings, "run-killed")
    run = run_record("run-killed", window)
    before = snapshot(conn)

    with psycopg.connect(database_url) as first:
        if retry == "apply_changes":
            assert run_steps(first, settings, staging, window) == {"inserts": 2, "updates": 1, "deletes": 2}
            worker = Worker(lambda: sync.apply_changes(first, settings, staging, run=run))
        else:
            worker = Worker(lambda: sync.sync_once(first, settings, staging, window, run_id="run-killed"))
        blocker = hold_row_lock(database_url, RENAMED)
        try:
            worker.start()
            seen = terminate_apply_when_blocked(database_url, blocker)
        finally:
            blocker.rollback()
            blocker.close()
            worker.join(timeout=30)
        assert not worker.is_alive()

    assert isinstance(worker.error, psycopg.OperationalError), repr(worker.error)
    assert any(isinstance(error, psycopg.errors.AdminShutdown) for error in error_chain(worker.error))
    if retry == "sync_once":  # its cleanup did not run on the dead connection and hide the original error
        assert isinstance(worker.error, psycopg.errors.AdminShutdown), repr(worker.error)
    assert_terminated_mid_apply_without_trace(seen, before)
    assert snapshot(conn) == before
    assert change_log(conn) == []
    assert [row for row in history(conn) if row["status"] == "success"] == []

    # The retry: a new connection, the same staging names.
    with psycopg.connect(database_url) as second:
        if retry == "apply_changes":
            result = sync.apply_changes(second, settings, staging, run=run)
            drop_tables(second, settings, staging)
        else:
            result = sync.sync_once(second, settings, staging, window, run_id="run-killed")

    assert (result["inserted"], result["updated"], result["deleted"]) == (2, 1, 2)
    assert target(conn) == DESIRED
    assert change_log(conn) == [("run-killed", *change) for change in EXPECTED_CHANGES]
    ((row),) = history(conn)
    assert (row["run_id"], row["status"], row["applied"], row["error"]) == ("run-killed", "success", True, None)
    assert (row["inserted"], row["updated"], row["deleted"]) == (2, 1, 2)
    assert staging_tables(conn) == []


def test_dag_run_whose_apply_backend_is_terminated_is_completed_by_airflows_retry(
    run_dag: Any, conn: psycopg.Connection[Any], database_url: str
) -> None:
    seed_apply_with_every_kind_of_change(conn)
    audit_run_history_statuses(conn)
    before = snapshot(conn)
    blocker = hold_row_lock(database_url, RENAMED)
    observer = Worker(lambda: terminate_apply_when_blocked(database_url, blocker))

    def start_observer(dag: Any) -> None:
        assert dag.get_task("apply_changes").retries == 3
        assert dag.get_task("apply_changes").retry_delay == timedelta(seconds=1)
        observer.start()

    try:
        # dag.test() waits for a retry's delay like the scheduler does: keep it short (the first retry, 1 s).
        dag_run, states = run_dag(prepare=start_observer, DEVICE_SYNC_RETRY_DELAY_SECONDS="1")
    finally:
        blocker.rollback()
        blocker.close()
        if observer.ident is not None:
            observer.join(timeout=30)

    assert observer.error is None, repr(observer.error)
    assert_terminated_mid_apply_without_trace(observer.result, before)
    # The first attempt of apply_changes died with its backend; Airflow's retry applied the changes.
    assert states["apply_changes"] == ("success", 2)
    for task_id in STEP_TASK_IDS[:4]:
        assert states[task_id] == ("success", 1), task_id
    assert states["publish_metrics"] == ("success", 1)
    assert states["cleanup_staging"] == ("success", 1)
    assert states["fail_if_sync_failed"][0] == "skipped"
    assert dag_run.state == "success"
    assert target(conn) == DESIRED
    assert change_log(conn) == [(dag_run.run_id, *change) for change in EXPECTED_CHANGES]
    ((row),) = history(conn)
    assert (row["run_id"], row["status"], row["applied"], row["error"]) == (dag_run.run_id, "success", True, None)
    assert (row["inserted"], row["updated"], row["deleted"]) == (2, 1, 2)
    # The failed first attempt was retried: the run was never marked failed, not even for a moment.
    assert query(conn, "SELECT status FROM device_sync.run_history_audit ORDER BY seq") == [("success",)]
    assert staging_tables(conn) == []


def audit_run_history_statuses(conn: psycopg.Connection[Any]) -> None:
    """Record every status ever written to the run history (a trigger: it sees even overwritten values)."""
    sync.ensure_schema(conn, load_settings())
    execute(
        conn,
        """
        CREATE TABLE device_sync.run_history_audit (seq BIGSERIAL, status TEXT);
        CREATE FUNCTION device_sync.audit_status() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO device_sync.run_history_audit (status) VALUES (NEW.status);
            RETURN NEW;
        END $$;
        CREATE TRIGGER audit_status AFTER INSERT OR UPDATE ON device_sync.run_history
            FOR EACH ROW EXECUTE FUNCTION device_sync.audit_status();
        """,
    )


# --- PostgreSQL refuses connections, then comes back -----------------------------------------------------


def allow_connections(dbname: str, allowed: bool) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(
            sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
                sql.Identifier(dbname), sql.SQL("true" if allowed else "false")
            )
        )


@pytest.fixture
def refusing_database(database_url: str) -> Iterator[str]:
    """The test database, refusing new connections until the test re-enables it (always re-enabled at the end)."""
    dbname = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    assert isinstance(dbname, str)
    allow_connections(dbname, False)
    try:
        yield dbname
    finally:
        allow_connections(dbname, True)


def test_task_connecting_while_postgres_refuses_connections_retries_with_backoff_logs_and_succeeds(
    conn: psycopg.Connection[Any], database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings()
    add_devices(conn, ("d1", "Device 1", True))
    add_parameters(conn, ("p1", "Temp"))
    add_measurements(conn, ("d1", "p1", INSIDE))
    conn.commit()
    assert "AIRFLOW_CONN_DEVICE_SYNC_POSTGRES" in os.environ  # set by conftest for the session's database
    caplog.set_level(logging.INFO, logger=db.__name__)
    dbname = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    assert isinstance(dbname, str)

    allow_connections(dbname, False)
    reopen = threading.Timer(2.0, allow_connections, (dbname, True))
    try:
        with pytest.raises(psycopg.OperationalError, match="is not currently accepting connections"):
            psycopg.connect(database_url, connect_timeout=5).close()
        reopen.start()
        started = time.monotonic()
        with connection(settings) as task_conn:
            connected_after = time.monotonic() - started
            summary = sync.sync_once(
                task_conn, settings, staging_for(settings, "run-refused"), Window.ending_at(T, LOOKBACK)
            )
    finally:
        reopen.cancel()
        reopen.join()
        allow_connections(dbname, True)

    assert summary["inserted"] == 1
    assert target(conn) == {("d1", "p1"): ("Device 1", "Temp")}
    # Attempts at 0 s and 1 s were refused; the third, after 1 + 2 s of backoff, found the database back.
    assert 2.0 <= connected_after < 10.0
    failures = [record for record in caplog.records if record.name == db.__name__ and record.levelno == logging.WARNING]
    messages = [record.getMessage() for record in failures]
    assert len(messages) == 2, messages
    for attempt, (message, wait) in enumerate(zip(messages, (1, 2), strict=True), start=1):
        assert f"connection {settings.postgres_conn_id}" in message
        assert f"attempt {attempt} of {CONNECT_ATTEMPTS}" in message
        assert f"retrying in {wait} s" in message
        assert f'database "{dbname}" is not currently accepting connections' in message


def test_connection_refused_through_every_attempt_raises_the_last_error_after_a_bounded_backoff(
    refusing_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Not back within the attempts: db.connect gives up with PostgreSQL's error (the task fails and Airflow
    retries it), after 1 + 2 s of backoff for three attempts."""
    caplog.set_level(logging.INFO, logger=db.__name__)
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError, match="is not currently accepting connections"):
        db.connect(load_settings().postgres_conn_id, connect_timeout=5, attempts=3)
    assert 3.0 <= time.monotonic() - started < 10.0  # 1 s + 2 s of backoff, no more
    messages = [r.getMessage() for r in caplog.records if r.name == db.__name__ and r.levelno == logging.WARNING]
    assert len(messages) == 2, messages
    assert "attempt 1 of 3, retrying in 1 s" in messages[0]
    assert "attempt 2 of 3, retrying in 2 s" in messages[1]


# --- a statement runs longer than the statement timeout --------------------------------------------------

SLOW_MEASUREMENTS = """
CREATE FUNCTION iot_data.slowly(t timestamptz) RETURNS timestamptz LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_sleep(0.2);
    RETURN t;
END $$;
CREATE VIEW iot_data.slow_measurements AS
SELECT device_id, parameter_id, iot_data.slowly("time") AS "time", value FROM iot_data.measurements;
"""


def test_statement_timeout_fails_the_dag_run_at_once_naming_the_setting_and_applies_nothing(
    run_dag: Any, conn: psycopg.Connection[Any]
) -> None:
    add_devices(conn, ("d1", "Device 1", True))
    add_parameters(conn, *((f"p{i}", f"Parameter {i}") for i in range(20)))
    add_measurements(conn, *(("d1", f"p{i}", INSIDE) for i in range(20)))  # 20 rows x 0.2 s >> 1 s
    execute(conn, SLOW_MEASUREMENTS)
    sync.ensure_schema(conn, load_settings())
    add_target(conn, ("d1", "Device 1", "p0", "Old name"), ("d9", "Gone", "p1", "Parameter 1"))
    before = snapshot(conn)

    started = time.monotonic()
    dag_run, states = run_dag(
        DEVICE_SYNC_MEASUREMENTS_TABLE="iot_data.slow_measurements", DEVICE_SYNC_STATEMENT_TIMEOUT_SECONDS="1"
    )
    elapsed = time.monotonic() - started

    assert dag_run.state == "failed"
    assert states["discover_active_devices"] == ("success", 1)
    # Failed on its first try although the task has retries left: a retry would wait at least 30 s.
    assert states["aggregate_recent_measurements"] == ("failed", 1)
    assert elapsed < 30
    for task_id in ("resolve_parameter_names", "compute_delta", "apply_changes"):
        assert states[task_id][0] == "upstream_failed", task_id
    assert states["publish_metrics"][0] == "success"
    assert states["cleanup_staging"][0] == "success"
    assert states["fail_if_sync_failed"][0] == "failed"
    assert snapshot(conn) == before
    assert change_log(conn) == []
    ((row),) = history(conn)
    assert (row["run_id"], row["status"], row["applied"]) == (dag_run.run_id, "failed", False)
    assert row["error"].startswith("aggregate_recent_measurements: ")
    assert "DEVICE_SYNC_STATEMENT_TIMEOUT_SECONDS=1" in row["error"]
    assert "canceling statement due to statement timeout" in row["error"]
    assert staging_tables(conn) == []


# --- a statement cancelled by someone else --------------------------------------------------------------


def cancel_when_sleeping(database_url: str) -> int:
    """Cancel (pg_cancel_backend, as an administrator or a failover would) the backend running pg_sleep."""

    def sleeping_pid() -> int | None:
        with psycopg.connect(database_url, autocommit=True) as admin:
            row = admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(30)%%' AND pid <> pg_backend_pid()"
            ).fetchone()
        return int(row[0]) if row else None

    pid = wait_for(sleeping_pid, "the sleeping statement")
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute("SELECT pg_cancel_backend(%s)", (pid,))
    return int(pid)


def test_a_statement_cancelled_by_someone_else_is_a_retried_fault_not_a_timeout(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    settings = load_settings()
    canceller = Worker(lambda: cancel_when_sleeping(database_url))
    canceller.start()
    started = time.monotonic()
    with pytest.raises(psycopg.errors.QueryCanceled, match="due to user request") as cancelled:  # noqa: SIM117
        with connection(settings) as task_conn, db.transaction(task_conn, 60) as cur:
            cur.execute("SELECT pg_sleep(30)")
    canceller.join(timeout=30)
    assert canceller.error is None, repr(canceller.error)
    assert time.monotonic() - started < 20
    # Not an AirflowFailException: Airflow retries the task.
    assert not isinstance(cancelled.value, AirflowFailException)
    assert not is_statement_timeout(cancelled.value)


def test_a_statement_timeout_still_fails_at_once_naming_the_setting(conn: psycopg.Connection[Any]) -> None:
    settings = load_settings()
    with pytest.raises(AirflowFailException, match="DEVICE_SYNC_STATEMENT_TIMEOUT_SECONDS") as failed:  # noqa: SIM117
        with connection(settings) as task_conn, db.transaction(task_conn, 1) as cur:
            cur.execute("SELECT pg_sleep(5)")
    assert isinstance(failed.value.__cause__, psycopg.errors.QueryCanceled)
    assert is_statement_timeout(failed.value.__cause__)


# --- the CloudWatch endpoint is down ---------------------------------------------------------------------


def test_cloudwatch_down_keeps_the_recorded_data_change_and_the_next_run_works(
    run_dag: Any, conn: psycopg.Connection[Any], cloudwatch: Any
) -> None:
    add_devices(conn, ("d1", "Device 1", True))
    add_parameters(conn, ("p1", "Temp"), ("p2", "Volt"), ("p3", "Pressure"))
    add_measurements(conn, ("d1", "p1", INSIDE), ("d1", "p2", INSIDE), ("d1", "p3", T + timedelta(minutes=30)))
    dead_endpoint = f"http://127.0.0.1:{free_port()}"
    aws = json.dumps({"conn_type": "aws", "extra": {"region_name": "us-east-1", "endpoint_url": dead_endpoint}})

    first, states = run_dag(AIRFLOW_CONN_AWS_DEFAULT=aws, DEVICE_SYNC_RETRIES="0")

    assert first.state == "failed"
    assert states["apply_changes"] == ("success", 1)
    assert states["publish_metrics"] == ("failed", 1)
    assert states["cleanup_staging"][0] == "success"
    assert states["fail_if_sync_failed"][0] == "failed"
    assert target(conn) == {("d1", "p1"): ("Device 1", "Temp"), ("d1", "p2"): ("Device 1", "Volt")}
    ((row),) = history(conn)
    assert (row["run_id"], row["status"], row["applied"], row["error"]) == (first.run_id, "success", True, None)
    assert (row["inserted"], row["updated"], row["deleted"]) == (2, 0, 0)
    assert change_log(conn) == [(first.run_id, "insert", "d1", "p1"), (first.run_id, "insert", "d1", "p2")]
    assert published(cloudwatch) == {}  # nothing reached the (real) CloudWatch stand-in

    # The endpoint is back (the aws_default connection points at moto again); an hour later p3 is in the window.
    second, states = run_dag(logical_date=T + timedelta(hours=1))

    assert second.state == "success"
    assert states.pop("fail_if_sync_failed")[0] == "skipped"
    assert set(states.values()) == {("success", 1)}
    assert len(target(conn)) == 3
    rows = {row["run_id"]: row for row in history(conn)}
    assert rows[first.run_id]["status"] == "success"
    assert (rows[second.run_id]["status"], rows[second.run_id]["applied"], rows[second.run_id]["inserted"]) == (
        "success",
        True,
        1,
    )
    sent = published(cloudwatch)
    assert (sent["SyncSuccess"], sent["RowsInserted"], sent["RowsDeleted"]) == (1, 1, 0)


# --- two runs at once ------------------------------------------------------------------------------------


def waiting_for_advisory_lock(observer: psycopg.Connection[Any], pid: int) -> bool:
    row = observer.execute(
        "SELECT count(*) FROM pg_locks WHERE pid = %s AND locktype = 'advisory' AND NOT granted", (pid,)
    ).fetchone()
    return row == (1,)


def test_manual_sync_during_another_runs_apply_waits_for_it_then_applies_only_what_is_left(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    settings = load_settings()
    add_devices(conn, ("d1", "Device 1", True), ("d2", "Device 2", True))
    add_parameters(conn, ("p1", "Temp"), ("p2", "Volt"), ("p3", "Pressure"))
    # p3 is measured after run A's window; run B's window ends 30 minutes later and includes it.
    add_measurements(conn, ("d1", "p1", INSIDE), ("d2", "p2", INSIDE), ("d1", "p3", T + timedelta(minutes=10)))
    sync.ensure_schema(conn, settings)
    add_target(conn, ("d2", "Old name", "p2", "Volt"), ("d9", "Ghost", "p1", "Temp"))
    window_a = Window.ending_at(T, LOOKBACK)
    window_b = Window.ending_at(T + timedelta(minutes=30), LOOKBACK)
    staging_a, staging_b = staging_for(settings, "run-a"), staging_for(settings, "run-b")

    with (
        psycopg.connect(database_url) as conn_a,
        psycopg.connect(database_url) as conn_b,
        psycopg.connect(database_url, autocommit=True) as observer,
        psycopg.connect(database_url) as holder,
    ):
        assert run_steps(conn_a, settings, staging_a, window_a) == {"inserts": 1, "updates": 1, "deletes": 1}
        run_a = Worker(lambda: sync.apply_changes(conn_a, settings, staging_a, run=run_record("run-a", window_a)))
        run_b = Worker(lambda: sync.sync_once(conn_b, settings, staging_b, window_b, run_id="run-b"))
        holder.execute(LOCK_TARGET)  # another writer holds the writers' lock
        try:
            run_a.start()
            wait_for(lambda: waiting_for_advisory_lock(observer, conn_a.info.backend_pid), "run A to wait")
            run_b.start()
            wait_for(lambda: waiting_for_advisory_lock(observer, conn_b.info.backend_pid), "run B to wait")
            both_waiting = waiting_for_advisory_lock(observer, conn_a.info.backend_pid)
            assert target(conn) == {("d2", "p2"): ("Old name", "Volt"), ("d9", "p1"): ("Ghost", "Temp")}
        finally:
            holder.rollback()
            for worker in (run_a, run_b):
                if worker.ident is not None:
                    worker.join(timeout=30)
        assert not run_a.is_alive() and not run_b.is_alive()

    assert both_waiting
    assert run_a.error is None, repr(run_a.error)
    assert run_b.error is None, repr(run_b.error)
    a, b = run_a.result, run_b.result
    assert (a["inserted"], a["updated"], a["deleted"]) == (1, 1, 1)
    # B planned its delta before A applied (2 inserts, 1 update, 1 delete), recomputed it under the lock
    # after A had committed, and applied only the one insert A's window did not contain.
    assert (b["inserts"], b["updates"], b["deletes"]) == (2, 1, 1)
    assert (b["inserted"], b["updated"], b["deleted"]) == (1, 0, 0)
    assert target(conn) == {
        ("d1", "p1"): ("Device 1", "Temp"),
        ("d1", "p3"): ("Device 1", "Pressure"),
        ("d2", "p2"): ("Device 2", "Volt"),
    }
    assert change_log(conn) == [
        ("run-a", "delete", "d9", "p1"),
        ("run-a", "insert", "d1", "p1"),
        ("run-a", "update", "d2", "p2"),
        ("run-b", "insert", "d1", "p3"),
    ]
    rows = history(conn)
    assert [(r["run_id"], r["status"], r["applied"]) for r in rows] == [
        ("run-a", "success", True),
        ("run-b", "success", True),
    ]
    assert rows[0]["finished_at"] <= rows[1]["finished_at"]
    drop_tables(conn, settings, staging_a)
    assert staging_tables(conn) == []
