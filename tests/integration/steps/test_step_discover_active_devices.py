"""discover_active_devices against a real PostgreSQL: which devices are active, how their ids and names are
read, and the device rows it skips and counts."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from source_data import add_devices, add_measurements, add_parameters, execute, query, target
from step_helpers import INSIDE, run_sync

# --- active devices --------------------------------------------------------------------------------------


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


# --- bad device rows -------------------------------------------------------------------------------------


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
