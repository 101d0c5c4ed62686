"""aggregate_recent_measurements against a real PostgreSQL: the window [start, end) over the measurements,
and a configured (plain or partitioned) measurements table."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from conftest import reset_sources
from device_sync.config import load_settings
from source_data import add_devices, add_measurements, add_parameters, execute, insert_rows, query, target
from step_helpers import END, INSIDE, START, run_sync

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
    assert results["partitioned"][0] == expected
    plain_summary, partitioned_summary = results["plain"][1], results["partitioned"][1]
    assert (plain_summary.pop("method"), partitioned_summary.pop("method")) == ("window_scan", "by_partition")
    assert partitioned_summary == plain_summary
