"""A window that ends in the future is refused before anything is staged, against real PostgreSQL and Airflow.

Applying one would make every later, real run an "older window" that the forward-only guard records but
never applies, until the wall clock passed its end. Two ways in are covered here:

- ``dag.test()`` (what ``airflow dags test device_parameter_sync <future>`` runs): the first task fails at
  once, naming the window end and the database's now(), with nothing staged or applied; the next real run
  applies as usual;
- the sync's own steps (a cleared ``apply_changes`` re-checks before writing).

The third, a REST trigger with a future ``logical_date``, is refused by the plugin's middleware: its rule in
tests/unit/test_trigger_guard_unit.py, on a real ``airflow api-server`` in tests/e2e/test_future_window_e2e.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from conftest import run_dag_test
from device_sync import api, sync
from device_sync.config import load_settings
from device_sync.staging import StagingTables
from device_sync.window import FutureWindow, Window
from source_data import add_devices, add_measurements, add_parameters, query, target

DAG_ID = "device_parameter_sync"


def delete_run(run_id: str) -> None:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    with create_session() as session:
        session.execute(delete(DagRun).where(DagRun.dag_id == DAG_ID, DagRun.run_id == run_id))


def staging_tables(conn: psycopg.Connection[Any]) -> list[str]:
    rows = query(
        conn, "SELECT tablename FROM pg_tables WHERE schemaname = 'device_sync' AND starts_with(tablename, 'stage_')"
    )
    return sorted(name for (name,) in rows)


def seed(conn: psycopg.Connection[Any], now: datetime) -> None:
    add_devices(conn, ("d1", "Device 1", True))
    add_parameters(conn, ("p1", "Temp"), ("p2", "Hum"))
    add_measurements(conn, ("d1", "p1", now - timedelta(minutes=30)), ("d1", "p2", now - timedelta(minutes=20)))
    conn.commit()


# --- the sync's steps ----------------------------------------------------------------------------------------


def test_sync_once_refuses_a_future_window_before_staging_and_applies_nothing(conn: psycopg.Connection[Any]) -> None:
    settings = load_settings()
    now = datetime.now(UTC)
    seed(conn, now)
    staging = StagingTables.for_run(settings.staging_schema, DAG_ID, "future")
    window_end = now + timedelta(hours=2)
    with pytest.raises(FutureWindow, match="after the database's now") as refused:
        sync.sync_once(conn, settings, staging, Window.ending_at(window_end, 1440))
    assert window_end.isoformat() in str(refused.value)
    assert query(conn, "SELECT to_regclass('iot_data.device_parameters')") == [(None,)]  # not even created
    assert staging_tables(conn) == []


def test_a_window_within_the_allowed_clock_skew_is_synced(conn: psycopg.Connection[Any]) -> None:
    settings = load_settings()
    now = datetime.now(UTC)
    seed(conn, now)
    staging = StagingTables.for_run(settings.staging_schema, DAG_ID, "skewed")
    sync.sync_once(conn, settings, staging, Window.ending_at(now + timedelta(minutes=2), 1440))
    assert target(conn) == {("d1", "p1"): ("Device 1", "Temp"), ("d1", "p2"): ("Device 1", "Hum")}


def test_apply_changes_re_checks_the_window_before_writing(conn: psycopg.Connection[Any]) -> None:
    """A run staged while its window was still within the skew, then applied (cleared) once it is not."""
    settings = load_settings()
    now = datetime.now(UTC)
    seed(conn, now)
    staging = StagingTables.for_run(settings.staging_schema, DAG_ID, "cleared")
    window = Window.ending_at(now + timedelta(hours=1), 1440)
    sync.discover_active_devices(conn, settings, staging)
    sync.aggregate_recent_measurements(conn, settings, staging, window)
    sync.resolve_parameter_names(conn, settings, staging)
    run = {"run_id": "cleared", "dag_id": DAG_ID, "window_start": window.start, "window_end": window.end}
    with pytest.raises(FutureWindow):
        sync.apply_changes(conn, settings, staging, run=run)
    assert target(conn) == {}
    assert query(conn, "SELECT count(*) FROM device_sync.run_history WHERE status = 'success'") == [(0,)]


# --- dag.test(), as `airflow dags test device_parameter_sync <future>` --------------------------------------


def test_dag_test_for_a_future_date_fails_at_once_and_the_next_real_run_still_applies(
    airflow_db: None, moto_server: str, conn: psycopg.Connection[Any], client: Any
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    seed(conn, now)
    future = now + timedelta(hours=2)

    dag_run = run_dag_test(future)
    states = {ti.task_id: (ti.state, ti.try_number) for ti in dag_run.get_task_instances()}
    assert dag_run.state == "failed"
    assert states["discover_active_devices"] == ("failed", 1)  # not retried: waiting cannot fix it
    assert states["cleanup_staging"][0] == "upstream_failed"  # its first setup staged nothing: nothing to drop
    assert staging_tables(conn) == []
    assert query(conn, "SELECT count(*) FROM iot_data.device_parameters") == [(0,)]
    ((status, applied, error),) = query(
        conn, "SELECT status, applied, error FROM device_sync.run_history WHERE run_id = %s", (dag_run.run_id,)
    )
    assert (status, applied) == ("failed", False)
    assert error.startswith("discover_active_devices: ")
    assert future.isoformat() in error and "after the database's now()" in error

    # The failed run stays dated in the future: /health names it and the REST call that clears it.
    api.reset_health_cache()
    response = client.get("/health")
    assert response.status_code == 503
    assert f"run {dag_run.run_id} (failed) has the future logical date" in response.json()["reason"]
    assert f"DELETE /api/v2/dags/{DAG_ID}/dagRuns/{dag_run.run_id}" in response.json()["reason"]
    delete_run(dag_run.run_id)  # as that call does
    api.reset_health_cache()
    assert "future_runs" not in client.get("/health").json()

    dag_run = run_dag_test(now)
    assert dag_run.state == "success"
    assert target(conn) == {("d1", "p1"): ("Device 1", "Temp"), ("d1", "p2"): ("Device 1", "Hum")}
    rows = query(conn, "SELECT applied, guard FROM device_sync.run_history WHERE run_id = %s", (dag_run.run_id,))
    assert rows == [(True, None)]
