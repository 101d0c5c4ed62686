"""approve_mass_delete's database side against real PostgreSQL: when a run asks, what the question shows,
the changes it stages for the approver, and apply_changes applying an approved mass delete only while the
delta is the one approved. The question itself, answered through Airflow, is in tests/e2e/test_approval_e2e.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from device_sync import sync
from device_sync.config import load_settings
from device_sync.guards import GuardTripped
from device_sync.staging import StagingTables
from device_sync.window import Window
from source_data import one_parameter_fleet

DAG_ID = "device_parameter_sync"
T = datetime(2026, 11, 30, 12, tzinfo=UTC)
WINDOW = Window.ending_at(T, 60)


def fleet(conn: psycopg.Connection[Any], *, devices: int, reporting: int, measured_at: datetime = T) -> None:
    one_parameter_fleet(conn, devices=devices, reporting=reporting, measured_at=measured_at)


def staged_run(conn: psycopg.Connection[Any], run_id: str = "run") -> tuple[StagingTables, dict[str, Any], int]:
    """The steps before approve_mass_delete, as the DAG runs them: the staging, the run's record for
    apply_changes, and compute_delta's delete count (what the task gets from XCom)."""
    settings = load_settings()
    tables = StagingTables.for_run(settings.staging_schema, DAG_ID, run_id)
    sync.discover_active_devices(conn, settings, tables, window_end=WINDOW.end)
    sync.aggregate_recent_measurements(conn, settings, tables, WINDOW)
    sync.resolve_parameter_names(conn, settings, tables)
    delta = sync.compute_delta(conn, settings, tables)
    run = {"run_id": run_id, "dag_id": DAG_ID, "window_start": WINDOW.start, "window_end": WINDOW.end}
    return tables, run, delta["deletes"]


def review(
    conn: psycopg.Connection[Any], tables: StagingTables, run: dict[str, Any], deletes: int
) -> dict[str, Any] | None:
    return sync.mass_delete_review(conn, load_settings(), tables, run=run, deletes=deletes)


def apply(conn: psycopg.Connection[Any], tables: StagingTables, run: dict[str, Any], **options: Any) -> dict[str, Any]:
    return sync.apply_changes(conn, load_settings(), tables, run=run, **options)


def table_size(conn: psycopg.Connection[Any]) -> int:
    return int(conn.execute("SELECT count(*) FROM iot_data.device_parameters").fetchone()[0])  # type: ignore[index]


def test_a_delta_within_the_allowed_fraction_asks_nothing(conn: psycopg.Connection[Any]) -> None:
    fleet(conn, devices=200, reporting=160)  # 40 of 200 (20 %) go: within DEVICE_SYNC_MAX_DELETE_FRACTION=0.25
    tables, run, deletes = staged_run(conn)
    assert review(conn, tables, run, deletes) is None
    assert conn.execute("SELECT to_regclass(%s)", (tables.table("pending_changes").as_string(conn),)).fetchone() == (
        None,
    )


def test_stale_measurements_and_an_older_window_ask_nothing(conn: psycopg.Connection[Any]) -> None:
    """Those guards decide before the mass-delete one: no question, the run goes on as before."""
    fleet(conn, devices=200, reporting=0, measured_at=T - timedelta(days=1))
    tables, run, deletes = staged_run(conn)
    assert review(conn, tables, run, deletes) is None  # stale measurements: the run fails in apply_changes

    conn.execute("INSERT INTO iot_data.measurements SELECT device_id, 'p', %s, 1 FROM iot_data.redshift_devices "
                 "LIMIT 100", (T - timedelta(minutes=5),))  # fmt: skip
    conn.execute(
        "INSERT INTO device_sync.run_history (run_id, dag_id, status, applied, window_start, window_end, "
        "started_at, finished_at) VALUES ('newer', %s, 'success', true, %s, %s, now(), now())",
        (DAG_ID, T, T + timedelta(hours=1)),
    )
    conn.commit()
    tables, run, deletes = staged_run(conn, "older")
    assert review(conn, tables, run, deletes) is None  # an older window only records its delta


def test_the_review_counts_shares_samples_and_stages_every_change(conn: psycopg.Connection[Any]) -> None:
    fleet(conn, devices=200, reporting=140)  # 60 of 200 rows (30 %) would go
    tables, run, deletes = staged_run(conn)

    asked = review(conn, tables, run, deletes)

    assert asked is not None
    assert (asked["inserts"], asked["updates"], asked["deletes"], asked["table_rows"]) == (0, 0, 60, 200)
    assert asked["fingerprint"] not in ("", "0")
    assert [row["device_id"] for row in asked["deleted_sample"]] == [f"d{n}" for n in range(141, 151)]
    assert asked["deleted_sample"][0] == {
        "device_id": "d141",
        "parameter_id": "p",
        "device_name": "Device 141",
        "parameter_name": "Param",
    }
    pending = tables.table("pending_changes").as_string(conn)
    assert conn.execute(f"SELECT operation, count(*) FROM {pending} GROUP BY 1").fetchall() == [("delete", 60)]
    assert table_size(conn) == 200  # a question writes nothing to the table


def test_an_approved_mass_delete_is_applied_while_the_delta_is_the_one_approved(
    conn: psycopg.Connection[Any],
) -> None:
    fleet(conn, devices=200, reporting=140)
    tables, run, deletes = staged_run(conn)
    approved = review(conn, tables, run, deletes)
    assert approved is not None

    with pytest.raises(GuardTripped):  # without the approval the guard trips as always
        apply(conn, tables, run)
    applied = apply(conn, tables, run, approved=approved)

    assert (applied["applied"], applied["deleted"]) == (True, 60)
    assert table_size(conn) == 140
    assert conn.execute("SELECT count(*) FROM device_sync.change_log WHERE operation = 'delete'").fetchone() == (60,)


@pytest.mark.parametrize(
    "change",
    [
        # one more row to delete (a row added to the table since the question)
        "INSERT INTO iot_data.device_parameters VALUES ('zz', 'Gone', 'p', 'Param')",
        # same counts, another pair: a deleted row renamed is a different change
        "UPDATE iot_data.device_parameters SET device_name = 'Renamed' WHERE device_id = 'd200'",
    ],
)
def test_an_approved_mass_delete_is_not_applied_when_the_delta_changed(
    conn: psycopg.Connection[Any], change: str
) -> None:
    fleet(conn, devices=200, reporting=140)
    tables, run, deletes = staged_run(conn)
    approved = review(conn, tables, run, deletes)
    assert approved is not None
    conn.execute(change)
    conn.commit()
    before = table_size(conn)

    with pytest.raises(GuardTripped) as tripped:
        apply(conn, tables, run, approved=approved)

    assert tripped.value.guard == "mass_delete"
    assert "the delta changed after it was approved" in str(tripped.value)
    assert "approved: 0 inserts, 0 updates, 60 deletes" in str(tripped.value)
    assert table_size(conn) == before
    assert conn.execute("SELECT count(*) FROM device_sync.change_log").fetchone() == (0,)


# --- the approver's list: GET /device-sync/changes/pending ------------------------------------------------


def test_the_pending_changes_of_a_run_page_by_pair(
    conn: psycopg.Connection[Any], client: TestClient, logged_in: None
) -> None:
    fleet(conn, devices=200, reporting=140)
    tables, run, deletes = staged_run(conn, "scheduled__2026-11-30T12:00:00+00:00")
    assert review(conn, tables, run, deletes) is not None

    first = client.get("/changes/pending", params={"run_id": run["run_id"], "limit": 50}).json()
    rest = client.get("/changes/pending", params={"run_id": run["run_id"], "offset": 50}).json()

    assert (len(first["changes"]), first["has_more"], first["next_offset"]) == (50, True, 50)
    assert (len(rest["changes"]), rest["has_more"], rest["next_offset"]) == (10, False, None)
    assert first["changes"][0] == {
        "operation": "delete",
        "device_id": "d141",
        "parameter_id": "p",
        "old_device_name": "Device 141",
        "old_parameter_name": "Param",
        "new_device_name": None,
        "new_parameter_name": None,
    }
    assert rest["changes"][-1]["device_id"] == "d200"
    assert client.get("/changes/pending", params={"run_id": "another run"}).status_code == 404
    assert client.get("/changes/pending").status_code == 422  # run_id is required


def test_the_pending_changes_need_a_login(client: TestClient) -> None:
    assert client.get("/changes/pending", params={"run_id": "run"}).status_code in (401, 403)
