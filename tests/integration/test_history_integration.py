"""Integration tests of the run history, the change log, dry runs, device scope and run options (real PostgreSQL).

Each test crafts a few source rows, runs the sync (or one step of it) and asserts exactly the behaviour its
name states. Faults are produced for real with PostgreSQL triggers, never with mocks. Every statement the
tests themselves run goes through ``execute``/``query``, which wrap it in its own committed transaction, so
the sync's transactions are never nested inside an open one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from device_sync import sync
from device_sync.config import Settings, load_settings
from device_sync.history import mark_run_failed
from device_sync.skips import SKIP_REASONS
from device_sync.staging import StagingTables, drop_tables
from device_sync.window import Window
from source_data import add_devices, add_measurements, add_parameters, add_target, execute, query, snapshot, target

END = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
LOOKBACK = 60
START = END - timedelta(minutes=LOOKBACK)
INSIDE = END - timedelta(minutes=30)
DAG_ID = "device_parameter_sync"

HISTORY_COLUMNS = (
    "run_id", "dag_id", "logical_date", "window_start", "window_end", "started_at", "finished_at", "status",
    "dry_run", "applied", "device_scope", "active_devices", "observed_pairs", "inserted", "deleted", "updated",
    "skipped", "skipped_by_reason", "error",
)  # fmt: skip


# --- helpers -------------------------------------------------------------------------------------------


def staging_for(settings: Settings, run_id: str) -> StagingTables:
    return StagingTables.for_run(settings.staging_schema, DAG_ID, run_id)


def run_sync(
    conn: psycopg.Connection[Any],
    settings: Settings | None = None,
    *,
    run_id: str = "run-1",
    end: datetime = END,
    device_ids: Sequence[str] | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    settings = settings or load_settings()
    return sync.sync_once(
        conn,
        settings,
        staging_for(settings, run_id),
        Window.ending_at(end, LOOKBACK),
        run_id=run_id,
        device_ids=device_ids,
        dry_run=dry_run,
    )


def stage_delta(conn: psycopg.Connection[Any], settings: Settings, staging: StagingTables) -> dict[str, int]:
    """The steps before apply_changes, as the DAG runs them; returns the planned delta's counts."""
    sync.discover_active_devices(conn, settings, staging)
    sync.aggregate_recent_measurements(conn, settings, staging, Window.ending_at(END, LOOKBACK))
    sync.resolve_parameter_names(conn, settings, staging)
    return sync.compute_delta(conn, settings, staging)


def run_record(run_id: str, **fields: Any) -> dict[str, Any]:
    return {"run_id": run_id, "dag_id": DAG_ID, "window_start": START, "window_end": END, **fields}


def ensure_schema(conn: psycopg.Connection[Any]) -> None:
    """The target table and the history schema, as the first step creates them."""
    sync.ensure_schema(conn, load_settings())


def history(conn: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
    columns = sql.SQL(", ").join(sql.Identifier(column) for column in HISTORY_COLUMNS)
    rows = query(conn, sql.SQL("SELECT {} FROM device_sync.run_history").format(columns))
    return {row[0]: dict(zip(HISTORY_COLUMNS, row, strict=True)) for row in rows}


def change_log(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """The change log as (run_id, operation, device, parameter, old names, new names), in insertion order."""
    return query(
        conn,
        "SELECT run_id, operation, device_id, parameter_id, old_device_name, old_parameter_name, "
        "new_device_name, new_parameter_name FROM device_sync.change_log ORDER BY change_id",
    )


def change_log_count(conn: psycopg.Connection[Any]) -> int:
    ((count,),) = query(conn, "SELECT count(*) FROM device_sync.change_log")
    return int(count)


def raise_in_trigger(conn: psycopg.Connection[Any], table: str, trigger: str, message: str, options: str = "") -> None:
    """A real fault: ``CREATE <trigger> ON <table> <options>`` that raises ``message`` for each row.
    The function lives in the table's schema, which the next test's reset drops."""
    schema = table.split(".")[0]
    function = sql.Identifier(schema, "raise_for_test")
    execute(
        conn,
        sql.SQL(
            "CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION {message}; END $$"
        ).format(function=function, message=sql.Literal(message)),
    )
    execute(
        conn,
        sql.SQL("CREATE {trigger} ON {table} {options} FOR EACH ROW EXECUTE FUNCTION {function}()").format(
            trigger=sql.SQL(trigger),
            table=sql.Identifier(*table.split(".")),
            options=sql.SQL(options),
            function=function,
        ),
    )


# --- run history ---------------------------------------------------------------------------------------


def test_sync_once_records_one_success_row_with_its_window_and_counts(conn: psycopg.Connection[Any]) -> None:
    add_devices(conn, ("d1", "Device 1", True), ("d2", "Device 2", None))
    add_parameters(conn, ("p1", "Temp"), ("p2", "Volt"), ("p3", " "))
    add_measurements(
        conn,
        ("d1", "p1", INSIDE),  # update (renamed device)
        ("d1", "p2", INSIDE),  # insert
        ("d1", "p3", INSIDE),  # skipped: parameter_name_missing
        ("d1", "p9", INSIDE),  # skipped: parameter_unknown
        (None, "p1", INSIDE),  # skipped: measurement_id_null
    )
    ensure_schema(conn)
    add_target(conn, ("d1", "Old name", "p1", "Temp"), ("d9", "Gone", "p1", "Temp"))  # d9: delete

    summary = run_sync(conn, run_id="run-1")

    rows = history(conn)
    assert list(rows) == ["run-1"]
    row = rows["run-1"]
    assert (row["dag_id"], row["window_start"], row["window_end"]) == (DAG_ID, START, END)
    assert (row["status"], row["applied"], row["dry_run"], row["error"]) == ("success", True, False, None)
    assert row["device_scope"] is None
    assert row["finished_at"] >= row["started_at"]
    counts = ("active_devices", "observed_pairs", "inserted", "deleted", "updated", "skipped")
    assert {key: row[key] for key in counts} == {key: summary[key] for key in counts}
    assert row["skipped_by_reason"] == {reason: summary[reason] for reason in SKIP_REASONS}
    # Not vacuously equal: the crafted batch has one of each of these.
    assert {key: row[key] for key in counts} == {
        "active_devices": 1, "observed_pairs": 4, "inserted": 1, "deleted": 1, "updated": 1, "skipped": 4,
    }  # fmt: skip
    assert {reason: n for reason, n in row["skipped_by_reason"].items() if n} == {
        "device_status_null": 1,
        "measurement_id_null": 1,
        "parameter_unknown": 1,
        "parameter_name_missing": 1,
    }


def test_a_second_run_id_adds_a_second_history_row(conn: psycopg.Connection[Any]) -> None:
    add_devices(conn, ("d1", "Device 1", True))
    add_parameters(conn, ("p1", "Temp"))
    add_measurements(conn, ("d1", "p1", INSIDE))

    run_sync(conn, run_id="run-1")
    run_sync(conn, run_id="run-2")

    rows = history(conn)
    assert sorted(rows) == ["run-1", "run-2"]
    assert (rows["run-1"]["inserted"], rows["run-2"]["inserted"]) == (1, 0)
    assert {row["status"] for row in rows.values()} == {"success"}


def test_retrying_a_run_id_keeps_one_history_row_of_the_latest_attempt(conn: psycopg.Connection[Any]) -> None:
    settings = load_settings()
    add_devices(conn, ("d1", "Device 1", True))
    add_parameters(conn, ("p1", "Temp"))
    add_measurements(conn, ("d1", "p1", INSIDE))
    sync.ensure_schema(conn, settings)
    mark_run_failed(conn, settings, run_record("run-1", error="apply_changes: timeout"))

    run_sync(conn, settings, run_id="run-1")
    first = history(conn)["run-1"]
    run_sync(conn, settings, run_id="run-1")

    rows = history(conn)
    assert list(rows) == ["run-1"]
    assert (first["status"], first["error"], first["inserted"]) == ("success", None, 1)
    assert (rows["run-1"]["status"], rows["run-1"]["error"], rows["run-1"]["inserted"]) == ("success", None, 0)
    assert rows["run-1"]["finished_at"] >= first["finished_at"]


# --- change log ----------------------------------------------------------------------------------------


def test_change_log_has_one_row_per_applied_change_queryable_by_pair(conn: psycopg.Connection[Any]) -> None:
    add_devices(conn, ("d1", "Device 1", True))
    add_parameters(conn, ("p1", "Temp"), ("p2", "Volt"))
    add_measurements(conn, ("d1", "p1", INSIDE), ("d1", "p2", INSIDE))
    run_sync(conn, run_id="run-1")
    # An hour later: p2 is no longer reported and the device was renamed.
    execute(conn, "UPDATE iot_data.redshift_devices SET device_name = 'Renamed'")
    add_measurements(conn, ("d1", "p1", END + timedelta(minutes=30)))

    summary = run_sync(conn, run_id="run-2", end=END + timedelta(hours=1))

    assert (summary["inserted"], summary["updated"], summary["deleted"]) == (0, 1, 1)
    assert sorted(change_log(conn)) == [
        ("run-1", "insert", "d1", "p1", None, None, "Device 1", "Temp"),
        ("run-1", "insert", "d1", "p2", None, None, "Device 1", "Volt"),
        ("run-2", "delete", "d1", "p2", "Device 1", "Volt", None, None),
        ("run-2", "update", "d1", "p1", "Device 1", "Temp", "Renamed", "Temp"),
    ]
    # "When did parameter p2 disappear from device d1?" is one query on the pair.
    disappeared = query(
        conn,
        "SELECT operation, run_id, changed_at FROM device_sync.change_log "
        "WHERE device_id = %s AND parameter_id = %s ORDER BY changed_at DESC, change_id DESC",
        ("d1", "p2"),
    )
    assert [(operation, run_id) for operation, run_id, _ in disappeared] == [("delete", "run-2"), ("insert", "run-1")]
    assert disappeared[0][2] > disappeared[1][2]


def test_a_run_without_changes_adds_no_change_log_rows(conn: psycopg.Connection[Any]) -> None:
    add_devices(conn, ("d1", "Device 1", True))
    add_parameters(conn, ("p1", "Temp"))
    add_measurements(conn, ("d1", "p1", INSIDE))
    run_sync(conn, run_id="run-1")
    before = change_log(conn)

    summary = run_sync(conn, run_id="run-2")

    assert (summary["inserted"], summary["updated"], summary["deleted"]) == (0, 0, 0)
    assert change_log(conn) == before
    assert len(before) == 1
    assert history(conn)["run-2"]["status"] == "success"


# --- atomicity -----------------------------------------------------------------------------------------


def atomicity_fixture(conn: psycopg.Connection[Any]) -> tuple[Settings, StagingTables]:
    """Sources and target such that the delta has one insert, one update and one delete."""
    settings = load_settings()
    staging = staging_for(settings, "run-1")
    add_devices(conn, ("d1", "Device 1", True))
    add_parameters(conn, ("p1", "Temp"), ("p2", "Volt"))
    add_measurements(conn, ("d1", "p1", INSIDE), ("d1", "p2", INSIDE))
    ensure_schema(conn)
    add_target(conn, ("d1", "Old name", "p1", "Temp"), ("d9", "Gone", "p1", "Temp"))
    return settings, staging


def test_a_failing_change_log_insert_rolls_back_the_change(conn: psycopg.Connection[Any]) -> None:
    settings, staging = atomicity_fixture(conn)
    assert stage_delta(conn, settings, staging) == {"inserts": 1, "updates": 1, "deletes": 1}
    raise_in_trigger(conn, "device_sync.change_log", "TRIGGER refuse BEFORE INSERT", "change log refused")
    before = snapshot(conn)

    with pytest.raises(psycopg.errors.RaiseException, match="change log refused"):
        sync.apply_changes(conn, settings, staging, run=run_record("run-1"))

    assert snapshot(conn) == before
    assert change_log_count(conn) == 0
    assert [row for row in history(conn).values() if row["status"] == "success"] == []
    drop_tables(conn, settings, staging)


@pytest.mark.parametrize(
    ("trigger", "options"),
    [
        ("TRIGGER refuse BEFORE DELETE", ""),
        # Fires at commit, after the change log and the history row were written: they must go too.
        ("CONSTRAINT TRIGGER refuse AFTER DELETE", "DEFERRABLE INITIALLY DEFERRED"),
    ],
    ids=["immediate", "at_commit"],
)
def test_a_failing_target_change_leaves_no_change_log_and_no_success_row(
    conn: psycopg.Connection[Any], trigger: str, options: str
) -> None:
    settings, staging = atomicity_fixture(conn)
    assert stage_delta(conn, settings, staging) == {"inserts": 1, "updates": 1, "deletes": 1}
    raise_in_trigger(conn, "iot_data.device_parameters", trigger, "delete refused", options)
    before = snapshot(conn)

    with pytest.raises(psycopg.errors.RaiseException, match="delete refused"):
        sync.apply_changes(conn, settings, staging, run=run_record("run-1"))

    assert snapshot(conn) == before
    assert change_log_count(conn) == 0
    assert [row for row in history(conn).values() if row["status"] == "success"] == []
    drop_tables(conn, settings, staging)


# --- retention -----------------------------------------------------------------------------------------


def test_history_older_than_the_retention_is_pruned_by_the_next_applied_run(
    conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEVICE_SYNC_HISTORY_RETENTION_DAYS", "7")
    settings = load_settings()
    assert settings.history_retention_days == 7
    add_devices(conn, ("d1", "Device 1", True))
    add_parameters(conn, ("p1", "Temp"))
    add_measurements(conn, ("d1", "p1", INSIDE))
    ensure_schema(conn)
    just_too_old = "now() - interval '7 days 1 minute'"
    just_recent = "now() - interval '6 days 23 hours 59 minutes'"
    execute(
        conn,
        "INSERT INTO device_sync.run_history (run_id, dag_id, started_at, finished_at, status) VALUES "
        f"('old-run', 'dag', {just_too_old}, {just_too_old}, 'success'), "
        f"('recent-run', 'dag', {just_recent}, {just_recent}, 'failed')",
    )
    execute(
        conn,
        "INSERT INTO device_sync.change_log (run_id, operation, device_id, parameter_id, changed_at) VALUES "
        f"('old-run', 'insert', 'd0', 'p0', {just_too_old}), "
        f"('recent-run', 'delete', 'd0', 'p0', {just_recent})",
    )

    run_sync(conn, settings, run_id="run-now")

    assert sorted(history(conn)) == ["recent-run", "run-now"]
    assert sorted((run_id, op) for run_id, op, *_ in change_log(conn)) == [
        ("recent-run", "delete"),
        ("run-now", "insert"),
    ]


# --- dry run -------------------------------------------------------------------------------------------


def test_dry_run_changes_nothing_and_records_the_would_be_counts(conn: psycopg.Connection[Any]) -> None:
    add_devices(conn, ("d1", "Device 1", True))
    add_parameters(conn, ("p1", "Temp"), ("p2", "Volt"))
    add_measurements(conn, ("d1", "p1", INSIDE), ("d1", "p2", INSIDE))
    ensure_schema(conn)
    add_target(conn, ("d1", "Old name", "p1", "Temp"), ("d9", "Gone", "p1", "Temp"))
    before = snapshot(conn)

    summary = run_sync(conn, run_id="dry-1", dry_run=True)

    assert snapshot(conn) == before
    assert change_log_count(conn) == 0
    assert (summary["inserted"], summary["updated"], summary["deleted"]) == (1, 1, 1)
    row = history(conn)["dry-1"]
    assert (row["status"], row["applied"], row["dry_run"]) == ("success", False, True)
    assert (row["inserted"], row["updated"], row["deleted"]) == (1, 1, 1)
    assert (row["active_devices"], row["observed_pairs"]) == (1, 2)


# --- device scope --------------------------------------------------------------------------------------


def test_device_scope_changes_only_the_listed_devices(conn: psycopg.Connection[Any]) -> None:
    add_devices(conn, ("d1", "Device 1", True), ("d2", "Device 2", True), ("d3", "Off", False))
    add_parameters(conn, ("p1", "Temp"), ("p2", "Volt"))
    add_measurements(conn, ("d1", "p1", INSIDE), ("d1", "p2", INSIDE), ("d2", "p1", INSIDE))
    ensure_schema(conn)
    add_target(
        conn,
        ("d1", "Old name", "p1", "Temp"),  # d1: update
        ("d1", "Device 1", "p9", "Gone"),  # d1: delete
        ("d2", "Stale", "p2", "Volt"),  # a full run would delete this and insert (d2, p1)
        ("d3", "Off", "p1", "Temp"),  # inactive device: a full run would delete it
        ("d404", "Unknown", "p1", "Temp"),  # unknown device: a full run would delete it
    )
    before = snapshot(conn)

    summary = run_sync(conn, run_id="scoped", device_ids=["d1"])

    assert (summary["inserted"], summary["updated"], summary["deleted"]) == (1, 1, 1)
    assert target(conn) == {
        ("d1", "p1"): ("Device 1", "Temp"),
        ("d1", "p2"): ("Device 1", "Volt"),
        ("d2", "p2"): ("Stale", "Volt"),
        ("d3", "p1"): ("Off", "Temp"),
        ("d404", "p1"): ("Unknown", "Temp"),
    }
    others = {pair: row for pair, row in before.items() if pair[0] != "d1"}
    assert {pair: row for pair, row in snapshot(conn).items() if pair[0] != "d1"} == others
    assert {device for _, _, device, *_ in change_log(conn)} == {"d1"}
    row = history(conn)["scoped"]
    assert (row["device_scope"], row["active_devices"], row["status"]) == (1, 1, "success")


def test_a_scoped_run_counts_skipped_device_rows_only_within_its_scope(conn: psycopg.Connection[Any]) -> None:
    """Active devices outside the scope are not "duplicate rows"; a real duplicate inside the scope is."""
    add_devices(conn, *((f"dev-{i:05d}", f"Device {i}", True) for i in range(1, 109)))
    add_devices(conn, ("dev-00050", "Device 50 again", True), (None, "No id", True), ("dev-00099", "x", None))
    add_parameters(conn, ("p1", "Temp"))
    add_measurements(conn, ("dev-00011", "p1", INSIDE), ("dev-00050", "p1", INSIDE))

    summary = run_sync(conn, run_id="scoped-dry", device_ids=["dev-00011"], dry_run=True)

    assert (summary["active_devices"], summary["device_duplicate_rows"], summary["skipped"]) == (1, 0, 0)
    assert (summary["device_id_null"], summary["device_status_null"]) == (0, 0)
    assert history(conn)["scoped-dry"]["skipped"] == 0

    summary = run_sync(conn, run_id="scoped-dup", device_ids=["dev-00011", "dev-00050"], dry_run=True)
    assert (summary["active_devices"], summary["device_duplicate_rows"], summary["skipped"]) == (2, 1, 1)

    summary = run_sync(conn, run_id="everything", dry_run=True)  # unscoped: every bad row counts
    assert (summary["device_duplicate_rows"], summary["device_id_null"], summary["device_status_null"]) == (1, 1, 1)


# --- record_failure ------------------------------------------------------------------------------------


def test_record_failure_marks_the_run_failed_with_its_error(conn: psycopg.Connection[Any]) -> None:
    settings = load_settings()
    sync.ensure_schema(conn, settings)

    mark_run_failed(conn, settings, run_record("run-1", error="compute_delta: boom"))

    row = history(conn)["run-1"]
    assert (row["status"], row["error"], row["applied"], row["dry_run"]) == (
        "failed",
        "compute_delta: boom",
        False,
        False,
    )
    assert (row["dag_id"], row["window_start"], row["window_end"]) == (DAG_ID, START, END)
    assert row["finished_at"] is not None


def test_record_failure_never_overwrites_a_success_row(conn: psycopg.Connection[Any]) -> None:
    settings = load_settings()
    add_devices(conn, ("d1", "Device 1", True))
    add_parameters(conn, ("p1", "Temp"))
    add_measurements(conn, ("d1", "p1", INSIDE))
    run_sync(conn, settings, run_id="run-1")
    before = history(conn)

    mark_run_failed(conn, settings, run_record("run-1", error="publish_metrics: outage"))

    assert history(conn) == before
    assert before["run-1"]["status"] == "success"


def test_record_failure_with_keep_error_keeps_the_earlier_message(conn: psycopg.Connection[Any]) -> None:
    settings = load_settings()
    sync.ensure_schema(conn, settings)
    mark_run_failed(conn, settings, run_record("run-1", error="apply_changes: deadlock"))

    mark_run_failed(conn, settings, run_record("run-1", error="a step failed"), keep_error=True)
    kept = history(conn)["run-1"]
    mark_run_failed(conn, settings, run_record("run-1", error="a later error"))
    replaced = history(conn)["run-1"]

    assert (kept["status"], kept["error"]) == ("failed", "apply_changes: deadlock")
    assert (replaced["status"], replaced["error"]) == ("failed", "a later error")
    assert len(history(conn)) == 1
