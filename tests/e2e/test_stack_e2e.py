"""End to end against a real local Airflow (api-server, scheduler, dag-processor, triggerer; LocalExecutor)
with a one-minute schedule: scheduled runs, backfills run by the scheduler, the health endpoint, and a
worker killed with SIGKILL in the middle of apply_changes. Every wait is bounded."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psutil
import psycopg
import pytest
from stack_helpers import (
    DAG_ID,
    apply_attempts,
    apply_backend,
    process_on_port,
    runs,
    set_paused,
    sns_queue,
    wait_idle,
    wait_until,
)

from conftest import running_airflow_stack
from device_sync import api
from device_sync.demo import load_demo_fleet


@pytest.fixture(scope="module")
def alert_queue(moto_server: str) -> tuple[str, Any]:
    return sns_queue(moto_server, "device-sync-e2e-stack-alerts")


@pytest.fixture(scope="module")
def stack(moto_server: str, alert_queue: tuple[str, Any]) -> Iterator[Any]:
    with running_airflow_stack(
        ("api-server", "scheduler", "dag-processor", "triggerer"),
        DEVICE_SYNC_ALERT_SNS_TOPIC_ARN=alert_queue[0],
        DEVICE_SYNC_SCHEDULE="* * * * *",
        DEVICE_SYNC_LOOKBACK_MINUTES="1440",
        DEVICE_SYNC_RETRY_DELAY_SECONDS="3",
    ) as stack:
        print(f"\nlocal Airflow stack healthy after {stack.start_seconds:.0f} s")
        yield stack


@pytest.fixture(scope="module")
def token(stack: Any) -> str:
    return str(stack.token("admin"))


@pytest.fixture(scope="module")
def data(stack: Any) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(stack.data_url, autocommit=True) as conn:
        load_demo_fleet(conn, datetime.now(UTC).replace(second=0, microsecond=0), devices=60, parameters=20)
        yield conn


def test_scheduled_runs_happen_on_their_own_and_the_health_endpoint_follows(
    stack: Any, token: str, data: psycopg.Connection[Any]
) -> None:
    started = datetime.now(UTC)
    set_paused(stack, token, False)
    try:
        scheduled = wait_until(
            lambda: [run for run in runs(stack, token, "scheduled") if run["state"] == "success"],
            240,
            "no scheduled run succeeded",
        )
    finally:
        set_paused(stack, token, True)
    wait_idle(stack, token)
    assert scheduled[0]["dag_run_id"].startswith("scheduled__")
    history = data.execute(
        "SELECT status, applied, inserted + deleted + updated, started_at FROM device_sync.run_history "
        "WHERE run_id = %s",
        (scheduled[0]["dag_run_id"],),
    ).fetchone()
    assert history is not None
    assert history[:2] == ("success", True)
    applied = data.execute("SELECT count(*) FROM device_sync.change_log").fetchone()
    assert applied is not None and applied[0] > 0
    assert history[3] >= started - timedelta(minutes=1)

    time.sleep(api.HEALTH_CACHE_SECONDS + 0.5)  # past any answer the api-server cached earlier
    status, body = stack.request("GET", "/device-sync/health")
    assert status == 200, body
    data.execute("UPDATE device_sync.run_history SET finished_at = finished_at - interval '1 day'")
    time.sleep(api.HEALTH_CACHE_SECONDS + 0.5)
    status, body = stack.request("GET", "/device-sync/health")
    assert status == 503 and body["reason"].startswith("stale")
    data.execute("UPDATE device_sync.run_history SET finished_at = finished_at + interval '1 day'")


def test_a_backfill_runs_oldest_first_records_history_and_does_not_move_the_table_back(
    stack: Any, token: str, data: psycopg.Connection[Any]
) -> None:
    wait_idle(stack, token)
    before = set(data.execute("SELECT *, xmin::text FROM iot_data.device_parameters"))
    newest_applied = data.execute(
        "SELECT max(window_end) FROM device_sync.run_history WHERE applied AND status = 'success'"
    ).fetchone()
    assert newest_applied is not None and newest_applied[0] is not None
    start = (newest_applied[0] - timedelta(minutes=30)).replace(second=0, microsecond=0)
    end = start + timedelta(minutes=2)  # three fire times of a one-minute cron, both ends included
    set_paused(stack, token, False)  # backfills run through the scheduler, on an unpaused DAG
    try:
        stack.airflow(
            "backfill",
            "create",
            "--dag-id",
            DAG_ID,
            "--from-date",
            start.isoformat(),
            "--to-date",
            end.isoformat(),
            "--max-active-runs",
            "1",
        )
        backfill = wait_until(
            lambda: (
                (found := runs(stack, token, "backfill"))
                and len(found) == 3
                and all(run["state"] in ("success", "failed") for run in found)
                and found
            ),
            300,
            "the backfill did not finish three runs",
        )
    finally:
        set_paused(stack, token, True)
    wait_idle(stack, token)

    assert [run["state"] for run in backfill] == ["success"] * 3
    started = sorted(backfill, key=lambda run: run["start_date"])
    assert [run["logical_date"] for run in started] == sorted(run["logical_date"] for run in backfill)  # oldest first
    rows = data.execute(
        "SELECT applied, guard FROM device_sync.run_history WHERE run_id = ANY(%s)",
        ([run["dag_run_id"] for run in backfill],),
    ).fetchall()
    assert rows == [(False, "older_window")] * 3
    after = set(data.execute("SELECT *, xmin::text FROM iot_data.device_parameters"))
    assert after == before


def test_a_worker_killed_mid_apply_leaves_the_table_whole_and_the_retry_completes(
    stack: Any, token: str, data: psycopg.Connection[Any]
) -> None:
    wait_idle(stack, token)
    retried_before = {run_id for run_id, _, tries in apply_attempts(stack, token) if tries >= 2}
    load_demo_fleet(data, datetime.now(UTC).replace(second=0, microsecond=0), devices=60, parameters=20)
    before = set(data.execute("SELECT * FROM iot_data.device_parameters"))
    blocker = psycopg.connect(stack.data_url)  # holds a row that apply_changes must rename
    blocker.execute("SELECT * FROM iot_data.device_parameters WHERE device_id = 'dev-00003' FOR UPDATE")
    set_paused(stack, token, False)  # the scheduler starts a run within a minute
    try:
        _, port = wait_until(lambda: apply_backend(data), 180, "apply_changes never reached the locked row")
        worker = wait_until(lambda: process_on_port(port), 10, "no process holds the apply's connection")
        os.kill(worker.pid, signal.SIGKILL)
        time.sleep(2)  # the server sees the connection drop and rolls the transaction back
        assert set(data.execute("SELECT * FROM iot_data.device_parameters")) == before
        blocker.rollback()  # let the retry through
        retried = wait_until(
            lambda: [
                attempt
                for attempt in apply_attempts(stack, token)
                if attempt[2] >= 2 and attempt[0] not in retried_before and attempt[1] in ("success", "failed")
            ],
            240,
            "no retried apply_changes finished",
            interval=5,
        )
    finally:
        blocker.close()
        set_paused(stack, token, True)
    run_id, state, _ = retried[0]
    assert state == "success"
    history = data.execute(
        "SELECT status, applied FROM device_sync.run_history WHERE run_id = %s", (run_id,)
    ).fetchone()
    assert history == ("success", True)
    renamed = data.execute(
        "SELECT count(*) FROM iot_data.device_parameters WHERE device_name LIKE 'old name of %%'"
    ).fetchone()
    assert renamed == (0,)  # the retry applied the whole delta, renames included


def test_a_future_dated_cli_run_never_holds_the_dag_health_names_it_and_rest_deletes_it(
    stack: Any, token: str, data: psycopg.Connection[Any], alert_queue: tuple[str, Any]
) -> None:
    """`airflow dags trigger --logical-date <2031>` passes no REST guard: the scheduler's listener fails the run
    as it starts, a manual run made right after it succeeds, /health names it until it is deleted over REST."""
    wait_idle(stack, token)
    alert_queue[1]()  # forget earlier alerts
    load_demo_fleet(data, datetime.now(UTC).replace(second=0, microsecond=0), devices=60, parameters=20)
    future_id = "manual__future_from_the_cli"
    set_paused(stack, token, False)
    try:
        stack.airflow("dags", "trigger", DAG_ID, "--logical-date", "2031-01-01T00:00:00+00:00", "--run-id", future_id)
        status, manual = stack.request("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None}, token=token)
        assert status == 200, manual
        finished = stack.wait_for_run(DAG_ID, manual["dag_run_id"], token, timeout=300)
        status, future = stack.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{future_id}", token=token)
    finally:
        set_paused(stack, token, True)
    wait_idle(stack, token)
    assert finished["state"] == "success"
    assert status == 200 and future["state"] == "failed", future
    held = datetime.fromisoformat(future["end_date"]) - datetime.fromisoformat(future["start_date"])
    assert held < timedelta(seconds=30)  # failed as the scheduler started it
    assert wait_until(alert_queue[1], 60, "no SNS alert about the future run") == [
        "device-sync dev: run with a future logical date failed"
    ]

    time.sleep(api.HEALTH_CACHE_SECONDS + 0.5)
    status, body = stack.request("GET", "/device-sync/health")
    assert status == 503, body
    assert future_id in body["reason"] and f"DELETE /api/v2/dags/{DAG_ID}/dagRuns/{future_id}" in body["reason"]
    assert [run["run_id"] for run in body["future_runs"]] == [future_id]

    status, _ = stack.request("DELETE", f"/api/v2/dags/{DAG_ID}/dagRuns/{future_id}", token=token)
    assert status == 204
    time.sleep(api.HEALTH_CACHE_SECONDS + 0.5)
    status, body = stack.request("GET", "/device-sync/health")
    assert "future_runs" not in body and status == 200, body


def test_a_future_dated_run_left_running_by_a_scheduler_without_the_plugin_is_cleared_over_rest(
    stack: Any, token: str
) -> None:
    """The runbook's way out for a run that is already running (started before the plugin was installed): skip
    its pending teardown, mark it failed, delete it; all through the REST API."""
    wait_idle(stack, token)
    run_id = "manual__future_left_running"
    stack.airflow("dags", "trigger", DAG_ID, "--logical-date", "2031-02-01T00:00:00+00:00", "--run-id", run_id)
    # What a scheduler without the plugin leaves: the run started (it holds a slot), no task ever scheduled.
    # The DAG stays paused, so this scheduler never starts (and never fails) it itself.
    metadata_url = psycopg.conninfo.make_conninfo(stack.admin_url, dbname=stack.metadata_db)
    with psycopg.connect(metadata_url, autocommit=True) as meta:
        meta.execute(
            "UPDATE dag_run SET state = 'running', start_date = now() WHERE dag_id = %s AND run_id = %s",
            (DAG_ID, run_id),
        )
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}"
    assert stack.request("DELETE", path, token=token)[0] == 409  # Airflow deletes no running run
    status, body = stack.request(
        "PATCH", f"{path}/taskInstances/cleanup_staging", {"new_state": "skipped"}, token=token
    )
    assert status == 200, body
    status, body = stack.request("PATCH", path, {"state": "failed"}, token=token)
    assert status == 200 and body["state"] == "failed", body
    assert stack.request("DELETE", path, token=token)[0] == 204
    assert stack.request("GET", path, token=token)[0] == 404


def test_stop_ends_every_process_the_stack_started(stack: Any) -> None:
    """Last in this module: `make airflow-stop` stops by the recorded pids, process groups included."""
    recorded = [int(pid) for pid in json.loads((stack.home / "pids").read_text()).values()]
    family = {pid for pid in recorded} | {
        child.pid for pid in recorded for child in psutil.Process(pid).children(recursive=True)
    }
    assert len(family) > len(recorded)  # workers, gunicorn/uvicorn children…
    started = time.monotonic()
    stack.stop()
    print(f"stack stopped in {time.monotonic() - started:.0f} s")
    assert not (stack.home / "pids").exists()
    alive = [pid for pid in family if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    assert alive == []
