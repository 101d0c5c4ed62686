"""The safety guards against real PostgreSQL and through real Airflow runs: the mass-delete circuit breaker,
the stale-measurements guard and forward-only applies, each with its override, history row and metric."""

from __future__ import annotations

import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import psycopg
import pytest
from airflow.dag_processing.dagbag import DagBag

from conftest import REPO
from device_sync import metrics, sync
from device_sync.config import load_settings
from device_sync.guards import GuardTripped
from device_sync.staging import StagingTables
from device_sync.window import Window
from source_data import one_parameter_fleet

DAG_ID = "device_parameter_sync"
T = datetime(2026, 11, 30, 12, tzinfo=UTC)
NAMESPACE = "IoT/DeviceParameterSync"


def fleet(conn: psycopg.Connection[Any], *, devices: int, reporting: int, measured_at: datetime = T) -> None:
    one_parameter_fleet(conn, devices=devices, reporting=reporting, measured_at=measured_at)


def run_sync(conn: psycopg.Connection[Any], end: datetime = T, run_id: str = "run", **options: Any) -> dict[str, Any]:
    settings = load_settings()
    staging = StagingTables.for_run(settings.staging_schema, DAG_ID, run_id)
    return sync.sync_once(conn, settings, staging, Window.ending_at(end, 60), run_id=run_id, **options)


def table_size(conn: psycopg.Connection[Any]) -> int:
    return int(conn.execute("SELECT count(*) FROM iot_data.device_parameters").fetchone()[0])  # type: ignore[index]


def history(conn: psycopg.Connection[Any], run_id: str) -> tuple[Any, ...] | None:
    return conn.execute(
        "SELECT status, applied, guard, error, deleted FROM device_sync.run_history WHERE run_id = %s", (run_id,)
    ).fetchone()


# --- mass delete -------------------------------------------------------------------------------------------


def test_mass_delete_is_blocked_with_the_numbers_and_how_to_override(conn: psycopg.Connection[Any]) -> None:
    fleet(conn, devices=200, reporting=140)  # 60 of 200 rows (30 %) would go

    with pytest.raises(GuardTripped) as tripped:
        run_sync(conn)

    assert tripped.value.guard == "mass_delete"
    message = str(tripped.value)
    assert "would delete 60 of 200 rows (30%)" in message
    assert "DEVICE_SYNC_MAX_DELETE_FRACTION=0.25" in message
    assert '"allow_mass_delete": true' in message
    assert table_size(conn) == 200
    assert conn.execute("SELECT count(*) FROM device_sync.change_log").fetchone() == (0,)


def test_allow_mass_delete_accepts_it_for_one_run(conn: psycopg.Connection[Any]) -> None:
    fleet(conn, devices=200, reporting=140)
    summary = run_sync(conn, allow_mass_delete=True)
    assert summary["deleted"] == 60
    assert table_size(conn) == 140


def test_deletes_up_to_the_fraction_pass(conn: psycopg.Connection[Any]) -> None:
    fleet(conn, devices=200, reporting=150)  # exactly 25 %
    assert run_sync(conn)["deleted"] == 50


def test_small_tables_are_not_guarded_below_the_minimum_rows(conn: psycopg.Connection[Any]) -> None:
    fleet(conn, devices=99, reporting=9)  # 91 % of a table under DEVICE_SYNC_MASS_DELETE_MIN_ROWS=100
    assert run_sync(conn)["deleted"] == 90


def test_fraction_and_minimum_come_from_the_environment(
    conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEVICE_SYNC_MAX_DELETE_FRACTION", "0.5")
    monkeypatch.setenv("DEVICE_SYNC_MASS_DELETE_MIN_ROWS", "10")
    fleet(conn, devices=20, reporting=9)  # 55 % of 20 rows
    with pytest.raises(GuardTripped, match="would delete 11 of 20 rows"):
        run_sync(conn)


# --- stale measurements ------------------------------------------------------------------------------------


def test_stale_measurements_fail_instead_of_deleting_everything(conn: psycopg.Connection[Any]) -> None:
    fleet(conn, devices=20, reporting=20, measured_at=T - timedelta(hours=5))  # nothing in [T - 1h, T)

    with pytest.raises(GuardTripped) as tripped:
        run_sync(conn)

    assert tripped.value.guard == "stale_measurements"
    assert "measurements are stale" in str(tripped.value)
    assert "2026-11-30 06:55:00" in str(tripped.value)  # the newest measurement
    assert table_size(conn) == 20


def test_an_empty_window_on_an_empty_table_is_fine(conn: psycopg.Connection[Any]) -> None:
    conn.execute("INSERT INTO iot_data.redshift_devices VALUES ('d1', 'Device 1', true)")
    conn.commit()
    assert run_sync(conn)["applied"] is True


def test_allow_mass_delete_also_accepts_an_empty_window(conn: psycopg.Connection[Any]) -> None:
    fleet(conn, devices=20, reporting=20, measured_at=T - timedelta(hours=5))
    assert run_sync(conn, allow_mass_delete=True)["deleted"] == 20


# --- forward only ------------------------------------------------------------------------------------------


def test_an_older_window_records_its_delta_but_applies_nothing(conn: psycopg.Connection[Any]) -> None:
    fleet(conn, devices=10, reporting=10)
    run_sync(conn, T, "today")
    conn.execute("DELETE FROM iot_data.measurements WHERE device_id = 'd1'")  # d1 would go in a new run
    conn.execute("INSERT INTO iot_data.measurements VALUES ('d1', 'p', %s, 1)", (T - timedelta(hours=30),))
    conn.commit()
    before = set(conn.execute("SELECT *, xmin::text FROM iot_data.device_parameters"))

    summary = run_sync(conn, T - timedelta(hours=1), "backfill")

    assert (summary["applied"], summary["guard"]) == (False, "older_window")
    assert set(conn.execute("SELECT *, xmin::text FROM iot_data.device_parameters")) == before
    assert history(conn, "backfill") == ("success", False, "older_window", None, 10)


def test_force_apply_applies_an_older_window(conn: psycopg.Connection[Any]) -> None:
    fleet(conn, devices=10, reporting=10)
    run_sync(conn, T, "today")
    conn.execute("UPDATE iot_data.redshift_devices SET device_name = 'Renamed' WHERE device_id = 'd2'")
    conn.commit()
    summary = run_sync(conn, T - timedelta(minutes=3), "late", force_apply=True)
    assert (summary["applied"], summary["updated"]) == (True, 1)


def test_the_same_or_a_newer_window_applies_as_usual(conn: psycopg.Connection[Any]) -> None:
    fleet(conn, devices=10, reporting=10)
    run_sync(conn, T, "first")
    assert run_sync(conn, T, "same")["applied"] is True
    assert run_sync(conn, T + timedelta(minutes=5), "newer")["applied"] is True


# --- through Airflow ---------------------------------------------------------------------------------------


@pytest.fixture
def cloudwatch(moto_server: str) -> Any:
    urllib.request.urlopen(urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST"))
    return boto3.client("cloudwatch", endpoint_url=moto_server, region_name="us-east-1")


def dag_run(logical_date: datetime, conf: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    bag = DagBag(dag_folder=str(REPO / "dags"))
    run = bag.dags[DAG_ID].test(logical_date=logical_date, run_conf=conf)
    return run.state, {ti.task_id: ti for ti in run.get_task_instances()}


def published(cloudwatch: Any) -> dict[str, float]:
    now = datetime.now(UTC)
    return metrics.read_back(
        cloudwatch, namespace=NAMESPACE, stage="dev", since=now - timedelta(hours=1), until=now + timedelta(hours=1)
    )


def test_a_tripped_guard_fails_the_run_at_once_records_it_and_publishes_the_metric(
    airflow_db: None, conn: psycopg.Connection[Any], cloudwatch: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEVICE_SYNC_LOOKBACK_MINUTES", "60")
    fleet(conn, devices=200, reporting=100)

    state, tis = dag_run(T)

    assert state == "failed"
    assert tis["apply_changes"].state == "failed"
    assert tis["apply_changes"].try_number == 1  # a guard is not a fault: no retries
    # A foreground dag.test() run asks no human (no scheduler would enforce the answer's timeout).
    assert tis["approve_mass_delete"].state == "success"
    assert tis["approve_mass_delete"].xcom_pull(task_ids="approve_mass_delete") == {"asked": False}
    assert tis["publish_metrics"].state == "success"
    sent = published(cloudwatch)
    assert (sent["MassDeleteBlocked"], sent["SyncSuccess"]) == (1, 0)
    assert sent["StaleMeasurementsBlocked"] == sent["OlderWindowNotApplied"] == 0
    assert table_size(conn) == 200
    row = conn.execute("SELECT status, guard, error FROM device_sync.run_history").fetchone()
    assert row is not None and row[:2] == ("failed", "mass_delete")
    assert "would delete 100 of 200 rows" in row[2]

    urllib.request.urlopen(urllib.request.Request(f"{cloudwatch.meta.endpoint_url}/moto-api/reset", method="POST"))
    state, _ = dag_run(T + timedelta(minutes=1), {"allow_mass_delete": True})
    assert state == "success"
    assert table_size(conn) == 100
    assert published(cloudwatch)["MassDeleteBlocked"] == 0


def test_a_backfill_over_past_intervals_leaves_history_rows_and_an_untouched_table(
    airflow_db: None, conn: psycopg.Connection[Any], cloudwatch: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEVICE_SYNC_LOOKBACK_MINUTES", "1440")
    fleet(conn, devices=10, reporting=10)
    conn.execute("INSERT INTO iot_data.measurements SELECT device_id, 'p', %s, 1 FROM iot_data.redshift_devices",
                 (T - timedelta(hours=4),))  # fmt: skip
    assert dag_run(T)[0] == "success"
    conn.execute("UPDATE iot_data.redshift_devices SET device_name = 'Renamed ' || device_id")
    conn.commit()
    before = set(conn.execute("SELECT *, xmin::text FROM iot_data.device_parameters"))

    for hours in (3, 2, 1):  # oldest first, as the scheduler runs a backfill
        assert dag_run(T - timedelta(hours=hours))[0] == "success"

    assert set(conn.execute("SELECT *, xmin::text FROM iot_data.device_parameters")) == before
    rows = conn.execute(
        "SELECT applied, guard, updated FROM device_sync.run_history WHERE window_end < %s ORDER BY window_end", (T,)
    ).fetchall()
    assert rows == [(False, "older_window", 10)] * 3
    assert published(cloudwatch)["OlderWindowNotApplied"] == 3
