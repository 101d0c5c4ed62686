"""device-sync through PgBouncer in transaction pooling mode (Debian's pgbouncer, started here).

In transaction pooling every transaction may run on another server connection, so nothing may rely on
session state: the statement timeout (``set_config(..., true)``) and the writers' advisory lock
(``pg_advisory_xact_lock``) are transaction-scoped, and the package's connections use no server-side
prepared statements (PgBouncer before 1.21 cannot carry them between server connections).

The tests never install anything: ``scripts/ensure_test_tools.sh`` installs pgbouncer (``make test`` runs it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from airflow.dag_processing.dagbag import DagBag

from conftest import REPO, free_port, psycopg_url_to_airflow_uri
from device_sync import db, sync
from device_sync.config import Settings
from device_sync.staging import StagingTables
from device_sync.window import Window

PGBOUNCER = Path("/usr/sbin/pgbouncer")
DAG_ID = "device_parameter_sync"
CONN_ID = "device_sync_postgres"
T = datetime(2026, 11, 30, 12, tzinfo=UTC)
TARGET_QUERY = "SELECT device_id, device_name, parameter_id, parameter_name FROM iot_data.device_parameters"
FULL_ROWS = "SELECT * FROM iot_data.device_parameters ORDER BY device_id, parameter_id"
LOCK_KEY = "hashtextextended('device_sync:iot_data.device_parameters', 0)"
EXPECTED = {
    ("d1", "Device 1", "p1", "Temperature"),
    ("d1", "Device 1", "p2", "Humidity"),
    ("d2", "Device 2 renamed", "p1", "Temperature"),
}


@pytest.fixture(scope="module")
def pgbouncer(database_url: str) -> Iterator[str]:
    """Debian's pgbouncer on a free loopback port, transaction pooling, in front of the session's database.

    Yields the libpq conninfo of the database through pgbouncer; pgbouncer is stopped at the end.
    """
    if not os.access(PGBOUNCER, os.X_OK):
        pytest.fail(
            f"{PGBOUNCER} is missing: the PgBouncer tests need Debian's pgbouncer. "
            "Run scripts/ensure_test_tools.sh (as root, or with sudo) to install it; `make test` runs it.",
            pytrace=False,
        )
    server = psycopg.conninfo.conninfo_to_dict(database_url)
    user = str(server.get("user", "postgres"))
    dbname = str(server["dbname"])
    backend = f"host={server.get('host', '127.0.0.1')} port={server.get('port', 5432)} dbname={dbname} user={user}"
    if server.get("password"):
        backend += f" password={server['password']}"
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="device-sync-pgbouncer-"))
    workdir.chmod(0o755)  # pgbouncer drops root for the user below: its files must stay readable
    (workdir / "userlist.txt").write_text(f'"{user}" ""\n', encoding="utf-8")
    ini = workdir / "pgbouncer.ini"
    ini.write_text(
        f"[databases]\n{dbname} = {backend}\n\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {workdir / 'userlist.txt'}\n"
        "pool_mode = transaction\ndefault_pool_size = 4\nmax_client_conn = 50\n"
        # pgbouncer refuses to run as root; it switches to this user itself after reading its files.
        + ("user = postgres\n" if os.geteuid() == 0 else ""),
        encoding="utf-8",
    )
    for path in workdir.iterdir():
        path.chmod(0o644)
    log_path = workdir / "pgbouncer.log"
    url = psycopg.conninfo.make_conninfo(database_url, host="127.0.0.1", port=port)
    with log_path.open("wb") as log:
        process = subprocess.Popen([str(PGBOUNCER), str(ini)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                psycopg.connect(url, connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"pgbouncer did not start:\n{log_path.read_text(errors='replace')}", pytrace=False)
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def through_pgbouncer(pgbouncer: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The Airflow connection of the DAG points at pgbouncer for this test."""
    monkeypatch.setenv("AIRFLOW_CONN_DEVICE_SYNC_POSTGRES", psycopg_url_to_airflow_uri(pgbouncer))
    return pgbouncer


def seed(conn: psycopg.Connection[Any]) -> None:
    """Two active devices (one renamed since), an inactive one, stale target rows: under 100 target rows."""
    sync.ensure_schema(conn, Settings())
    conn.execute(
        "INSERT INTO iot_data.redshift_devices VALUES "
        "('d1', 'Device 1', true), ('d2', 'Device 2 renamed', true), ('d3', 'Device 3', false)"
    )
    conn.execute("INSERT INTO iot_data.timescale_parameters VALUES ('p1', 'Temperature'), ('p2', 'Humidity')")
    conn.execute(
        "INSERT INTO iot_data.measurements VALUES ('d1', 'p1', %(t)s, 1), ('d1', 'p2', %(t)s, 2), "
        "('d2', 'p1', %(t)s, 3), ('d3', 'p1', %(t)s, 4)",
        {"t": T - timedelta(hours=1)},
    )
    conn.execute(
        "INSERT INTO iot_data.device_parameters (device_id, device_name, parameter_id, parameter_name) VALUES "
        "('d2', 'Device 2', 'p1', 'Temperature'), ('d3', 'Device 3', 'p1', 'Temperature'), "
        "('d1', 'Device 1', 'p9', 'Retired')"
    )
    conn.commit()


def run_dag() -> tuple[str, dict[str, str]]:
    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    dag_run = bag.dags[DAG_ID].test(logical_date=T)
    return dag_run.state, {ti.task_id: ti.state for ti in dag_run.get_task_instances()}


def test_pgbouncer_pools_transactions(through_pgbouncer: str) -> None:
    """The fixture really is transaction pooling: two idle clients share one server connection."""
    with (
        psycopg.connect(through_pgbouncer, autocommit=True) as first,
        psycopg.connect(through_pgbouncer, autocommit=True) as second,
    ):
        pid = first.execute("SELECT pg_backend_pid()").fetchone()
        assert second.execute("SELECT pg_backend_pid()").fetchone() == pid
        assert first.execute("SELECT pg_backend_pid()").fetchone() == pid


def test_whole_dag_through_pgbouncer_then_a_second_run_changes_nothing(
    through_pgbouncer: str, airflow_db: None, moto_server: str, conn: psycopg.Connection[Any]
) -> None:
    seed(conn)

    state, task_states = run_dag()

    assert state == "success", task_states
    assert task_states.pop("fail_if_sync_failed") == "skipped"
    assert set(task_states.values()) == {"success"}
    assert set(conn.execute(TARGET_QUERY)) == EXPECTED
    first = conn.execute(FULL_ROWS).fetchall()
    changes = conn.execute("SELECT count(*) FROM device_sync.change_log").fetchone()
    assert changes == (5,)  # 2 inserts, 2 deletes, 1 rename
    conn.commit()

    state, _ = run_dag()

    assert state == "success"
    assert conn.execute(FULL_ROWS).fetchall() == first  # not even updated_at moved
    assert conn.execute("SELECT count(*) FROM device_sync.change_log").fetchone() == changes
    latest = conn.execute(
        "SELECT inserted, deleted, updated FROM device_sync.run_history ORDER BY finished_at DESC LIMIT 1"
    )
    assert latest.fetchone() == (0, 0, 0)
    staging = "SELECT count(*) FROM pg_tables WHERE schemaname = 'device_sync' AND tablename ~ '^stage_'"
    assert conn.execute(staging).fetchone() == (0,)


def test_a_connection_that_repeats_statements_works_through_pgbouncer(through_pgbouncer: str) -> None:
    """psycopg prepares a statement on the server after 5 executions; through pgbouncer 1.18 the next client
    on that server connection would collide with it ("prepared statement _pg3_0 already exists")."""
    for _ in range(3):
        conn = db.connect(CONN_ID)
        try:
            for _ in range(12):
                with db.transaction(conn, 5) as cur:
                    assert db.fetch_one_dict(cur, "SELECT 1 AS one") == {"one": 1}
        finally:
            conn.close()


def test_concurrent_syncs_through_pgbouncer_serialize(through_pgbouncer: str, conn: psycopg.Connection[Any]) -> None:
    """Two sync_once calls through pgbouncer, held at the writers' lock until both wait there, then released:
    one applies the changes, the other recomputes its delta under the lock and applies nothing."""
    seed(conn)
    settings = Settings()
    window = Window.ending_at(T, settings.lookback_minutes)
    clients = [db.connect(CONN_ID) for _ in range(2)]
    results: dict[int, dict[str, Any]] = {}
    failures: list[BaseException] = []

    def run(index: int) -> None:
        try:
            staging = StagingTables.for_run(settings.staging_schema, DAG_ID, f"concurrent-{index}")
            results[index] = sync.sync_once(clients[index], settings, staging, window, run_id=f"concurrent-{index}")
        except BaseException as error:  # reported by the main thread
            failures.append(error)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(2)]
    holder = conn  # a direct connection, not through pgbouncer, holds the lock
    holder.execute(f"SELECT pg_advisory_xact_lock({LOCK_KEY})")
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        with psycopg.connect(conn.info.dsn, autocommit=True) as observer:
            waiting = (
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
            while observer.execute(waiting).fetchone() != (2,):
                assert not failures, failures
                assert time.monotonic() < deadline, "the two syncs never both waited for the writers' lock"
                time.sleep(0.05)
    finally:
        holder.commit()  # releases the lock
        for thread in threads:
            thread.join(timeout=60)
        for client in clients:
            client.close()

    assert not failures, failures
    counts = sorted((r["inserted"], r["deleted"], r["updated"]) for r in results.values())
    assert counts == [(0, 0, 0), (2, 2, 1)]
    assert set(conn.execute(TARGET_QUERY)) == EXPECTED
    assert conn.execute("SELECT count(*) FROM device_sync.change_log").fetchone() == (5,)
    statuses = conn.execute("SELECT run_id, status, applied FROM device_sync.run_history ORDER BY run_id")
    assert statuses.fetchall() == [("concurrent-0", "success", True), ("concurrent-1", "success", True)]
