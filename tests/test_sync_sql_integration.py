"""Integration tests of the sync's SQL semantics against a real PostgreSQL (no mocks).

Each test crafts a few source rows, runs the sync (or one step of it) and asserts exactly the behaviour its
name states. Every statement the tests themselves run goes through ``execute``/``query``, which wrap it in
its own committed transaction, so the sync's transactions are never nested inside an open one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from conftest import reset_sources
from device_sync import db, sync
from device_sync.config import Settings, load_settings
from device_sync.staging import StagingTables, drop_tables, shard_table
from device_sync.window import Window
from source_data import (
    add_devices,
    add_measurements,
    add_parameters,
    add_target,
    checksum,
    execute,
    insert_rows,
    query,
    target,
)

END = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
LOOKBACK = 60
START = END - timedelta(minutes=LOOKBACK)
INSIDE = END - timedelta(minutes=30)
INJECTION = "'); DROP TABLE iot_data.measurements; --"
RUN_ID = "run-x"


# --- helpers -------------------------------------------------------------------------------------------


def staging_for(settings: Settings, run_id: str = RUN_ID) -> StagingTables:
    return StagingTables.for_run(settings.staging_schema, "dag", run_id)


def run_sync(
    conn: psycopg.Connection[Any],
    settings: Settings | None = None,
    *,
    end: datetime = END,
    lookback: int = LOOKBACK,
    run_id: str = RUN_ID,
) -> dict[str, Any]:
    settings = settings or load_settings()
    return sync.sync_once(conn, settings, staging_for(settings, run_id), Window.ending_at(end, lookback))


def ensure_target(conn: psycopg.Connection[Any]) -> None:
    sync.ensure_schema(conn, load_settings())


def target_xmins(conn: psycopg.Connection[Any]) -> dict[tuple[str, str], str]:
    rows = query(conn, "SELECT device_id, parameter_id, xmin::text FROM iot_data.device_parameters")
    return {(d, p): x for d, p, x in rows}


def staging_tables(conn: psycopg.Connection[Any], schema: str, prefix: str) -> list[str]:
    rows = query(
        conn,
        "SELECT tablename FROM pg_tables WHERE schemaname = %s AND starts_with(tablename, %s) ORDER BY 1",
        (schema, prefix),
    )
    return [name for (name,) in rows]


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


# --- window ----------------------------------------------------------------------------------------------


def test_window_start_is_inclusive_and_end_is_exclusive(conn: psycopg.Connection[Any]) -> None:
    add_devices(conn, ("d1", "Device 1", True))
    add_parameters(conn, ("p_start", "At start"), ("p_end", "At end"))
    add_measurements(conn, ("d1", "p_start", START), ("d1", "p_end", END))

    summary = run_sync(conn)

    assert target(conn) == {("d1", "p_start"): ("Device 1", "At start")}
    assert summary["observed_pairs"] == 1


def test_measurement_before_window_start_is_ignored(conn: psycopg.Connection[Any]) -> None:
    add_devices(conn, ("d1", "Device 1", True))
    add_parameters(conn, ("p_before", "Before"), ("p_inside", "Inside"))
    add_measurements(
        conn, ("d1", "p_before", START - timedelta(microseconds=1)), ("d1", "p_inside", START + timedelta(seconds=1))
    )

    summary = run_sync(conn)

    assert target(conn) == {("d1", "p_inside"): ("Device 1", "Inside")}
    assert summary["observed_pairs"] == 1


def test_far_future_infinite_and_null_time_measurements_are_ignored(conn: psycopg.Connection[Any]) -> None:
    add_devices(conn, ("d1", "Device 1", True))
    add_parameters(
        conn, ("p_future", "Future"), ("p_infinity", "Infinity"), ("p_null", "Null time"), ("p_inside", "Inside")
    )
    add_measurements(
        conn,
        ("d1", "p_future", END + timedelta(days=3650)),
        ("d1", "p_null", None),
        ("d1", "p_inside", INSIDE),
    )
    execute(
        conn,
        "INSERT INTO iot_data.measurements VALUES "
        "('d1', 'p_infinity', 'infinity', 1), ('d1', 'p_infinity', '-infinity', 1)",
    )

    summary = run_sync(conn)

    assert target(conn) == {("d1", "p_inside"): ("Device 1", "Inside")}
    assert summary["observed_pairs"] == 1
    assert summary["measurement_id_null"] == 0


def test_lookback_length_changes_the_result(conn: psycopg.Connection[Any]) -> None:
    add_devices(conn, ("d1", "Device 1", True))
    add_parameters(conn, ("p_recent", "Recent"), ("p_older", "Older"))
    add_measurements(
        conn, ("d1", "p_recent", END - timedelta(minutes=30)), ("d1", "p_older", END - timedelta(minutes=90))
    )

    short = run_sync(conn, lookback=60)
    assert target(conn) == {("d1", "p_recent"): ("Device 1", "Recent")}
    assert short["observed_pairs"] == 1

    long = run_sync(conn, lookback=120)
    assert target(conn) == {("d1", "p_recent"): ("Device 1", "Recent"), ("d1", "p_older"): ("Device 1", "Older")}
    assert (long["observed_pairs"], long["inserted"]) == (2, 1)

    shorter_again = run_sync(conn, lookback=60)
    assert target(conn) == {("d1", "p_recent"): ("Device 1", "Recent")}
    assert shorter_again["deleted"] == 1


# --- desired set -----------------------------------------------------------------------------------------


def test_only_devices_with_status_true_are_active(conn: psycopg.Connection[Any]) -> None:
    add_devices(conn, ("d_true", "On", True), ("d_false", "Off", False), ("d_null", "Unknown", None))
    add_parameters(conn, ("p1", "Temp"))
    add_measurements(conn, ("d_true", "p1", INSIDE), ("d_false", "p1", INSIDE), ("d_null", "p1", INSIDE))

    summary = run_sync(conn)

    assert target(conn) == {("d_true", "p1"): ("On", "Temp")}
    assert summary["active_devices"] == 1
    assert summary["device_status_null"] == 1
    assert summary["observed_pairs"] == 1


def test_device_ids_are_compared_exactly_without_case_folding_or_trimming(conn: psycopg.Connection[Any]) -> None:
    add_devices(conn, ("dev", "lower", True), ("DEV", "upper", True), ("dev ", "trailing space", False))
    add_parameters(conn, ("p1", "Temp"), ("P1", "Temp upper"))
    add_measurements(
        conn,
        ("dev", "p1", INSIDE),
        ("DEV", "p1", INSIDE),
        ("dev ", "p1", INSIDE),  # inactive: must not be merged into "dev"
        ("Dev", "p1", INSIDE),  # no device row at all: must not be merged into "dev" or "DEV"
        ("dev", "P1", INSIDE),  # "P1" is its own parameter, not "p1"
    )

    summary = run_sync(conn)

    assert target(conn) == {
        ("dev", "p1"): ("lower", "Temp"),
        ("DEV", "p1"): ("upper", "Temp"),
        ("dev", "P1"): ("lower", "Temp upper"),
    }
    assert summary["active_devices"] == 2
    assert summary["device_duplicate_rows"] == 0


def test_integer_typed_source_ids_are_cast_to_text(conn: psycopg.Connection[Any]) -> None:
    execute(
        conn,
        """
        DROP TABLE iot_data.redshift_devices, iot_data.timescale_parameters, iot_data.measurements;
        CREATE TABLE iot_data.redshift_devices (device_id INTEGER, device_name TEXT, status BOOLEAN);
        CREATE TABLE iot_data.timescale_parameters (parameter_id INTEGER, parameter_name TEXT);
        CREATE TABLE iot_data.measurements
            (device_id INTEGER, parameter_id INTEGER, "time" TIMESTAMPTZ, value DOUBLE PRECISION);
        """,
    )
    add_devices(conn, (1, "one", True), (2, "two", True), (10, "ten", False), (1, "uno", True))
    add_parameters(conn, (7, "temp"), (70, "volt"), (7, "zzz"))
    add_measurements(conn, (1, 7, INSIDE), (2, 70, INSIDE), (10, 7, INSIDE), (1, 99, INSIDE))

    summary = run_sync(conn)

    assert target(conn) == {("1", "7"): ("one", "temp"), ("2", "70"): ("two", "volt")}
    assert query(
        conn,
        "SELECT DISTINCT pg_typeof(device_id)::text, pg_typeof(parameter_id)::text FROM iot_data.device_parameters",
    ) == [("text", "text")]
    assert summary["parameter_unknown"] == 1
    assert summary["device_duplicate_rows"] == 1
    assert summary["parameter_duplicate_rows"] == 1
    again = run_sync(conn)
    assert (again["inserted"], again["updated"], again["deleted"]) == (0, 0, 0)


# --- apply -----------------------------------------------------------------------------------------------


def test_rows_outside_the_desired_set_are_deleted_including_inactive_and_unknown_devices(
    conn: psycopg.Connection[Any],
) -> None:
    add_devices(conn, ("d_active", "Active", True), ("d_inactive", "Inactive", False))
    add_parameters(conn, ("p1", "Temp"), ("p2", "Volt"))
    add_measurements(
        conn,
        ("d_active", "p1", INSIDE),
        ("d_active", "p2", START - timedelta(minutes=1)),  # reported, but before the window
        ("d_inactive", "p1", INSIDE),
    )
    ensure_target(conn)
    add_target(
        conn,
        ("d_active", "Active", "p1", "Temp"),
        ("d_active", "Active", "p2", "Volt"),
        ("d_inactive", "Inactive", "p1", "Temp"),
        ("d_unknown", "Ghost", "p1", "Temp"),
    )

    summary = run_sync(conn)

    assert target(conn) == {("d_active", "p1"): ("Active", "Temp")}
    assert (summary["deletes"], summary["deleted"]) == (3, 3)
    assert (summary["inserted"], summary["updated"]) == (0, 0)


def test_missing_desired_rows_are_inserted(conn: psycopg.Connection[Any]) -> None:
    add_devices(conn, ("d1", "Device 1", True), ("d2", "Device 2", True))
    add_parameters(conn, ("p1", "Temp"), ("p2", "Volt"))
    add_measurements(conn, ("d1", "p1", INSIDE), ("d2", "p2", INSIDE))
    ensure_target(conn)
    add_target(conn, ("d1", "Device 1", "p1", "Temp"))

    summary = run_sync(conn)

    assert target(conn) == {("d1", "p1"): ("Device 1", "Temp"), ("d2", "p2"): ("Device 2", "Volt")}
    assert (summary["inserts"], summary["inserted"], summary["updated"], summary["deleted"]) == (1, 1, 0, 0)
    ((created, updated),) = query(
        conn, "SELECT created_at, updated_at FROM iot_data.device_parameters WHERE device_id = 'd2'"
    )
    assert created is not None
    assert created == updated


def test_changed_names_set_updated_at_to_now_and_keep_created_at(conn: psycopg.Connection[Any]) -> None:
    add_devices(conn, ("d1", "Old device", True), ("d2", "Device 2", True), ("d3", "Device 3", True))
    add_parameters(conn, ("p1", "Temp"), ("p2", "Old parameter"), ("p3", "Pressure"))
    add_measurements(conn, ("d1", "p1", INSIDE), ("d2", "p2", INSIDE), ("d3", "p3", INSIDE))
    run_sync(conn)
    long_ago = datetime(2000, 1, 1, tzinfo=UTC)
    execute(conn, "UPDATE iot_data.device_parameters SET created_at = %s, updated_at = %s", (long_ago, long_ago))
    execute(conn, "UPDATE iot_data.redshift_devices SET device_name = 'New device' WHERE device_id = 'd1'")
    execute(conn, "UPDATE iot_data.timescale_parameters SET parameter_name = 'New parameter' WHERE parameter_id = 'p2'")
    untouched_xmin = target_xmins(conn)[("d3", "p3")]

    ((before,),) = query(conn, "SELECT clock_timestamp()")
    summary = run_sync(conn)
    ((after,),) = query(conn, "SELECT clock_timestamp()")

    assert (summary["updates"], summary["updated"], summary["inserted"], summary["deleted"]) == (2, 2, 0, 0)
    rows = {
        (d, p): (dn, pn, c, u)
        for d, p, dn, pn, c, u in query(
            conn,
            "SELECT device_id, parameter_id, device_name, parameter_name, created_at, updated_at "
            "FROM iot_data.device_parameters",
        )
    }
    assert rows[("d1", "p1")][:2] == ("New device", "Temp")
    assert rows[("d2", "p2")][:2] == ("Device 2", "New parameter")
    for pair in (("d1", "p1"), ("d2", "p2")):
        created_at, updated_at = rows[pair][2:]
        assert created_at == long_ago
        assert before <= updated_at <= after
    assert rows[("d3", "p3")] == ("Device 3", "Pressure", long_ago, long_ago)
    assert target_xmins(conn)[("d3", "p3")] == untouched_xmin


def test_second_run_over_the_same_window_writes_no_row(conn: psycopg.Connection[Any]) -> None:
    add_devices(conn, ("d1", "Device 1", True), ("d2", "   ", True), ("d3", "Device 3", True))
    add_parameters(conn, ("p1", "Temp"), ("p2", "Volt"), ("p_blank", ""))
    add_measurements(
        conn,
        ("d1", "p1", INSIDE),
        ("d1", "p2", INSIDE),
        ("d2", "p1", INSIDE),  # skipped: blank device name
        ("d3", "p_blank", INSIDE),  # skipped: blank parameter name
        ("d3", "p_unknown", INSIDE),  # skipped: unknown parameter
    )
    ensure_target(conn)
    add_target(conn, ("d2", "kept", "p1", "kept"), ("d1", "stale", "p2", "stale"), ("gone", "x", "p1", "x"))
    first = run_sync(conn)
    assert (first["inserted"], first["updated"], first["deleted"]) == (1, 1, 1)
    xmins = target_xmins(conn)
    assert len(xmins) == 3

    second = run_sync(conn)

    assert target_xmins(conn) == xmins
    assert (second["inserts"], second["updates"], second["deletes"]) == (0, 0, 0)
    assert (second["inserted"], second["updated"], second["deleted"]) == (0, 0, 0)


# --- bad data --------------------------------------------------------------------------------------------


def test_null_and_blank_device_names_are_skipped_and_counted(conn: psycopg.Connection[Any]) -> None:
    add_devices(conn, ("d_null", None, True), ("d_empty", "", True), ("d_spaces", "   ", True), ("d_ok", "Fine", True))
    add_parameters(conn, ("p1", "Temp"), ("p2", "Volt"))
    add_measurements(
        conn,
        ("d_null", "p1", INSIDE),
        ("d_empty", "p1", INSIDE),
        ("d_spaces", "p1", INSIDE),
        ("d_spaces", "p2", INSIDE),
        ("d_ok", "p1", INSIDE),
    )

    summary = run_sync(conn)

    assert target(conn) == {("d_ok", "p1"): ("Fine", "Temp")}
    assert summary["device_name_missing"] == 3
    assert summary["device_name_missing_pairs"] == 4
    assert summary["desired_pairs"] == 1
    assert summary["skipped"] == 4


def test_null_and_blank_parameter_names_are_skipped_and_counted(conn: psycopg.Connection[Any]) -> None:
    add_devices(conn, ("d1", "Device 1", True))
    add_parameters(conn, ("p_null", None), ("p_empty", ""), ("p_spaces", "   "), ("p_ok", "Fine"))
    add_measurements(
        conn, ("d1", "p_null", INSIDE), ("d1", "p_empty", INSIDE), ("d1", "p_spaces", INSIDE), ("d1", "p_ok", INSIDE)
    )

    summary = run_sync(conn)

    assert target(conn) == {("d1", "p_ok"): ("Device 1", "Fine")}
    assert summary["parameter_name_missing"] == 3
    assert summary["desired_pairs"] == 1
    assert summary["skipped"] == 3


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


def test_parameters_unknown_to_timescale_parameters_are_skipped_and_counted(conn: psycopg.Connection[Any]) -> None:
    add_devices(conn, ("d1", "Device 1", True), ("d2", "Device 2", True))
    add_parameters(conn, ("p1", "Temp"))
    add_measurements(conn, ("d1", "p1", INSIDE), ("d1", "p_unknown", INSIDE), ("d2", "P1", INSIDE))

    summary = run_sync(conn)

    assert target(conn) == {("d1", "p1"): ("Device 1", "Temp")}
    assert summary["parameter_unknown"] == 2
    assert summary["skipped"] == 2


@pytest.mark.parametrize("reverse", [False, True], ids=["given-order", "reversed-order"])
def test_duplicate_device_rows_resolve_to_one_deterministic_name(conn: psycopg.Connection[Any], reverse: bool) -> None:
    rows = [
        ("d1", "zeta", True),
        ("d1", "alpha", True),
        ("d1", "", True),
        ("d1", None, True),
        ("d1", "aaa", False),  # smaller, but not an active row: never chosen
        ("d2", "", True),
        ("d2", "zeta", True),  # a usable name beats a smaller blank one
        ("d2", None, True),
        ("d2", "   ", True),
    ]
    add_devices(conn, *(reversed(rows) if reverse else rows))
    add_parameters(conn, ("p1", "Temp"))
    add_measurements(conn, ("d1", "p1", INSIDE), ("d2", "p1", INSIDE))

    summary = run_sync(conn)

    assert target(conn) == {("d1", "p1"): ("alpha", "Temp"), ("d2", "p1"): ("zeta", "Temp")}
    assert summary["device_duplicate_rows"] == 3 + 3
    assert summary["active_devices"] == 2
    assert summary["device_name_missing"] == 0
    assert summary["skipped"] == 6


@pytest.mark.parametrize("reverse", [False, True], ids=["given-order", "reversed-order"])
def test_duplicate_parameter_rows_resolve_to_one_deterministic_name(
    conn: psycopg.Connection[Any], reverse: bool
) -> None:
    rows = [
        ("p1", "zz"),
        ("p1", "mm"),
        ("p1", ""),
        ("p1", None),
        ("p1", "   "),
        ("p2", None),
        ("p2", ""),  # all of p2's names are blank: the pair is skipped
    ]
    add_devices(conn, ("d1", "Device 1", True))
    add_parameters(conn, *(reversed(rows) if reverse else rows))
    add_measurements(conn, ("d1", "p1", INSIDE), ("d1", "p2", INSIDE))

    summary = run_sync(conn)

    assert target(conn) == {("d1", "p1"): ("Device 1", "mm")}
    assert summary["parameter_duplicate_rows"] == 4 + 1
    assert summary["parameter_name_missing"] == 1
    assert summary["skipped"] == 5 + 1


def test_sql_injection_looking_names_and_ids_are_stored_verbatim(conn: psycopg.Connection[Any]) -> None:
    add_devices(conn, ("d1", INJECTION, True), (INJECTION, "Device 2", True))
    add_parameters(conn, ("p1", INJECTION), (INJECTION, "Temp"))
    add_measurements(conn, ("d1", "p1", INSIDE), (INJECTION, INJECTION, INSIDE))

    summary = run_sync(conn)

    assert target(conn) == {("d1", "p1"): (INJECTION, INJECTION), (INJECTION, INJECTION): ("Device 2", "Temp")}
    assert summary["inserted"] == 2
    assert query(conn, "SELECT count(*) FROM iot_data.measurements")[0][0] == 2


def test_skipped_pairs_already_in_the_target_are_kept_untouched(conn: psycopg.Connection[Any]) -> None:
    add_devices(conn, ("d_blank", " ", True), ("d1", "Device 1", True))
    add_parameters(conn, ("p1", "Temp"), ("p_blank", None))
    add_measurements(
        conn,
        ("d_blank", "p1", INSIDE),  # device name missing
        ("d1", "p_unknown", INSIDE),  # parameter unknown
        ("d1", "p_blank", INSIDE),  # parameter name missing
    )
    ensure_target(conn)
    old = {
        ("d_blank", "p1"): ("old device", "old temp"),
        ("d1", "p_unknown"): ("old d1", "old unknown"),
        ("d1", "p_blank"): ("old d1", "old blank"),
    }
    add_target(conn, *((d, dn, p, pn) for (d, p), (dn, pn) in old.items()))
    xmins = target_xmins(conn)

    summary = run_sync(conn)

    assert target(conn) == old
    assert target_xmins(conn) == xmins
    assert (summary["device_name_missing_pairs"], summary["parameter_unknown"], summary["parameter_name_missing"]) == (
        1,
        1,
        1,
    )
    assert (summary["inserted"], summary["updated"], summary["deleted"]) == (0, 0, 0)


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


# --- target creation -------------------------------------------------------------------------------------


def test_missing_target_is_created_with_the_seed_ddl(conn: psycopg.Connection[Any]) -> None:
    assert query(conn, "SELECT to_regclass('iot_data.device_parameters')") == [(None,)]

    run_sync(conn)

    columns = query(
        conn,
        "SELECT column_name, data_type, is_nullable, column_default FROM information_schema.columns "
        "WHERE table_schema = 'iot_data' AND table_name = 'device_parameters' ORDER BY ordinal_position",
    )
    assert columns == [
        ("device_id", "text", "NO", None),
        ("device_name", "text", "NO", None),
        ("parameter_id", "text", "NO", None),
        ("parameter_name", "text", "NO", None),
        ("created_at", "timestamp with time zone", "YES", "now()"),
        ("updated_at", "timestamp with time zone", "YES", "now()"),
    ]
    primary_key = query(
        conn,
        "SELECT a.attname FROM pg_index i "
        "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, position) "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
        "WHERE i.indrelid = 'iot_data.device_parameters'::regclass AND i.indisprimary ORDER BY k.position",
    )
    assert [name for (name,) in primary_key] == ["device_id", "parameter_id"]
    indexes = dict(
        query(
            conn,
            "SELECT indexname, indexdef FROM pg_indexes "
            "WHERE schemaname = 'iot_data' AND tablename = 'device_parameters'",
        )
    )
    assert set(indexes) == {
        "device_parameters_pkey",
        "idx_device_parameters_device_id",
        "idx_device_parameters_parameter_id",
    }
    assert indexes["idx_device_parameters_device_id"].endswith("USING btree (device_id)")
    assert indexes["idx_device_parameters_parameter_id"].endswith("USING btree (parameter_id)")


def test_existing_target_with_rows_is_used_as_is(conn: psycopg.Connection[Any]) -> None:
    execute(
        conn,
        """
        CREATE TABLE iot_data.device_parameters (
            device_id TEXT NOT NULL,
            device_name TEXT NOT NULL,
            parameter_id TEXT NOT NULL,
            parameter_name TEXT NOT NULL,
            created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
            updated_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
            PRIMARY KEY (device_id, parameter_id)
        );
        CREATE INDEX idx_device_parameters_device_id ON iot_data.device_parameters(device_id);
        CREATE INDEX idx_device_parameters_parameter_id ON iot_data.device_parameters(parameter_id);
        INSERT INTO iot_data.device_parameters VALUES
            ('d1', 'Device 1', 'p1', 'Temp', '2001-01-01Z', '2002-02-02Z'),
            ('d1', 'Device 1', 'p_old', 'Old', '2001-01-01Z', '2002-02-02Z');
        """,
    )
    ((oid,),) = query(conn, "SELECT 'iot_data.device_parameters'::regclass::oid")
    xmin_kept = target_xmins(conn)[("d1", "p1")]
    add_devices(conn, ("d1", "Device 1", True))
    add_parameters(conn, ("p1", "Temp"), ("p2", "Volt"))
    add_measurements(conn, ("d1", "p1", INSIDE), ("d1", "p2", INSIDE))

    summary = run_sync(conn)

    assert query(conn, "SELECT 'iot_data.device_parameters'::regclass::oid") == [(oid,)]
    assert target(conn) == {("d1", "p1"): ("Device 1", "Temp"), ("d1", "p2"): ("Device 1", "Volt")}
    assert target_xmins(conn)[("d1", "p1")] == xmin_kept
    assert query(conn, "SELECT created_at, updated_at FROM iot_data.device_parameters WHERE parameter_id = 'p1'") == [
        (datetime(2001, 1, 1, tzinfo=UTC), datetime(2002, 2, 2, tzinfo=UTC))
    ]
    assert (summary["inserted"], summary["updated"], summary["deleted"]) == (1, 0, 1)
    assert len(query(conn, "SELECT 1 FROM pg_indexes WHERE tablename = 'device_parameters'")) == 3


# --- configurable measurements table ---------------------------------------------------------------------


PLAIN_READINGS = """
CREATE TABLE telemetry.readings
    (sensor_value DOUBLE PRECISION, device_id TEXT, parameter_id TEXT, observed_at TIMESTAMPTZ);
"""
PARTITIONED_READINGS = """
CREATE TABLE telemetry.readings
    (sensor_value DOUBLE PRECISION, device_id TEXT, parameter_id TEXT, observed_at TIMESTAMPTZ)
    PARTITION BY RANGE (observed_at);
CREATE TABLE telemetry.readings_old PARTITION OF telemetry.readings
    FOR VALUES FROM ('2024-01-01 00:00Z') TO ('2024-06-01 11:30Z');
CREATE TABLE telemetry.readings_new PARTITION OF telemetry.readings
    FOR VALUES FROM ('2024-06-01 11:30Z') TO ('2030-01-01 00:00Z');
"""


@pytest.fixture
def telemetry_schema(conn: psycopg.Connection[Any]) -> Iterator[None]:
    execute(conn, "DROP SCHEMA IF EXISTS telemetry CASCADE; CREATE SCHEMA telemetry")
    yield
    execute(conn, "DROP SCHEMA IF EXISTS telemetry CASCADE")


@pytest.mark.usefixtures("telemetry_schema")
def test_configured_measurements_table_and_time_column_plain_and_partitioned_agree(
    conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEVICE_SYNC_MEASUREMENTS_TABLE", "telemetry.readings")
    monkeypatch.setenv("DEVICE_SYNC_MEASUREMENTS_TIME_COLUMN", "observed_at")
    settings = load_settings()
    readings = [
        ("d1", "p1", START),  # in the "old" partition, on the window's start: counted
        ("d1", "p2", START + timedelta(minutes=40)),  # in the "new" partition
        ("d2", "p1", END - timedelta(microseconds=1)),
        ("d2", "p2", END),  # on the end: ignored
        ("d1", "p3", START - timedelta(seconds=1)),  # before: ignored
        ("d_off", "p1", INSIDE),  # inactive device
    ]
    results = {}
    for kind, ddl in (("plain", PLAIN_READINGS), ("partitioned", PARTITIONED_READINGS)):
        reset_sources(conn)
        execute(conn, "DROP TABLE IF EXISTS telemetry.readings CASCADE")
        execute(conn, ddl)
        add_devices(conn, ("d1", "Device 1", True), ("d2", "Device 2", True), ("d_off", "Off", False))
        add_parameters(conn, ("p1", "Temp"), ("p2", "Volt"), ("p3", "Pressure"))
        # The default measurements table holds other data: it must not be read.
        add_measurements(conn, ("d1", "p3", INSIDE), ("d2", "p3", INSIDE))
        insert_rows(conn, "telemetry.readings", ("device_id", "parameter_id", "observed_at"), readings)
        summary = run_sync(conn, settings)
        results[kind] = (target(conn), summary)

    ((partitions,),) = query(conn, "SELECT count(*) FROM pg_inherits WHERE inhparent = 'telemetry.readings'::regclass")
    assert partitions == 2
    counts = dict(query(conn, "SELECT tableoid::regclass::text, count(*) FROM telemetry.readings GROUP BY 1"))
    assert counts == {"telemetry.readings_old": 2, "telemetry.readings_new": 4}
    expected = {
        ("d1", "p1"): ("Device 1", "Temp"),
        ("d1", "p2"): ("Device 1", "Volt"),
        ("d2", "p1"): ("Device 2", "Temp"),
    }
    assert results["plain"][0] == expected
    assert results["partitioned"] == results["plain"]


# --- concurrency -----------------------------------------------------------------------------------------


def test_apply_changes_waits_for_the_writers_lock_then_applies_what_is_still_needed(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    settings = load_settings()
    staging = staging_for(settings)
    window = Window.ending_at(END, LOOKBACK)
    add_devices(conn, ("d1", "Device 1", True))
    add_parameters(conn, ("p1", "Temp"), ("p2", "Volt"))
    add_measurements(conn, ("d1", "p1", INSIDE), ("d1", "p2", INSIDE))
    sync.discover_active_devices(conn, settings, staging)
    sync.aggregate_recent_measurements(conn, settings, staging, window)
    sync.resolve_parameter_names(conn, settings, staging)
    planned = sync.compute_delta(conn, settings, staging)
    assert planned == {"inserts": 2, "updates": 0, "deletes": 0}

    outcome: dict[str, Any] = {}

    def apply() -> None:
        try:
            outcome["result"] = sync.apply_changes(conn, settings, staging)
        except BaseException as error:  # reported to the main thread
            outcome["error"] = error

    worker = threading.Thread(target=apply, daemon=True)
    with psycopg.connect(database_url) as other:
        try:
            with other.transaction():
                other.execute(db.load_sql(f"{db.STEPS_SQL}lock_target.sql"))
                # Another writer changes the table while it holds the lock.
                other.execute(
                    "INSERT INTO iot_data.device_parameters (device_id, device_name, parameter_id, parameter_name) "
                    "VALUES ('d1', 'stale', 'p1', 'stale'), ('zz', 'Ghost', 'p1', 'Temp')"
                )
                worker.start()
                # Poll (bounded) until the apply waits: on a loaded machine the thread may need a while.
                deadline = time.monotonic() + 20
                waiting_on: list[Any] = []
                while time.monotonic() < deadline and waiting_on != [("Lock", "advisory")]:
                    time.sleep(0.2)
                    waiting_on = other.execute(
                        "SELECT wait_event_type, wait_event FROM pg_stat_activity WHERE pid = %s",
                        (conn.info.backend_pid,),
                    ).fetchall()
                time.sleep(1.0)
                waited = worker.is_alive()
            # The lock holder has committed: the waiting apply_changes goes on.
        finally:
            if worker.ident is not None:
                worker.join(timeout=30)

    assert waited, f"apply_changes did not wait for the lock: {outcome}"
    assert waiting_on == [("Lock", "advisory")]
    assert not worker.is_alive(), "apply_changes did not finish after the lock was released"
    assert "error" not in outcome, outcome.get("error")
    # The delta was recomputed after the lock: the other writer's rows are updated and deleted.
    assert outcome["result"] == {"inserted": 1, "updated": 1, "deleted": 1, "applied": True, "guard": None}
    assert target(conn) == {("d1", "p1"): ("Device 1", "Temp"), ("d1", "p2"): ("Device 1", "Volt")}
    drop_tables(conn, settings, staging)


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


def test_apply_changes_twice_applies_nothing_the_second_time(conn: psycopg.Connection[Any]) -> None:
    settings = load_settings()
    staging = staging_for(settings)
    add_devices(conn, ("d1", "Device 1", True))
    add_parameters(conn, ("p1", "Temp"), ("p2", "Volt"))
    add_measurements(conn, ("d1", "p1", INSIDE), ("d1", "p2", INSIDE))
    ensure_target(conn)
    add_target(conn, ("d1", "old", "p1", "Temp"), ("d9", "Gone", "p1", "Temp"))
    sync.discover_active_devices(conn, settings, staging)
    sync.aggregate_recent_measurements(conn, settings, staging, Window.ending_at(END, LOOKBACK))
    sync.resolve_parameter_names(conn, settings, staging)
    sync.compute_delta(conn, settings, staging)

    first = sync.apply_changes(conn, settings, staging)
    xmins = target_xmins(conn)
    second = sync.apply_changes(conn, settings, staging)

    assert first == {"inserted": 1, "updated": 1, "deleted": 1, "applied": True, "guard": None}
    assert second == {"inserted": 0, "updated": 0, "deleted": 0, "applied": True, "guard": None}
    assert target_xmins(conn) == xmins
    assert target(conn) == {("d1", "p1"): ("Device 1", "Temp"), ("d1", "p2"): ("Device 1", "Volt")}
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
