"""A tripped mass-delete guard asks a human, on a real scheduler and api-server (LocalExecutor), answered
through Airflow's own HITL REST endpoints (the browser test answers one in the UI):

- Approve (admin) applies the mass delete; the viewer may read the question but not answer it (403);
- Reject fails the run as the guard always did (history row naming who rejected, MassDeleteBlocked=1);
- no answer within DEVICE_SYNC_APPROVAL_TIMEOUT_MINUTES (1 here) is a Reject;
- a delta that changed between the question and the answer is not applied, and the run says so.

The schedule is yearly so that no scheduled run asks a question of its own during the tests. Every wait is
bounded."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import boto3
import psycopg
import pytest
from stack_helpers import DAG_ID, set_paused, sns_queue, wait_until

from conftest import running_airflow_stack
from device_sync import metrics
from device_sync.demo import load_demo_fleet

TASK = "approve_mass_delete"
GHOSTS = 2000  # rows of devices that report nothing: deleting them is far above DEVICE_SYNC_MAX_DELETE_FRACTION


@pytest.fixture(scope="module")
def alert_queue(moto_server: str) -> tuple[str, Any]:
    return sns_queue(moto_server, "device-sync-e2e-approval-alerts")


@pytest.fixture(scope="module")
def stack(moto_server: str, alert_queue: tuple[str, Any]) -> Iterator[Any]:
    with running_airflow_stack(
        DEVICE_SYNC_ALERT_SNS_TOPIC_ARN=alert_queue[0],
        DEVICE_SYNC_SCHEDULE="0 0 1 1 *",
        DEVICE_SYNC_APPROVAL_TIMEOUT_MINUTES="1",
        # how often the scheduler resolves unanswered questions whose time is up (default 15 s)
        AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL="5",
    ) as stack:
        token = stack.token("admin")
        load_fleet(stack)  # the sources and the table exist before the first run
        set_paused(stack, token, False)
        # Unpausing starts the latest yearly run (an old window: the stale-measurements guard fails it).
        wait_until(lambda: settled(stack, token), 240, "the run started by unpausing did not finish")
        yield stack


def load_fleet(stack: Any) -> None:
    with psycopg.connect(stack.data_url, autocommit=True) as conn:
        load_demo_fleet(conn, datetime.now(UTC).replace(second=0, microsecond=0), devices=40, parameters=20)


def settled(stack: Any, token: str) -> bool:
    _, body = stack.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns", token=token)
    runs = body.get("dag_runs", [])
    return bool(runs) and all(run["state"] in ("success", "failed") for run in runs)


@pytest.fixture
def tripping_run(stack: Any) -> tuple[str, str]:
    """Demo data plus GHOSTS rows nobody reports; a manual run triggered, waiting in approve_mass_delete.
    Returns (admin token, run id)."""
    token = stack.token("admin")
    load_fleet(stack)
    with psycopg.connect(stack.data_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO iot_data.device_parameters (device_id, device_name, parameter_id, parameter_name) "
            "SELECT 'ghost-' || g, 'Ghost', 'p', 'Param' FROM generate_series(1, %s) g",
            (GHOSTS,),
        )
    status, run = stack.request("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None}, token=token)
    assert status == 200, run
    run_id = run["dag_run_id"]
    try:
        wait_until(lambda: task_state(stack, token, run_id) == "awaiting_input", 180, "the run never asked")
    except TimeoutError:
        _, tis = stack.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances", token=token)
        states = [(ti["task_id"], ti["state"]) for ti in tis["task_instances"]]
        raise TimeoutError(f"the run never asked: {states}") from None
    return token, run_id


def task_state(stack: Any, token: str, run_id: str, task_id: str = TASK) -> str | None:
    _, ti = stack.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}", token=token)
    return ti.get("state") if isinstance(ti, dict) else None


def hitl_path(run_id: str) -> str:
    return f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{TASK}/-1/hitlDetails"


def answer(stack: Any, token: str, run_id: str, option: str) -> tuple[int, Any]:
    return stack.request("PATCH", hitl_path(run_id), {"chosen_options": [option], "params_input": {}}, token=token)


def ghosts_left(stack: Any) -> int:
    with psycopg.connect(stack.data_url) as conn:
        row = conn.execute("SELECT count(*) FROM iot_data.device_parameters WHERE device_id LIKE 'ghost-%'")
        return int(row.fetchone()[0])  # type: ignore[index]


def history(stack: Any, run_id: str) -> tuple[Any, ...]:
    with psycopg.connect(stack.data_url) as conn:
        row = conn.execute(
            "SELECT status, applied, guard, error, deleted FROM device_sync.run_history WHERE run_id = %s", (run_id,)
        ).fetchone()
    assert row is not None, f"no history row for {run_id}"
    return row


def test_an_approved_mass_delete_is_applied_and_only_editors_may_answer(stack: Any, tripping_run: Any) -> None:
    token, run_id = tripping_run
    status, question = stack.request("GET", hitl_path(run_id), token=token)
    assert status == 200, question
    assert question["options"] == ["Approve", "Reject"] and question["defaults"] == ["Reject"]
    assert question["subject"].startswith("device-sync dev: approve deleting ")
    assert "| would insert | would update | would delete | table rows | share deleted |" in question["body"]
    lines = question["body"].splitlines()
    first = lines.index("| device_id | parameter_id | device name | parameter name |") + 2
    assert len(list(itertools.takewhile(lambda line: line.startswith("| "), lines[first:]))) == 10  # deleted pairs
    assert "/device-sync/changes/pending?run_id=" in question["body"]
    status, pending = stack.request(
        "GET", f"/device-sync/changes/pending?run_id={quote(run_id, safe='')}&limit=5", token=token
    )
    assert status == 200 and len(pending["changes"]) == 5 and pending["has_more"], pending

    viewer = stack.token("viewer")
    assert stack.request("GET", hitl_path(run_id), token=viewer)[0] == 200  # may read the question
    assert answer(stack, viewer, run_id, "Approve")[0] == 403  # may not answer it
    assert task_state(stack, token, run_id) == "awaiting_input"

    status, answered = answer(stack, token, run_id, "Approve")
    assert status == 200, answered
    assert stack.wait_for_run(DAG_ID, run_id, token)["state"] == "success"
    assert ghosts_left(stack) == 0
    state, applied, guard, error, deleted = history(stack, run_id)
    assert (state, applied, guard, error) == ("success", True, None, None)
    assert deleted >= GHOSTS


def test_a_rejected_mass_delete_fails_the_run_as_the_guard_always_did(
    stack: Any, tripping_run: Any, moto_server: str, alert_queue: tuple[str, Any]
) -> None:
    _, drain = alert_queue
    drain()  # what earlier tests sent
    token, run_id = tripping_run
    assert answer(stack, token, run_id, "Reject")[0] == 200
    assert stack.wait_for_run(DAG_ID, run_id, token)["state"] == "failed"
    assert task_state(stack, token, run_id) == "success"  # the answer is data; apply_changes fails
    assert task_state(stack, token, run_id, "apply_changes") == "failed"
    assert ghosts_left(stack) == GHOSTS
    state, applied, guard, error, _ = history(stack, run_id)
    assert (state, applied, guard) == ("failed", False, "mass_delete")
    assert "mass delete blocked" in error and "Rejected by admin in approve_mass_delete." in error
    cloudwatch = boto3.client("cloudwatch", endpoint_url=moto_server, region_name="us-east-1")
    now = datetime.now(UTC)
    sent = metrics.read_back(
        cloudwatch, namespace="IoT/DeviceParameterSync", stage="dev", since=now - timedelta(minutes=10),
        until=now + timedelta(minutes=1),
    )  # fmt: skip
    assert sent["MassDeleteBlocked"] == 1
    assert wait_until(drain, 90, "no SNS message after the rejected run") == [
        "device-sync dev: run failed in apply_changes"
    ]


def test_no_answer_in_time_is_a_reject(stack: Any, tripping_run: Any) -> None:
    token, run_id = tripping_run
    asked_at = time.monotonic()
    assert stack.wait_for_run(DAG_ID, run_id, token, timeout=180)["state"] == "failed"
    assert time.monotonic() - asked_at >= 30  # it waited for the (one-minute) timeout, not failed at once
    assert ghosts_left(stack) == GHOSTS
    _, _, guard, error, _ = history(stack, run_id)
    assert guard == "mass_delete" and "No answer in approve_mass_delete in time." in error


def test_a_delta_that_changed_after_the_question_is_not_applied(stack: Any, tripping_run: Any) -> None:
    token, run_id = tripping_run
    with psycopg.connect(stack.data_url, autocommit=True) as conn:
        conn.execute("INSERT INTO iot_data.device_parameters VALUES ('ghost-late', 'Ghost', 'p', 'Param')")
    assert answer(stack, token, run_id, "Approve")[0] == 200
    assert stack.wait_for_run(DAG_ID, run_id, token)["state"] == "failed"
    assert ghosts_left(stack) == GHOSTS + 1
    _, applied, guard, error, _ = history(stack, run_id)
    assert (applied, guard) == (False, "mass_delete")
    assert "the delta changed after it was approved" in error
