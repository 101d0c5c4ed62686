"""TimescaleDB hypertables, for real (TimescaleDB 2.28 on a throwaway server): the pairs found chunk by chunk
equal what a plain DISTINCT over the hypertable finds (TimescaleDB's own reading, compressed chunks
decompressed), whatever the data, the chunks' bounds against the window, the compression and the shards."""

from __future__ import annotations

import logging
from collections import Counter
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# The property tests' data and helpers, shared with the native-partition tests of tests/integration.
from integration.test_pair_scan_property import (
    END,
    MICROSECOND,
    PAIR_INDEX,
    PARTITION_METHODS,
    START,
    TIMES,
    WINDOW,
    fleets,
    staged_pairs,
)

from device_sync import sync
from device_sync.config import load_settings
from device_sync.staging import StagingTables, drop_tables
from device_sync.window import Window
from source_data import add_devices, add_measurements, add_parameters, execute, query, target

HALF = START + timedelta(minutes=30)
# A hypertable's time column is NOT NULL: no NULL times here.
CHUNK_TIMES = [time for time in TIMES if time is not None] + [HALF - MICROSECOND, HALF]


def make_hypertable(conn: psycopg.Connection[Any], segmentby: str = "device_id, parameter_id") -> None:
    """iot_data.measurements as a hypertable with 30-minute chunks (the window spans two, both cut by its
    edges' neighbours), the pair index, and compression segmented by ``segmentby``."""
    execute(
        conn,
        "DROP TABLE iot_data.measurements; "
        "CREATE TABLE iot_data.measurements"
        ' (device_id TEXT, parameter_id TEXT, "time" TIMESTAMPTZ NOT NULL, value DOUBLE PRECISION); '
        "SELECT create_hypertable('iot_data.measurements', 'time', chunk_time_interval => interval '30 minutes');"
        f"{PAIR_INDEX}; "
        "ALTER TABLE iot_data.measurements SET (timescaledb.compress,"
        f" timescaledb.compress_segmentby = '{segmentby}', timescaledb.compress_orderby = 'time')",
    )


def compress_chunks(conn: psycopg.Connection[Any], compress: str) -> int:
    if compress == "none":
        return 0
    condition = "range_start = %s" if compress == "some" else "true"
    params = (START,) if compress == "some" else None
    chunks = query(
        conn,
        "SELECT quote_ident(chunk_schema) || '.' || quote_ident(chunk_name) FROM timescaledb_information.chunks"
        f" WHERE hypertable_name = 'measurements' AND {condition}",
        params,
    )
    for (chunk,) in chunks:
        execute(conn, "SELECT compress_chunk(%s)", (chunk,))
    return len(chunks)


@st.composite
def chunked_fleets(draw: st.DrawFn) -> tuple[list[Any], list[Any]]:
    devices, measurements = draw(fleets())
    measurements = [(d, p, t if t is not None else START) for d, p, t in measurements]
    extra = draw(
        st.lists(
            st.tuples(
                st.sampled_from([d for d, _, _ in devices] or ["d1"]),
                st.sampled_from(["p1", "p2", None]),
                st.sampled_from(CHUNK_TIMES),
            ),
            max_size=10,
        )
    )
    return devices, measurements + extra


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=40, deadline=None, database=None)
@given(
    fleet=chunked_fleets(),
    shards=st.sampled_from([1, 2, 3]),
    compress=st.sampled_from(["none", "some", "all"]),
    segmentby=st.sampled_from(["device_id, parameter_id", "device_id", ""]),
)
def test_hypertable_chunks_stage_exactly_the_plain_querys_pairs_by_every_method(
    ts_conn: psycopg.Connection[Any], fleet: tuple[list[Any], list[Any]], shards: int, compress: str, segmentby: str
) -> None:
    make_hypertable(ts_conn, segmentby)
    devices, measurements = fleet
    add_devices(ts_conn, *devices)
    add_measurements(ts_conn, *measurements)
    compress_chunks(ts_conn, compress)
    config = load_settings()
    staging = StagingTables.for_run(config.staging_schema, "dag", "hypertable")
    sync.discover_active_devices(ts_conn, config, staging)

    (plain,) = staged_pairs(ts_conn, staging, sync.WINDOW_SCAN, 1)  # TimescaleDB's own reading of the window
    for method in PARTITION_METHODS:
        split = staged_pairs(ts_conn, staging, method, shards)
        assert sum(split, Counter()) == plain, (method, compress)
        assert all(count == 1 for shard in split for count in shard.values()), method
    drop_tables(ts_conn, config, staging)


@pytest.mark.parametrize(
    ("segmentby", "compressed_method"),
    [("device_id, parameter_id", sync.SKIP_SCAN), ("device_id", sync.WINDOW_SCAN)],
)
def test_each_chunk_is_read_its_own_way_and_the_choice_is_logged(
    ts_conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture, segmentby: str, compressed_method: str
) -> None:
    """Many rows per pair in an uncompressed chunk: skip scan. A compressed chunk: the skip scan when its
    batches are segmented by the pair (a probe lands on one batch), else TimescaleDB's decompressing window
    scan (a probe would decompress). Chunks outside the window: not read at all."""
    make_hypertable(ts_conn, segmentby)
    add_devices(ts_conn, ("d1", "Device 1", True), ("d2", "Device 2", True))
    execute(
        ts_conn,
        'INSERT INTO iot_data.measurements (device_id, parameter_id, "time", value)'
        " SELECT d, p, %s + make_interval(secs => s), 1"
        " FROM unnest(ARRAY['d1', 'd2']) AS d, unnest(ARRAY['p1', 'p2']) AS p, generate_series(0, 3599) AS s",
        (START,),
    )
    execute(ts_conn, "INSERT INTO iot_data.measurements VALUES ('d1', 'p9', %s, 1)", (START - timedelta(days=3),))
    compress_chunks(ts_conn, "some")
    execute(ts_conn, "ANALYZE")
    config = load_settings()
    staging = StagingTables.for_run(config.staging_schema, "dag", "choice")
    sync.discover_active_devices(ts_conn, config, staging)

    with caplog.at_level(logging.INFO, logger="device_sync"):
        summary = sync.aggregate_recent_measurements(ts_conn, config, staging, WINDOW)

    assert summary["method"] == sync.BY_PARTITION
    assert summary["partitions_by_method"] == dict(Counter([sync.SKIP_SCAN, compressed_method]))
    assert summary["shard_pairs"] == 4
    logged = [record.getMessage() for record in caplog.records if record.getMessage().startswith("Partition ")]
    assert len(logged) == 2
    assert any("skip scan" in line and "compressed" not in line for line in logged), logged
    compressed = [line for line in logged if "compressed" in line]
    assert len(compressed) == 1 and compressed_method.replace("_", " ") in compressed[0], logged
    drop_tables(ts_conn, config, staging)


def test_a_whole_sync_on_a_hypertable_leaves_the_plain_tables_result(ts_conn: psycopg.Connection[Any]) -> None:
    rows = [
        ("d1", "p1", START),
        ("d1", "p2", HALF),
        ("d2", "p1", END - MICROSECOND),
        ("d2", "p2", END),  # on the end: not in the window
        ("d1", "p3", START - MICROSECOND),  # before it
    ]
    results = []
    for layout in ("plain", "hypertable"):
        execute(ts_conn, "DROP TABLE IF EXISTS iot_data.device_parameters; DROP SCHEMA IF EXISTS device_sync CASCADE")
        if layout == "hypertable":
            make_hypertable(ts_conn)
        add_devices(ts_conn, ("d1", "Device 1", True), ("d2", "Device 2", True))
        add_parameters(ts_conn, ("p1", "Temp"), ("p2", "Volt"), ("p3", "Pressure"))
        add_measurements(ts_conn, *rows)
        compress_chunks(ts_conn, "all" if layout == "hypertable" else "none")
        config = load_settings()
        sync.ensure_schema(ts_conn, config)
        staging = StagingTables.for_run(config.staging_schema, "dag", layout)
        summary = sync.sync_once(ts_conn, config, staging, Window(START, END), run_id=layout)
        results.append((target(ts_conn), summary["inserted"]))
    assert (
        results[0]
        == results[1]
        == (
            {
                ("d1", "p1"): ("Device 1", "Temp"),
                ("d1", "p2"): ("Device 1", "Volt"),
                ("d2", "p1"): ("Device 2", "Temp"),
            },
            3,
        )
    )
