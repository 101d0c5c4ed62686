"""The plugin's HTTP endpoints in-process (FastAPI's TestClient on ``device_sync.api.app``) against real
PostgreSQL: the public /health (body, rule, cache), input validation, a refused database, pagination.

Run history rows are inserted directly (after ``sync.ensure_schema``), with times relative to the database's
now(). The health rule itself is a pure function of (state row, settings), tested with fixed datetimes in
tests/unit/test_health_rule_unit.py. The authenticated routes replace only Airflow's login check
(``app.dependency_overrides``); everything behind it is real. The stack tests
(tests/e2e/test_api_server_integration.py) cover the real login.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from threading import Barrier
from typing import Any

import psycopg
import pytest
from croniter import croniter
from fastapi.testclient import TestClient

from conftest import ADMIN_URL, free_port, psycopg_url_to_airflow_uri
from device_sync import api, pool, sync
from device_sync.config import load_settings
from device_sync.history import mark_run_failed
from source_data import execute, query

DAG_ID = "device_parameter_sync"
CONN_ENV = "AIRFLOW_CONN_DEVICE_SYNC_POSTGRES"
# The text of a real connection error: host, port and the server's words must never reach /health.
SECRET_WORDS = ("127.0.0.1", "port", "connection", "refused", "permission", "device_parameters")


@pytest.fixture
def history(conn: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    """The session database with the sync's schema and an empty run history; a fresh /health cache."""
    sync.ensure_schema(conn, load_settings())
    execute(conn, "TRUNCATE device_sync.run_history, device_sync.change_log")
    api.reset_health_cache()
    yield conn
    api.reset_health_cache()


def add_run(
    conn: psycopg.Connection[Any],
    run_id: str,
    finished_ago: timedelta | None,
    *,
    status: str = "success",
    applied: bool = True,
    started_ago: timedelta | None = None,
    error: str | None = None,
    guard: str | None = None,
) -> None:
    """A run history row with times relative to the database's now() (``finished_ago`` None: still running)."""
    started_ago = started_ago if started_ago is not None else (finished_ago or timedelta()) + timedelta(seconds=40)
    execute(
        conn,
        "INSERT INTO device_sync.run_history (run_id, dag_id, window_start, window_end, started_at, finished_at,"
        " status, applied, error, guard) VALUES (%(run_id)s, %(dag_id)s, now() - %(started)s - interval '1 day',"
        " now() - %(started)s, now() - %(started)s, now() - %(finished)s::interval, %(status)s, %(applied)s, %(error)s,"
        " %(guard)s)",
        {
            "run_id": run_id,
            "dag_id": DAG_ID,
            "started": started_ago,
            "finished": finished_ago,
            "status": status,
            "applied": applied,
            "error": error,
            "guard": guard,
        },
    )


def real_connection_error() -> str:
    """The message of a real refused connection (host and port in it)."""
    try:
        psycopg.connect(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres", connect_timeout=3).close()
    except psycopg.OperationalError as error:
        return str(error)
    raise AssertionError("nothing should listen on a free port")


def get_health(client: TestClient) -> tuple[int, dict[str, Any]]:
    api.reset_health_cache()
    response = client.get("/health")
    return response.status_code, response.json()


# --- 1. /health says no more than status, times and a reason class ------------------------------------------


def test_health_after_a_failed_run_names_the_task_but_no_error_text(
    history: psycopg.Connection[Any], client: TestClient
) -> None:
    add_run(history, "good-run", timedelta(minutes=30))
    settings = load_settings()
    error = f"apply_changes: {real_connection_error()}\nFATAL: permission denied for table device_parameters"
    mark_run_failed(
        history,
        settings,
        {"run_id": "bad-run", "dag_id": DAG_ID, "error": error},
    )
    status, body = get_health(client)
    assert status == 503
    assert body["reason"] == "last run failed in apply_changes"
    assert "bad-run" not in str(body)
    for word in SECRET_WORDS:
        assert word not in str(body).lower(), word
    assert set(body) <= {
        "status", "reason", "checked_at", "last_run_finished_at", "last_successful_sync", "age_seconds",
        "window_start", "window_end", "missed_runs", "missed_runs_limit", "max_age_seconds",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("error", "guard", "reason"),
    [
        ("apply_changes: mass delete blocked", "mass_delete", "last run failed in apply_changes: guard mass_delete"),
        ("resolve_parameter_names: UndefinedTable: relation x", None, "last run failed in resolve_parameter_names"),
        ("publish_metrics: EndpointConnectionError", None, "last run failed in publish_metrics"),
        ("127.0.0.1: refused", None, "last run failed"),
        ("apply_changes_evil: x", "DROP TABLE", "last run failed"),
        (None, None, "last run failed"),
    ],
)  # fmt: skip
def test_health_reason_uses_only_known_task_ids_and_guards(
    history: psycopg.Connection[Any], client: TestClient, error: str | None, guard: str | None, reason: str
) -> None:
    add_run(history, "good-run", timedelta(minutes=30))
    add_run(history, "bad-run", timedelta(minutes=1), status="failed", applied=False, error=error, guard=guard)
    status, body = get_health(client)
    assert (status, body["reason"]) == (503, reason)


@pytest.fixture
def without_pool(airflow_db: None) -> Iterator[None]:
    """The tasks' Airflow pool deleted for one test, then created again."""
    from airflow.models.pool import Pool

    Pool.delete_pool(pool.NAME)
    yield
    Pool.create_or_update_pool(pool.NAME, slots=4, description=pool.DESCRIPTION, include_deferred=False)


def test_health_is_503_naming_the_command_while_the_pool_is_missing(
    history: psycopg.Connection[Any], client: TestClient, without_pool: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_run(history, "good-run", timedelta(minutes=30))
    monkeypatch.setenv("DEVICE_SYNC_DB_POOL_SLOTS", "6")
    status, body = get_health(client)
    assert status == 503
    assert body["reason"].startswith("The Airflow pool device_sync_db does not exist")
    assert "airflow pools set device_sync_db 6 'device-sync: tasks that query the IoT database'" in body["reason"]


def test_health_is_200_with_the_pool(history: psycopg.Connection[Any], client: TestClient) -> None:
    add_run(history, "good-run", timedelta(minutes=30))
    assert get_health(client)[0] == 200


def test_plugin_app_serves_no_api_docs(client: TestClient) -> None:
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
        assert client.get(path).status_code == 404, path


# --- 2. the last *finished* run ----------------------------------------------------------------------------


def test_health_looks_at_the_last_finished_run_not_the_last_started(
    history: psycopg.Connection[Any], client: TestClient
) -> None:
    # started last, but finished before the other run: an earlier failure that a later run has made good
    add_run(history, "failed-run", timedelta(minutes=8), status="failed", applied=False,
            started_ago=timedelta(minutes=9), error="compute_delta: boom")  # fmt: skip
    add_run(history, "long-run", timedelta(minutes=2), started_ago=timedelta(minutes=20))
    status, body = get_health(client)
    assert status == 200, body
    # a run still going is not the last finished one; the failed run now finished last
    add_run(history, "running-run", None, status="running", applied=False, started_ago=timedelta(minutes=1))
    execute(history, "UPDATE device_sync.run_history SET finished_at = now() WHERE run_id = 'failed-run'")
    status, body = get_health(client)
    assert (status, body["reason"]) == (503, "last run failed in compute_delta")


# --- 3. the rule against the database's now() --------------------------------------------------------------


def db_now(conn: psycopg.Connection[Any]) -> datetime:
    value: datetime = query(conn, "SELECT now()")[0][0]
    return value


@pytest.mark.parametrize("schedule", ["0 * * * *", "*/5 * * * *", "0 9-17 * * 1-5", "30 2 * * *"])
def test_health_is_503_from_the_third_missed_fire_time_of_the_schedule(
    history: psycopg.Connection[Any], client: TestClient, monkeypatch: pytest.MonkeyPatch, schedule: str
) -> None:
    monkeypatch.setenv("DEVICE_SYNC_SCHEDULE", schedule)
    now = db_now(history)
    if croniter(schedule, now).get_next(datetime) - now < timedelta(seconds=10):
        time.sleep(11)  # no fire time may pass between these rows and the health check
        now = db_now(history)
    fire_times = croniter(schedule, now)
    third_last = [fire_times.get_prev(datetime) for _ in range(3)][-1]
    # finished just after the third-to-last fire time: two were missed since
    add_run(history, "applied", now - third_last - timedelta(seconds=5))
    status, body = get_health(client)
    assert (status, body["missed_runs"], body["missed_runs_limit"]) == (200, 2, 3), body
    # finished just before it: three were missed
    execute(history, "UPDATE device_sync.run_history SET finished_at = finished_at - interval '10 seconds'")
    status, body = get_health(client)
    assert (status, body["missed_runs"]) == (503, 3), body
    assert body["reason"] == "stale: 3 scheduled runs since the last applied sync"


def test_health_max_age_minutes_against_the_database(
    history: psycopg.Connection[Any], client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEVICE_SYNC_HEALTH_MAX_AGE_MINUTES", "30")
    add_run(history, "applied", timedelta(minutes=29))
    status, body = get_health(client)
    assert (status, body["max_age_seconds"]) == (200, 1800.0)
    assert 29 * 60 <= body["age_seconds"] < 30 * 60
    execute(history, "UPDATE device_sync.run_history SET finished_at = now() - interval '31 minutes'")
    status, body = get_health(client)
    assert (status, body["reason"]) == (503, "stale: the last applied sync is older than 30 minutes")


def test_health_counts_older_window_runs_since_the_last_applied_sync(
    history: psycopg.Connection[Any], client: TestClient
) -> None:
    add_run(history, "older-before", timedelta(hours=5), applied=False, guard="older_window")
    add_run(history, "applied", timedelta(hours=3, minutes=5))
    for minutes in (125, 65, 5):
        add_run(history, f"older-{minutes}", timedelta(minutes=minutes), applied=False, guard="older_window")
    add_run(history, "dry-run", timedelta(minutes=30), applied=False)
    status, body = get_health(client)
    assert (status, body["missed_runs"]) == (503, 3)
    assert body["reason"] == "not applying: the last 3 finished runs were older windows (guard older_window)"
    assert body["last_successful_sync"] < body["last_run_finished_at"]


# --- 4. the cache ----------------------------------------------------------------------------------------


def test_health_answer_is_cached_for_a_few_seconds(
    history: psycopg.Connection[Any], client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_run(history, "applied", timedelta(minutes=5))
    assert client.get("/health").status_code == 200
    add_run(history, "failed", timedelta(minutes=1), status="failed", applied=False, error="apply_changes: x")
    assert client.get("/health").status_code == 200  # the cached answer
    monkeypatch.setattr(api, "HEALTH_CACHE_SECONDS", 0.2)
    time.sleep(0.3)
    assert client.get("/health").status_code == 503


def sessions_of(dbname: str) -> int:
    """pg_stat_database.sessions of ``dbname`` once no backend is connected to it (a backend adds its
    session to the statistics when it exits)."""
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            row = admin.execute(
                "SELECT (SELECT count(*) FROM pg_stat_activity WHERE datname = %(db)s),"
                " (SELECT sessions FROM pg_stat_database WHERE datname = %(db)s)",
                {"db": dbname},
            ).fetchone()
            assert row is not None
            if row[0] == 0:
                time.sleep(0.3)  # let the exiting backends flush their statistics
                value = admin.execute("SELECT sessions FROM pg_stat_database WHERE datname = %s", (dbname,)).fetchone()
                assert value is not None
                return int(value[0])
            time.sleep(0.1)
    raise TimeoutError(f"backends of {dbname} did not exit")


@pytest.fixture
def own_database(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A database that only the code under test connects to, so its session count is exact."""
    name = f"device_sync_test_api_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = psycopg.conninfo.make_conninfo(ADMIN_URL, dbname=name)
    monkeypatch.setenv(CONN_ENV, psycopg_url_to_airflow_uri(url))
    try:
        yield url
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_concurrent_health_requests_share_one_database_session(own_database: str, client: TestClient) -> None:
    with psycopg.connect(own_database) as setup:
        execute(setup, "CREATE SCHEMA iot_data")
        sync.ensure_schema(setup, load_settings())
        add_run(setup, "applied", timedelta(minutes=5))
    dbname = psycopg.conninfo.conninfo_to_dict(own_database)["dbname"]
    before = sessions_of(dbname)
    api.reset_health_cache()
    requests = 50
    start = Barrier(requests)

    def request(_: int) -> int:
        start.wait()
        return client.get("/health").status_code

    with ThreadPoolExecutor(max_workers=requests) as pool:
        statuses = list(pool.map(request, range(requests)))
    assert statuses == [200] * requests
    opened = sessions_of(dbname) - before
    assert 1 <= opened <= 2, f"{requests} concurrent /health requests opened {opened} database sessions"


# --- 5. bad input is 422, a database that does not answer 503 ------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/runs?offset=9223372036854775808",
        "/runs?offset=1000000001",
        "/changes?offset=9223372036854775808",
        "/changes?device_id=%00",
        "/changes?parameter_id=par%00x",
        "/changes?run_id=%00",
        f"/changes?device_id={'d' * 1025}",
        f"/changes?run_id={'r' * 1025}",
    ],
)
def test_bad_query_parameters_are_422(
    history: psycopg.Connection[Any], client: TestClient, logged_in: None, path: str
) -> None:
    response = client.get(path)
    assert response.status_code == 422, response.text


def test_long_but_valid_filters_are_accepted(
    history: psycopg.Connection[Any], client: TestClient, logged_in: None
) -> None:
    response = client.get("/changes", params={"device_id": "d" * 1024, "run_id": "ünïcode run"})
    assert response.status_code == 200
    assert response.json()["changes"] == []


@pytest.mark.parametrize("path", ["/runs", "/changes?device_id=x", "/", "/health"])
def test_a_refused_database_is_503_with_a_short_reason(
    client: TestClient, logged_in: None, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    port = free_port()  # nothing listens there
    monkeypatch.setenv(CONN_ENV, f"postgres://postgres@127.0.0.1:{port}/nowhere")
    api.reset_health_cache()
    try:
        response = client.get(path)
    finally:
        api.reset_health_cache()
    assert response.status_code == 503, response.text
    assert str(port) not in response.text and "nowhere" not in response.text
    assert "refused" not in response.text.lower()
    if path == "/health":
        assert response.json() == {"status": "unhealthy", "reason": "database unreachable (OperationalError)"}
    else:
        assert response.json() == {"detail": "database unavailable"}


# --- 6. pagination without a window count -------------------------------------------------------------------


def test_runs_total_is_right_past_the_end(
    history: psycopg.Connection[Any], client: TestClient, logged_in: None
) -> None:
    for hours in (3, 2, 1):
        add_run(history, f"run-{hours}", timedelta(hours=hours))
    body = client.get("/runs", params={"limit": 2}).json()
    assert [run["run_id"] for run in body["runs"]] == ["run-1", "run-2"]
    assert (body["total"], body["has_more"], body["next_offset"]) == (3, True, 2)
    body = client.get("/runs", params={"limit": 2, "offset": 2}).json()
    assert [run["run_id"] for run in body["runs"]] == ["run-3"]
    assert (body["total"], body["has_more"], body["next_offset"]) == (3, False, None)
    body = client.get("/runs", params={"offset": 10}).json()
    assert (body["runs"], body["total"], body["has_more"], body["next_offset"]) == ([], 3, False, None)


def test_changes_pages_with_has_more_and_next_offset(
    history: psycopg.Connection[Any], client: TestClient, logged_in: None
) -> None:
    execute(
        history,
        "INSERT INTO device_sync.change_log (run_id, operation, device_id, parameter_id, changed_at)"
        " SELECT 'run-1', 'insert', 'dev-' || g, 'par-1', now() - g * interval '1 minute'"
        " FROM generate_series(1, 5) AS g",
    )
    body = client.get("/changes", params={"limit": 2}).json()
    assert [change["device_id"] for change in body["changes"]] == ["dev-1", "dev-2"]
    assert (body["has_more"], body["next_offset"]) == (True, 2)
    assert "total" not in body
    body = client.get("/changes", params={"limit": 2, "offset": 4}).json()
    assert [change["device_id"] for change in body["changes"]] == ["dev-5"]
    assert (body["has_more"], body["next_offset"]) == (False, None)
    body = client.get("/changes", params={"limit": 5}).json()
    assert (len(body["changes"]), body["has_more"], body["next_offset"]) == (5, False, None)
    body = client.get("/changes", params={"offset": 50, "device_id": "dev-3"}).json()
    assert (body["changes"], body["has_more"]) == ([], False)
