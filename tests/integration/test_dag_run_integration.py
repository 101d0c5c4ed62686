"""Whole DAG runs through real Airflow (``dag.test()`` and ``airflow dags test``) against real PostgreSQL,
with the metrics read back from a real moto server over HTTP."""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import psycopg
import pytest

from conftest import REPO, free_port, run_dag_test
from device_sync import metrics
from device_sync.demo import load_demo_fleet

DAG_ID = "device_parameter_sync"
T = datetime(2026, 11, 30, 12, tzinfo=UTC)
NAMESPACE = "IoT/DeviceParameterSync"


@pytest.fixture
def cloudwatch(moto_server: str) -> Any:
    urllib.request.urlopen(urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST"))
    return boto3.client("cloudwatch", endpoint_url=moto_server, region_name="us-east-1")


@pytest.fixture
def run_dag(airflow_db: None, moto_server: str, conn: psycopg.Connection[Any]) -> Any:
    """Run the DAG with dag.test() for a logical date; return (run state, task states)."""

    def run(logical_date: datetime = T, **env: str) -> tuple[str, dict[str, str]]:
        conn.commit()  # end the test's own transaction: it must not hold locks while the DAG runs
        dag_run = run_dag_test(logical_date, **env)
        return dag_run.state, {ti.task_id: ti.state for ti in dag_run.get_task_instances()}

    return run


def rows(conn: psycopg.Connection[Any]) -> set[tuple[str, ...]]:
    return set(
        conn.execute("SELECT device_id, device_name, parameter_id, parameter_name FROM iot_data.device_parameters")
    )


def staging_tables(conn: psycopg.Connection[Any]) -> list[str]:
    query = "SELECT tablename FROM pg_tables WHERE schemaname = 'device_sync' AND starts_with(tablename, 'stage_')"
    return [name for (name,) in conn.execute(query)]


def published(cloudwatch: Any) -> dict[str, float]:
    now = datetime.now(UTC)
    return metrics.read_back(
        cloudwatch, namespace=NAMESPACE, stage="dev", since=now - timedelta(hours=1), until=now + timedelta(hours=1)
    )


def test_dag_run_syncs_the_demo_fleet_and_publishes_every_metric(
    run_dag: Any, conn: psycopg.Connection[Any], cloudwatch: Any
) -> None:
    load_demo_fleet(conn, T, devices=60, parameters=30, per_device=6, step_minutes=30)
    conn.commit()
    before = rows(conn)

    state, task_states = run_dag()

    assert state == "success"
    assert task_states.pop("fail_if_sync_failed") == "skipped"
    assert set(task_states.values()) == {"success"}
    after = rows(conn)
    sent = published(cloudwatch)
    assert set(sent) == set(metrics.METRICS)
    assert sent["SyncSuccess"] == 1
    assert sent["RowsInserted"] == len(after - before) - sent["RowsUpdated"] > 0
    assert sent["RowsDeleted"] == len(before - after) - sent["RowsUpdated"] > 0
    assert sent["RowsUpdated"] > 0
    assert sent["ActiveDevices"] == 54  # every 10th of 60 devices is inactive
    assert sent["RowsSkipped"] > 0
    assert staging_tables(conn) == []

    urllib.request.urlopen(urllib.request.Request(f"{cloudwatch.meta.endpoint_url}/moto-api/reset", method="POST"))
    state, _ = run_dag()
    assert state == "success"
    assert rows(conn) == after
    again = published(cloudwatch)
    assert (again["RowsInserted"], again["RowsDeleted"], again["RowsUpdated"]) == (0, 0, 0)


def seed_window_edges(conn: psycopg.Connection[Any]) -> None:
    """One active device with three parameters measured at the window's start, just inside its end, and at its end."""
    conn.execute("INSERT INTO iot_data.redshift_devices VALUES ('d1', 'Device 1', true)")
    conn.execute(
        "INSERT INTO iot_data.timescale_parameters VALUES ('p_start', 'start'), ('p_in', 'in'), ('p_end', 'end')"
    )
    conn.execute(
        "INSERT INTO iot_data.measurements VALUES ('d1', 'p_start', %(s)s, 1), ('d1', 'p_in', %(i)s, 1), "
        "('d1', 'p_end', %(e)s, 1)",
        {"s": T - timedelta(minutes=60), "i": T - timedelta(microseconds=1), "e": T},
    )
    conn.commit()


def test_dag_test_window_is_lookback_before_the_logical_date(run_dag: Any, conn: psycopg.Connection[Any]) -> None:
    seed_window_edges(conn)
    state, _ = run_dag(DEVICE_SYNC_LOOKBACK_MINUTES="60")
    assert state == "success"
    assert {row[2] for row in rows(conn)} == {"p_start", "p_in"}


def test_failed_step_publishes_sync_success_zero_and_fails_the_run(
    run_dag: Any, conn: psycopg.Connection[Any], cloudwatch: Any
) -> None:
    seed_window_edges(conn)
    conn.execute("DROP TABLE iot_data.timescale_parameters")
    conn.commit()

    state, task_states = run_dag()

    assert state == "failed"
    assert task_states["resolve_parameter_names"] == "failed"
    assert task_states["apply_changes"] == "upstream_failed"
    assert task_states["publish_metrics"] == "success"
    assert task_states["cleanup_staging"] == "success"
    assert task_states["fail_if_sync_failed"] == "failed"
    sent = published(cloudwatch)
    assert sent["SyncSuccess"] == 0
    assert "RowsInserted" not in sent
    assert sent["ActiveDevices"] == 1
    assert rows(conn) == set()
    assert staging_tables(conn) == []


def test_cloudwatch_outage_keeps_the_data_change_and_fails_only_publish_metrics(
    run_dag: Any, conn: psycopg.Connection[Any]
) -> None:
    seed_window_edges(conn)
    dead_endpoint = f"http://127.0.0.1:{free_port()}"
    aws = json.dumps({"conn_type": "aws", "extra": {"region_name": "us-east-1", "endpoint_url": dead_endpoint}})

    state, task_states = run_dag(AIRFLOW_CONN_AWS_DEFAULT=aws, DEVICE_SYNC_RETRIES="0")

    assert state == "failed"
    assert task_states["apply_changes"] == "success"
    assert task_states["publish_metrics"] == "failed"
    assert task_states["cleanup_staging"] == "success"
    assert task_states["fail_if_sync_failed"] == "failed"
    assert {row[2] for row in rows(conn)} == {"p_start", "p_in"}


def test_airflow_dags_test_cli_syncs_the_window_ending_at_the_given_date(
    airflow_db: None, moto_server: str, conn: psycopg.Connection[Any]
) -> None:
    seed_window_edges(conn)
    env = {**os.environ, "DEVICE_SYNC_LOOKBACK_MINUTES": "60"}
    result = subprocess.run(
        [str(REPO / ".venv/bin/airflow"), "dags", "test", DAG_ID, T.isoformat()],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd="/",
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert {row[2] for row in rows(conn)} == {"p_start", "p_in"}


def test_sharded_aggregation_with_the_skip_scan_gives_the_one_shard_result(
    run_dag: Any, conn: psycopg.Connection[Any], cloudwatch: Any
) -> None:
    """Three mapped aggregation tasks over the recommended index end with exactly the rows that one task
    scanning the window gives, and publish the same observed pair count."""
    load_demo_fleet(conn, T, devices=60, parameters=30, per_device=6, step_minutes=30)
    conn.commit()
    state, _ = run_dag()
    assert state == "success"
    one_shard, one_shard_pairs = rows(conn), published(cloudwatch)["ObservedPairs"]
    load_demo_fleet(conn, T, devices=60, parameters=30, per_device=6, step_minutes=30)
    conn.execute('CREATE INDEX ON iot_data.measurements (device_id, parameter_id, "time")')
    conn.commit()
    urllib.request.urlopen(urllib.request.Request(f"{cloudwatch.meta.endpoint_url}/moto-api/reset", method="POST"))

    dag_run = run_dag_test(T, DEVICE_SYNC_AGGREGATION_SHARDS="3")

    assert dag_run.state == "success"
    shards = [ti for ti in dag_run.get_task_instances() if ti.task_id == "aggregate_recent_measurements"]
    assert sorted((ti.map_index, ti.state) for ti in shards) == [(0, "success"), (1, "success"), (2, "success")]
    assert {ti.xcom_pull(task_ids=ti.task_id, map_indexes=ti.map_index)["method"] for ti in shards} == {"skip_scan"}
    assert rows(conn) == one_shard
    assert published(cloudwatch)["ObservedPairs"] == one_shard_pairs > 0
    assert staging_tables(conn) == []


def test_a_change_of_the_shard_count_during_a_run_changes_nothing_in_it(
    run_dag: Any, conn: psycopg.Connection[Any], cloudwatch: Any
) -> None:
    """DEVICE_SYNC_AGGREGATION_SHARDS is read once, by plan_aggregation_shards: changed to 3 right after that
    task (while the run goes on), the run still aggregates and combines exactly its 2 shards."""
    load_demo_fleet(conn, T, devices=40, parameters=20, per_device=5, step_minutes=30)
    conn.commit()

    def change_the_variable_after_the_plan(dag: Any) -> None:
        plan = dag.get_task("plan_aggregation_shards")
        planned = plan.python_callable

        def plan_then_change() -> Any:
            result = planned()
            os.environ["DEVICE_SYNC_AGGREGATION_SHARDS"] = "3"  # restored by run_dag_test after the run
            return result

        plan.python_callable = plan_then_change

    dag_run = run_dag_test(T, change_the_variable_after_the_plan, DEVICE_SYNC_AGGREGATION_SHARDS="2")

    assert dag_run.state == "success"
    states = {(ti.task_id, ti.map_index): ti.state for ti in dag_run.get_task_instances()}
    assert sorted(i for task_id, i in states if task_id == "aggregate_recent_measurements") == [0, 1]
    assert states[("resolve_parameter_names", -1)] == "success"
    assert len(rows(conn)) > 0
    assert staging_tables(conn) == []


DAILY_PARTITIONS = """
ALTER TABLE iot_data.measurements RENAME TO measurements_plain;
CREATE TABLE iot_data.measurements (LIKE iot_data.measurements_plain) PARTITION BY RANGE ("time");
CREATE TABLE iot_data.measurements_20261129 PARTITION OF iot_data.measurements
    FOR VALUES FROM ('2026-11-29') TO ('2026-11-30');
CREATE TABLE iot_data.measurements_20261130 PARTITION OF iot_data.measurements
    FOR VALUES FROM ('2026-11-30') TO ('2026-12-01');
CREATE TABLE iot_data.measurements_default PARTITION OF iot_data.measurements DEFAULT;
INSERT INTO iot_data.measurements SELECT * FROM iot_data.measurements_plain;
DROP TABLE iot_data.measurements_plain;
CREATE INDEX ON iot_data.measurements (device_id, parameter_id, "time");
ANALYZE iot_data.measurements;
"""


def test_dag_run_on_daily_partitions_reads_them_one_by_one_and_leaves_the_plain_tables_result(
    run_dag: Any, conn: psycopg.Connection[Any], moto_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The demo fleet as a plain table, then the same fleet in daily partitions (the window of the run at
    12:00 spans two of them): the same table at the end; the aggregation logs one line per partition."""
    results = []
    for layout in ("plain", "daily partitions"):
        load_demo_fleet(conn, T, devices=60, parameters=30, per_device=6, step_minutes=30)
        if layout == "daily partitions":
            conn.execute(DAILY_PARTITIONS)
        conn.execute("DROP SCHEMA IF EXISTS device_sync CASCADE")
        conn.commit()
        with caplog.at_level("INFO", logger="device_sync"):
            state, _ = run_dag()
        assert state == "success", layout
        results.append(rows(conn))
    assert results[0] == results[1] and results[0]
    partitions = {
        record.getMessage().split(":")[0] for record in caplog.records if record.getMessage().startswith("Partition ")
    }
    assert partitions == {"Partition iot_data.measurements_20261129", "Partition iot_data.measurements_20261130"}


TARGET_ASSET = "postgres://iot-db:5432/iot/iot_data/device_parameters"


def asset_events() -> list[dict[str, Any]]:
    """The extra of every event of the table's Asset, oldest first (Airflow's metadata database)."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = select(AssetEvent.extra).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
        return [
            dict(extra)
            for extra in session.scalars(query.where(AssetModel.uri == TARGET_ASSET).order_by(AssetEvent.id))
        ]


def test_the_table_asset_gets_an_event_only_from_a_run_that_changed_it(
    run_dag: Any, conn: psycopg.Connection[Any], moto_server: str
) -> None:
    load_demo_fleet(conn, T, devices=40, parameters=20, per_device=5, step_minutes=30)
    conn.commit()
    before = len(asset_events())

    state, task_states = run_dag()  # applies the fleet's drift
    assert (state, task_states["announce_change"]) == ("success", "success")
    events = asset_events()
    assert len(events) == before + 1
    changed = events[-1]
    assert changed["run_id"].startswith("manual__") and changed["window_end"] == T.isoformat()
    assert changed["window_start"] == (T - timedelta(days=1)).isoformat()
    assert changed["inserted"] + changed["deleted"] + changed["updated"] > 0

    state, task_states = run_dag(T + timedelta(minutes=1))  # the same data: nothing to change
    assert (state, task_states["announce_change"]) == ("success", "skipped")
    conn.execute("TRUNCATE iot_data.measurements")  # an empty window: a safety guard stops the run
    conn.commit()
    state, task_states = run_dag(T + timedelta(minutes=2))
    assert (state, task_states["apply_changes"], task_states["announce_change"]) == (
        "failed",
        "failed",
        "upstream_failed",
    )
    assert len(asset_events()) == before + 1


@pytest.fixture
def alerts(moto_server: str) -> Iterator[tuple[str, Any]]:
    """A moto SNS topic with an SQS queue subscribed; (topic ARN, a function that drains the queue's messages)."""
    sns = boto3.client("sns", endpoint_url=moto_server, region_name="us-east-1")
    sqs = boto3.client("sqs", endpoint_url=moto_server, region_name="us-east-1")
    name = f"device-sync-alerts-{uuid.uuid4().hex[:8]}"
    topic = sns.create_topic(Name=name)["TopicArn"]
    queue = sqs.create_queue(QueueName=name)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)

    def drain() -> list[dict[str, str]]:
        received = []
        while batch := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages"):
            for message in batch:
                body = json.loads(message["Body"])
                received.append({"subject": body.get("Subject", ""), "message": body["Message"]})
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
        return received

    yield topic, drain
    sns.delete_topic(TopicArn=topic)
    sqs.delete_queue(QueueUrl=queue)


def test_a_failed_run_sends_one_sns_message_and_the_next_success_a_recovery(
    run_dag: Any, conn: psycopg.Connection[Any], alerts: tuple[str, Any]
) -> None:
    topic, drain = alerts
    conn.execute("DROP SCHEMA IF EXISTS device_sync CASCADE")
    load_demo_fleet(conn, T, devices=40, parameters=20, per_device=5, step_minutes=30)
    conn.commit()
    assert run_dag(T, DEVICE_SYNC_ALERT_SNS_TOPIC_ARN=topic)[0] == "success"
    assert drain() == []  # a success after no failure says nothing

    conn.execute("TRUNCATE iot_data.measurements")  # an empty window: a safety guard stops the run
    conn.commit()
    failed_at = T + timedelta(minutes=1)
    state, task_states = run_dag(failed_at, DEVICE_SYNC_ALERT_SNS_TOPIC_ARN=topic)
    assert (state, task_states["apply_changes"]) == ("failed", "failed")
    (failure,) = drain()  # one message for the run, not one per task or attempt
    assert failure["subject"] == "device-sync dev: run failed in apply_changes"
    body = failure["message"]
    assert re.match(r"device-sync \(dev\): run manual__\S+ of device_parameter_sync FAILED\.\n", body), body
    assert f"Window: [{(failed_at - timedelta(days=1)).isoformat()}, {failed_at.isoformat()})" in body
    assert "Failed task: apply_changes" in body and "Guard: stale_measurements" in body
    assert "Error: " in body and len(body.split("Error: ")[1].splitlines()[0]) > 0
    assert "/dags/device_parameter_sync/runs/manual__" in body and "/device-sync/changes?run_id=manual__" in body

    load_demo_fleet(conn, T, devices=40, parameters=20, per_device=5, step_minutes=30)
    conn.commit()
    assert run_dag(T + timedelta(minutes=2), DEVICE_SYNC_ALERT_SNS_TOPIC_ARN=topic)[0] == "success"
    (recovery,) = drain()
    assert recovery["subject"] == "device-sync dev: recovered"
    assert "succeeded after a failed run: RECOVERED" in recovery["message"]
    assert run_dag(T + timedelta(minutes=3), DEVICE_SYNC_ALERT_SNS_TOPIC_ARN=topic)[0] == "success"
    assert drain() == []
