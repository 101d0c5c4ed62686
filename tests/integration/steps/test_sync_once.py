"""The five steps together (sync_once) against a real PostgreSQL: the summary of a batch with every kind of
bad data, retried staging steps, staging cleanup, read-only sources."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from device_sync import sync
from device_sync.config import load_settings
from device_sync.staging import StagingTables, drop_tables, shard_table
from device_sync.window import Window
from source_data import add_devices, add_measurements, add_parameters, checksum, execute, query, target
from step_helpers import END, INJECTION, INSIDE, LOOKBACK, ensure_target, run_sync, staging_for, staging_tables

# --- bad data across the steps ---------------------------------------------------------------------------


def test_null_ids_in_devices_parameters_and_measurements_are_skipped_and_counted(
    conn: psycopg.Connection[Any],
) -> None:
    add_devices(
        conn,
        (None, "No id", True),
        (None, "No id either", False),
        (None, "No id, no status", None),  # counted once, as a NULL id (not also as a NULL status)
        ("d1", "Device 1", True),
    )
    add_parameters(conn, (None, "No id"), ("p1", "Temp"))
    add_measurements(
        conn,
        (None, "p1", INSIDE),
        (None, "p1", INSIDE + timedelta(minutes=1)),  # same (NULL, p1) pair: counted once
        (None, None, INSIDE),
        ("d1", None, INSIDE),
        ("d1", "p1", INSIDE),
    )

    summary = run_sync(conn)

    assert target(conn) == {("d1", "p1"): ("Device 1", "Temp")}
    assert summary["device_id_null"] == 3
    assert summary["device_status_null"] == 0
    assert summary["parameter_id_null"] == 1
    assert summary["measurement_id_null"] == 3
    assert summary["active_devices"] == 1
    assert summary["skipped"] == 3 + 1 + 3
    assert (
        query(conn, "SELECT count(*) FROM iot_data.device_parameters WHERE device_id IS NULL OR parameter_id IS NULL")[
            0
        ][0]
        == 0
    )


SUMMARY_KEYS = {
    "method",
    "active_devices",
    "device_name_missing",
    "device_id_null",
    "device_id_empty",
    "device_status_null",
    "device_duplicate_rows",
    "observed_pairs",
    "measurement_id_null",
    "desired_pairs",
    "id_too_long",
    "device_name_missing_pairs",
    "parameter_unknown",
    "parameter_name_missing",
    "parameter_id_null",
    "parameter_duplicate_rows",
    "inserts",
    "updates",
    "deletes",
    "inserted",
    "updated",
    "deleted",
    "skipped",
    "applied",
    "guard",
}


def test_summary_counts_of_a_batch_with_every_kind_of_bad_data(conn: psycopg.Connection[Any]) -> None:
    add_devices(
        conn,
        ("d1", "Device 1", True),
        ("d1", "Device 1 copy", True),  # duplicate row
        ("d_blank", "", True),  # name missing
        (None, "No id", True),  # NULL id
        ("d_null", "Null status", None),  # NULL status
        ("d_off", "Off", False),
    )
    add_parameters(
        conn,
        ("p1", "Temp"),
        ("p1", "Temp copy"),  # duplicate row
        ("p_blank", " "),  # name missing
        (None, "No id"),  # NULL id
    )
    add_measurements(
        conn,
        ("d1", "p1", INSIDE),
        ("d1", "p_blank", INSIDE),
        ("d1", "p_unknown", INSIDE),
        ("d_blank", "p1", INSIDE),
        ("d_null", "p1", INSIDE),
        ("d_off", "p1", INSIDE),
        (None, "p1", INSIDE),
        ("d1", None, INSIDE),
    )

    summary = run_sync(conn)

    assert set(summary) == SUMMARY_KEYS
    assert summary == {
        "method": "window_scan",
        "active_devices": 2,
        "device_name_missing": 1,
        "device_id_null": 1,
        "device_id_empty": 0,
        "device_status_null": 1,
        "device_duplicate_rows": 1,
        "observed_pairs": 4,
        "measurement_id_null": 2,
        "desired_pairs": 1,
        "id_too_long": 0,
        "device_name_missing_pairs": 1,
        "parameter_unknown": 1,
        "parameter_name_missing": 1,
        "parameter_id_null": 1,
        "parameter_duplicate_rows": 1,
        "inserts": 1,
        "updates": 0,
        "deletes": 0,
        "inserted": 1,
        "updated": 0,
        "deleted": 0,
        "skipped": 1 + 1 + 1 + 1 + 2 + 1 + 1 + 1 + 1,
        "applied": True,
        "guard": None,
    }
    assert target(conn) == {("d1", "p1"): ("Device 1", "Temp")}


# --- retries ---------------------------------------------------------------------------------------------


def staged(conn: psycopg.Connection[Any], staging: StagingTables, step: str) -> list[tuple[Any, ...]]:
    return query(conn, sql.SQL("SELECT * FROM {} ORDER BY 1, 2").format(staging.table(step)))


def test_retrying_a_step_gives_the_same_staging_result(conn: psycopg.Connection[Any]) -> None:
    settings = load_settings()
    staging = staging_for(settings)
    window = Window.ending_at(END, LOOKBACK)
    add_devices(conn, ("d1", "Device 1", True), ("d2", "", True), ("d3", "Off", False))
    add_parameters(conn, ("p1", "Temp"), ("p2", None))
    add_measurements(
        conn,
        ("d1", "p1", INSIDE),
        ("d1", "p2", INSIDE),
        ("d1", "p9", INSIDE),
        ("d2", "p1", INSIDE),
        ("d3", "p1", INSIDE),
        (None, "p1", INSIDE),
    )

    devices = [sync.discover_active_devices(conn, settings, staging) for _ in range(2)]
    assert devices[0] == devices[1]
    first = sync.aggregate_recent_measurements(conn, settings, staging, window)
    observed = staged(conn, staging, shard_table(0, 1))
    second = sync.aggregate_recent_measurements(conn, settings, staging, window)
    assert second == first
    assert staged(conn, staging, shard_table(0, 1)) == observed
    assert len(observed) == 5

    first = sync.resolve_parameter_names(conn, settings, staging)
    resolved = staged(conn, staging, "resolved_pairs")
    second = sync.resolve_parameter_names(conn, settings, staging)
    assert second == first
    assert staged(conn, staging, "resolved_pairs") == resolved
    assert staging_tables(conn, settings.staging_schema, staging.run_key) == sorted(
        f"{staging.run_key}_{step}" for step in ("active_devices", "observed_pairs", "resolved_pairs")
    )
    drop_tables(conn, settings, staging)


# --- staging cleanup -------------------------------------------------------------------------------------


def test_no_staging_table_of_the_run_remains_after_sync_once(conn: psycopg.Connection[Any]) -> None:
    settings = load_settings()
    staging = staging_for(settings)
    other_run = staging_for(settings, "another-run")
    add_devices(conn, ("d1", "Device 1", True))
    add_parameters(conn, ("p1", "Temp"))
    add_measurements(conn, ("d1", "p1", INSIDE))
    ensure_target(conn)
    # A table of another run in the same schema is not this run's to drop.
    execute(conn, sql.SQL("CREATE TABLE {} (x int)").format(other_run.table("active_devices")))

    run_sync(conn, settings)

    assert target(conn) == {("d1", "p1"): ("Device 1", "Temp")}
    assert staging_tables(conn, settings.staging_schema, staging.run_key) == []
    assert staging_tables(conn, settings.staging_schema, "stage_") == [f"{other_run.run_key}_active_devices"]


def test_staging_tables_are_dropped_even_when_a_step_fails(
    conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEVICE_SYNC_MEASUREMENTS_TABLE", "iot_data.no_such_table")
    settings = load_settings()
    add_devices(conn, ("d1", "Device 1", True))

    with pytest.raises(psycopg.errors.UndefinedTable):
        run_sync(conn, settings)

    assert staging_tables(conn, settings.staging_schema, staging_for(settings).run_key) == []


# --- sources are read only -------------------------------------------------------------------------------


def test_source_tables_are_never_modified(conn: psycopg.Connection[Any]) -> None:
    add_devices(
        conn,
        ("d1", "Device 1", True),
        ("d1", "dup", True),
        ("d2", "  ", True),
        (None, "x", True),
        ("d3", "Null", None),
        ("d4", INJECTION, True),
    )
    add_parameters(conn, ("p1", "Temp"), ("p1", "dup"), ("p2", ""), (None, "x"), ("p3", INJECTION))
    add_measurements(
        conn,
        ("d1", "p1", INSIDE),
        ("d1", "p2", INSIDE),
        ("d2", "p1", INSIDE),
        ("d3", "p1", INSIDE),
        ("d4", "p3", INSIDE),
        ("d1", "p9", INSIDE),
        (None, "p1", INSIDE),
        ("d1", None, None),
        ("d1", "p1", END + timedelta(days=1)),
    )
    sources = ("iot_data.redshift_devices", "iot_data.timescale_parameters", "iot_data.measurements")
    before = {table: checksum(conn, table) for table in sources}

    run_sync(conn)
    run_sync(conn, lookback=1440)

    assert {table: checksum(conn, table) for table in sources} == before
    assert len(target(conn)) == 2
