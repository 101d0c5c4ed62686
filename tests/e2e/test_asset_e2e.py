"""Airflow-native operations on a real scheduler: a downstream DAG scheduled on the table's documented Asset
URI runs after a run that changed iot_data.device_parameters, with the run's counts in the event, and not
after one that changed nothing; a failed run sends one SNS message (the DAG's failure callback, which the
dag-processor runs) and the next success a recovery, read from a moto SQS queue subscribed to the topic.
Every wait is bounded."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from stack_helpers import DAG_ID, set_paused, sns_queue, wait_until

from conftest import REPO, running_airflow_stack
from device_sync.demo import load_demo_fleet

CONSUMER = "device_parameters_consumer"
CONSUMER_DAG = """
from datetime import UTC, datetime

from airflow.sdk import Asset, dag, task


@dag(
    dag_id="device_parameters_consumer",
    schedule=[Asset("postgres://iot-db:5432/iot/iot_data/device_parameters")],
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
)
def device_parameters_consumer():
    @task
    def read_the_change(**context):
        (event,) = [e for events in context["triggering_asset_events"].values() for e in events]
        return dict(event.extra)

    read_the_change()


device_parameters_consumer()
"""


@pytest.fixture(scope="module")
def alert_queue(moto_server: str) -> tuple[str, Any]:
    return sns_queue(moto_server, "device-sync-e2e-alerts")


@pytest.fixture(scope="module")
def stack(moto_server: str, alert_queue: tuple[str, Any]) -> Iterator[Any]:
    dags = Path(tempfile.mkdtemp(prefix="device-sync-asset-dags-"))
    shutil.copy(REPO / "dags" / "device_parameter_sync.py", dags)
    (dags / "device_parameters_consumer.py").write_text(CONSUMER_DAG)
    try:
        with running_airflow_stack(
            AIRFLOW__CORE__DAGS_FOLDER=str(dags),
            DEVICE_SYNC_ALERT_SNS_TOPIC_ARN=alert_queue[0],
            DEVICE_SYNC_DEADLINE_MINUTES="1",
        ) as stack:
            yield stack
    finally:
        shutil.rmtree(dags, ignore_errors=True)


def runs_of(stack: Any, token: str, dag_id: str) -> list[dict[str, Any]]:
    _, body = stack.request("GET", f"/api/v2/dags/{dag_id}/dagRuns?order_by=run_after", token=token)
    return list(body.get("dag_runs", []))


def announcements(stack: Any, token: str) -> dict[str, str]:
    """The state of announce_change in every finished run of the DAG (None while any run is unfinished)."""
    producer = runs_of(stack, token, DAG_ID)
    if not producer or any(run["state"] not in ("success", "failed") for run in producer):
        return {}
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{{}}/taskInstances/announce_change"
    return {
        run["dag_run_id"]: stack.request("GET", path.format(run["dag_run_id"]), token=token)[1]["state"]
        for run in producer
    }


def test_a_consumer_dag_runs_after_a_changing_run_and_not_after_a_no_change_run(stack: Any) -> None:
    token = stack.token("admin")
    with psycopg.connect(stack.data_url, autocommit=True) as conn:
        load_demo_fleet(conn, datetime.now(UTC).replace(second=0, microsecond=0), devices=40, parameters=20)
    consumer_paused = stack.request("PATCH", f"/api/v2/dags/{CONSUMER}", {"is_paused": False}, token=token)
    assert consumer_paused[0] == 200, consumer_paused
    # Unpausing may add the latest scheduled run beside the manual one: whichever applies first changes the
    # table, the other finds nothing to change (or an older window).
    set_paused(stack, token, False)
    stack.request("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None}, token=token)
    announced = wait_until(lambda: announcements(stack, token), 300, "the DAG's runs did not finish")
    changed = [run_id for run_id, state in announced.items() if state == "success"]
    assert len(changed) == 1 and set(announced.values()) <= {"success", "skipped"}, announced
    consumed = wait_until(
        lambda: [run for run in runs_of(stack, token, CONSUMER) if run["state"] == "success"],
        120,
        "the consumer DAG did not run after a changing run",
    )
    assert len(consumed) == 1 and consumed[0]["run_type"] == "asset_triggered"
    xcom = f"/api/v2/dags/{CONSUMER}/dagRuns/{consumed[0]['dag_run_id']}/taskInstances/read_the_change"
    status, extra = stack.request("GET", f"{xcom}/xcomEntries/return_value", token=token)
    assert status == 200, extra
    event = extra["value"]
    assert event["run_id"] == changed[0]
    assert event["inserted"] + event["deleted"] + event["updated"] > 0

    again = stack.request("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None}, token=token)[1]
    assert stack.wait_for_run(DAG_ID, again["dag_run_id"], token)["state"] == "success"
    assert announcements(stack, token)[again["dag_run_id"]] == "skipped"
    time.sleep(15)  # several scheduler loops: an asset event would have queued a consumer run by now
    assert len(runs_of(stack, token, CONSUMER)) == 1
    set_paused(stack, token, True)


def test_a_failed_run_sends_one_message_and_the_next_success_a_recovery(
    stack: Any, alert_queue: tuple[str, Any]
) -> None:
    """Last in the module: runs after the asset test, whose successes were not preceded by a failure."""
    _, drain = alert_queue
    token = stack.token("admin")
    assert drain() == []
    with psycopg.connect(stack.data_url, autocommit=True) as conn:
        conn.execute("TRUNCATE iot_data.measurements")  # an empty window: a safety guard stops the run
    set_paused(stack, token, False)
    try:
        failed = stack.request("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None}, token=token)[1]
        assert stack.wait_for_run(DAG_ID, failed["dag_run_id"], token)["state"] == "failed"
        subjects = wait_until(drain, 90, "no SNS message after the failed run")
        assert subjects == ["device-sync dev: run failed in apply_changes"]
        with psycopg.connect(stack.data_url, autocommit=True) as conn:
            load_demo_fleet(conn, datetime.now(UTC).replace(second=0, microsecond=0), devices=40, parameters=20)
        fixed = stack.request("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None}, token=token)[1]
        assert stack.wait_for_run(DAG_ID, fixed["dag_run_id"], token)["state"] == "success"
        assert wait_until(drain, 90, "no recovery message") == ["device-sync dev: recovered"]
    finally:
        set_paused(stack, token, True)


def test_a_run_held_past_its_deadline_sends_a_deadline_alert(stack: Any, alert_queue: tuple[str, Any]) -> None:
    """DEVICE_SYNC_DEADLINE_MINUTES=1 and a run held by the writers' lock: Airflow's DeadlineAlert fires."""
    _, drain = alert_queue
    token = stack.token("admin")
    drain(deadlines=True)
    with psycopg.connect(stack.data_url, autocommit=True) as conn:
        load_demo_fleet(conn, datetime.now(UTC).replace(second=0, microsecond=0), devices=40, parameters=20)
    holder = psycopg.connect(stack.data_url, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(hashtextextended('device_sync:iot_data.device_parameters', 0))")
    set_paused(stack, token, False)
    try:
        held = stack.request("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None}, token=token)[1]
        subjects = wait_until(lambda: drain(deadlines=True), 240, "no deadline alert for the held run", interval=5)
        assert subjects == ["device-sync dev: run missed its deadline"]
        holder.close()
        assert stack.wait_for_run(DAG_ID, held["dag_run_id"], token)["state"] == "success"
    finally:
        holder.close()
        set_paused(stack, token, True)
