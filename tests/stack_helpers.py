"""Helpers of the end-to-end tests that drive a running Airflow stack (scripts/airflow_stack.py) over REST."""

from __future__ import annotations

import time
from typing import Any

import psutil
import psycopg

DAG_ID = "device_parameter_sync"


def set_paused(stack: Any, token: str, paused: bool, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:  # the dag-processor must have parsed the DAG first
        status, _ = stack.request("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": paused}, token=token)
        if status == 200:
            return
        if time.monotonic() > deadline:
            raise TimeoutError("the DAG never appeared in the api-server")
        time.sleep(2)


def runs(stack: Any, token: str, run_type: str) -> list[dict[str, Any]]:
    _, body = stack.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?run_type={run_type}&order_by=run_after", token=token)
    return list(body.get("dag_runs", []))


def wait_until(condition: Any, timeout: float, what: str, interval: float = 2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"{what} (after {timeout:.0f} s)")


def wait_idle(stack: Any, token: str, timeout: float = 120) -> None:
    """Settle the DAG (paused by the tests between steps): runs the one-minute schedule left queued or running
    are marked failed, so that no run of the previous step touches the data of the next."""

    def active() -> list[str]:
        _, body = stack.request(
            "GET", f"/api/v2/dags/{DAG_ID}/dagRuns?state=queued&state=running&limit=100", token=token
        )
        return [run["dag_run_id"] for run in body.get("dag_runs", [])]

    for run_id in active():
        # A run whose teardown (cleanup_staging) has not run stays running when marked failed, and the scheduler
        # does not examine the runs of a paused DAG: settle the teardown first (404 when it has no instance yet).
        stack.request(
            "PATCH",
            f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/cleanup_staging",
            {"new_state": "skipped"},
            token=token,
        )
        stack.request("PATCH", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}", {"state": "failed"}, token=token)
    wait_until(lambda: not active(), timeout, "runs still active")


def apply_backend(conn: psycopg.Connection[Any]) -> tuple[int, int] | None:
    """(backend pid, client port) of a session waiting for our row lock inside apply_changes."""
    row = conn.execute(
        "SELECT pid, client_port FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND wait_event IN ('transactionid', 'tuple') "
        "AND query ILIKE '%%device_parameters%%' AND pid <> pg_backend_pid()"
    ).fetchone()
    return (int(row[0]), int(row[1])) if row else None


def process_on_port(port: int) -> psutil.Process | None:
    for connection in psutil.net_connections(kind="tcp"):
        if connection.laddr and connection.laddr.port == port and connection.pid:
            return psutil.Process(connection.pid)
    return None


def apply_attempts(stack: Any, token: str) -> list[tuple[str, str, int]]:
    """(run id, state, try number) of apply_changes in every run of the DAG."""
    _, body = stack.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?limit=100", token=token)
    attempts = []
    for run in body.get("dag_runs", []):
        status, ti = stack.request(
            "GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances/apply_changes", token=token
        )
        if status == 200:
            attempts.append((run["dag_run_id"], ti["state"], int(ti["try_number"])))
    return attempts


def sns_queue(moto_server: str, name: str) -> tuple[str, Any]:
    """A moto SNS topic ``name`` with an SQS queue subscribed: (topic ARN, a function that drains the queue
    and returns the subjects received since its last call; deadline alerts only when asked, since a slow run
    of another test may cross a short deadline)."""
    import json

    import boto3

    sns = boto3.client("sns", endpoint_url=moto_server, region_name="us-east-1")
    sqs = boto3.client("sqs", endpoint_url=moto_server, region_name="us-east-1")
    topic = sns.create_topic(Name=name)["TopicArn"]
    queue = sqs.create_queue(QueueName=name)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)

    def drain(deadlines: bool = False) -> list[str]:
        received = []
        while batch := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages"):
            for message in batch:
                received.append(json.loads(message["Body"]).get("Subject", ""))
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
        return [subject for subject in received if deadlines or "deadline" not in subject]

    return topic, drain
