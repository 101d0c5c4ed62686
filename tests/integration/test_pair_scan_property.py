"""The fast path finds exactly what the plain query finds (real PostgreSQL, no mocks).

``aggregate_recent_measurements`` finds the window's (device, parameter) pairs with a loose index scan when
the measurements table has an index on ``(device_id, parameter_id, time)``, and with a plain ``SELECT
DISTINCT`` over the window otherwise, split into shards by a hash of the device id. Whatever the data (NULL
ids, ids that differ only in case or trailing spaces, times on and around the window's edges, inactive and
unknown devices) and however many shards, the union of the shards' staged pairs must equal the plain
query's, and no pair may be staged by two shards.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_sync import db, sync
from device_sync.config import load_settings
from device_sync.staging import StagingTables, drop_tables, shard_table
from device_sync.window import Window
from source_data import add_devices, add_measurements, execute, query

END = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
LOOKBACK = 60
START = END - timedelta(minutes=LOOKBACK)
MICROSECOND = timedelta(microseconds=1)
WINDOW = Window.ending_at(END, LOOKBACK)

DEVICE_IDS = ["d1", "D1", "d1 ", "d2", "d3", "", None]
PARAMETER_IDS = ["p1", "P1", "p1 ", "p2", "", None]
TIMES = [
    START - timedelta(days=400),
    START - MICROSECOND,
    START,
    START + timedelta(minutes=1),
    END - MICROSECOND,
    END,
    END + timedelta(days=1),
    None,
]
PAIR_INDEX = 'CREATE INDEX measurements_pair_idx ON iot_data.measurements (device_id, parameter_id, "time")'


@st.composite
def fleets(draw: st.DrawFn) -> tuple[list[Any], list[Any]]:
    """Device rows, and measurements that mostly name active devices and times on the window's edges."""
    statuses = st.sampled_from([True, True, True, False, None])
    devices = draw(st.lists(st.tuples(st.sampled_from(DEVICE_IDS), st.just("a device"), statuses), max_size=6))
    active = sorted({d for d, _, status in devices if status is True and d is not None})
    device_ids = (
        st.one_of(st.sampled_from(active), st.sampled_from(active), st.sampled_from(DEVICE_IDS))
        if active
        else st.sampled_from(DEVICE_IDS)
    )
    times = st.one_of(st.sampled_from(TIMES[2:6]), st.sampled_from(TIMES))
    measurements = draw(st.lists(st.tuples(device_ids, st.sampled_from(PARAMETER_IDS), times), max_size=25))
    return devices, measurements


def staged_pairs(
    conn: psycopg.Connection[Any], staging: StagingTables, method: str, shards: int
) -> list[Counter[tuple[str | None, str | None]]]:
    """Run every shard of the aggregation with ``method``; each shard's staged pairs (with multiplicity)."""
    config = load_settings()
    result = []
    for shard in range(shards):
        summary = sync.aggregate_recent_measurements(
            conn, config, staging, WINDOW, shard=shard, shards=shards, method=method
        )
        assert summary["method"] == method
        table = staging.table(shard_table(shard, shards))
        rows = query(conn, psycopg.sql.SQL("SELECT device_id, parameter_id FROM {}").format(table))
        result.append(Counter(rows))
    return result


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=80, deadline=None, database=None)
@given(fleet=fleets(), shards=st.sampled_from([1, 2, 3]))
def test_skip_scan_and_shards_stage_exactly_the_plain_querys_pairs(
    conn: psycopg.Connection[Any], fleet: tuple[list[Any], list[Any]], shards: int
) -> None:
    devices, measurements = fleet
    execute(conn, "TRUNCATE iot_data.redshift_devices, iot_data.measurements")
    add_devices(conn, *devices)
    add_measurements(conn, *measurements)
    config = load_settings()
    staging = StagingTables.for_run(config.staging_schema, "dag", "pairs")
    sync.discover_active_devices(conn, config, staging)

    (plain,) = staged_pairs(conn, staging, sync.WINDOW_SCAN, 1)
    skip_scan_shards = staged_pairs(conn, staging, sync.SKIP_SCAN, shards)
    window_scan_shards = staged_pairs(conn, staging, sync.WINDOW_SCAN, shards)

    assert sum(skip_scan_shards, Counter()) == plain
    assert sum(window_scan_shards, Counter()) == plain
    assert max(plain.values(), default=1) == 1  # every pair once
    for split in (skip_scan_shards, window_scan_shards):
        devices_by_shard = [{device for device, _ in shard} for shard in split]
        for i, first in enumerate(devices_by_shard):
            for second in devices_by_shard[i + 1 :]:
                assert not first & second, "a device was staged by two shards"
    drop_tables(conn, config, staging)


@pytest.fixture
def pair_index(conn: psycopg.Connection[Any]) -> None:
    execute(conn, PAIR_INDEX)


def test_integer_typed_ids_are_found_by_the_skip_scan(conn: psycopg.Connection[Any]) -> None:
    execute(
        conn,
        """
        DROP TABLE iot_data.redshift_devices, iot_data.measurements;
        CREATE TABLE iot_data.redshift_devices (device_id INTEGER, device_name TEXT, status BOOLEAN);
        CREATE TABLE iot_data.measurements
            (device_id INTEGER, parameter_id INTEGER, "time" TIMESTAMPTZ, value DOUBLE PRECISION);
        """,
    )
    execute(conn, PAIR_INDEX)
    add_devices(conn, (1, "one", True), (2, "two", True), (10, "ten", True), (3, "off", False))
    inside = END - timedelta(minutes=5)
    add_measurements(
        conn, (1, 7, inside), (1, 70, inside), (2, 9, START - MICROSECOND), (10, 7, inside), (3, 7, inside)
    )
    config = load_settings()
    staging = StagingTables.for_run(config.staging_schema, "dag", "integers")
    sync.discover_active_devices(conn, config, staging)

    (skip_scan,) = staged_pairs(conn, staging, sync.SKIP_SCAN, 1)
    (plain,) = staged_pairs(conn, staging, sync.WINDOW_SCAN, 1)

    assert skip_scan == plain == Counter({("1", "7"): 1, ("1", "70"): 1, ("10", "7"): 1})
    drop_tables(conn, config, staging)


@pytest.mark.parametrize(
    ("index", "method"),
    [
        (None, sync.WINDOW_SCAN),
        (PAIR_INDEX, sync.SKIP_SCAN),
        ('CREATE INDEX ON iot_data.measurements (device_id, parameter_id, "time", value)', sync.SKIP_SCAN),
        ('CREATE INDEX ON iot_data.measurements ("time")', sync.WINDOW_SCAN),
        ("CREATE INDEX ON iot_data.measurements (device_id, parameter_id)", sync.WINDOW_SCAN),
        ('CREATE INDEX ON iot_data.measurements (parameter_id, device_id, "time")', sync.WINDOW_SCAN),
        (
            'CREATE INDEX ON iot_data.measurements (device_id, parameter_id, "time") WHERE value > 0',
            sync.WINDOW_SCAN,
        ),
        ("CREATE INDEX ON iot_data.measurements USING hash (device_id)", sync.WINDOW_SCAN),
        ('CREATE INDEX ON iot_data.measurements (lower(device_id), parameter_id, "time")', sync.WINDOW_SCAN),
    ],
    ids=["none", "recommended", "wider", "time-only", "no-time", "wrong-order", "partial", "hash", "expression"],
)
def test_the_method_follows_the_indexes_in_the_catalog(
    conn: psycopg.Connection[Any], index: str | None, method: str
) -> None:
    if index:
        execute(conn, index)
    config = load_settings()
    add_devices(conn, ("d1", "Device 1", True))
    add_measurements(conn, ("d1", "p1", END - timedelta(minutes=1)))
    staging = StagingTables.for_run(config.staging_schema, "dag", "method")
    sync.discover_active_devices(conn, config, staging)

    summary = sync.aggregate_recent_measurements(conn, config, staging, WINDOW)

    assert summary == {"shard": 0, "shards": 1, "method": method, "shard_pairs": 1}
    drop_tables(conn, config, staging)


@pytest.mark.parametrize(
    "layout",
    [
        """CREATE TABLE iot_data.measurements
               (device_id TEXT, parameter_id TEXT, "time" TIMESTAMPTZ, value DOUBLE PRECISION)
               PARTITION BY RANGE ("time");
           CREATE TABLE iot_data.measurements_2024 PARTITION OF iot_data.measurements
               FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')""",
        """CREATE TABLE iot_data.measurements
               (device_id TEXT, parameter_id TEXT, "time" TIMESTAMPTZ, value DOUBLE PRECISION);
           CREATE TABLE iot_data.measurements_chunk () INHERITS (iot_data.measurements)""",
    ],
    ids=["partitioned", "inherited-chunks"],
)
def test_partitioned_measurements_are_read_partition_by_partition(conn: psycopg.Connection[Any], layout: str) -> None:
    """Every probe of a skip scan on the parent would visit every partition: each partition that overlaps the
    window is read on its own (here one tiny partition: by the window scan, the cheaper there)."""
    execute(conn, "DROP TABLE iot_data.measurements; " + layout)
    execute(conn, PAIR_INDEX)
    add_devices(conn, ("d1", "Device 1", True))
    add_measurements(conn, ("d1", "p1", END - timedelta(minutes=1)))
    config = load_settings()
    staging = StagingTables.for_run(config.staging_schema, "dag", "partitioned")
    sync.discover_active_devices(conn, config, staging)

    summary = sync.aggregate_recent_measurements(conn, config, staging, WINDOW)

    assert (summary["method"], summary["shard_pairs"]) == (sync.BY_PARTITION, 1)
    # An inheritance parent may hold rows of its own: it is read (ONLY itself) like a partition.
    assert summary["partitions_by_method"] == {sync.WINDOW_SCAN: 1 if "PARTITION BY" in layout else 2}
    drop_tables(conn, config, staging)


def test_the_skip_scan_probes_the_index_instead_of_reading_the_window(
    conn: psycopg.Connection[Any], pair_index: None
) -> None:
    """One device, one parameter, 5,000 rows in the window: the skip scan touches a handful of index
    entries, the window scan all 5,000 rows."""
    add_devices(conn, ("d1", "Device 1", True))
    execute(
        conn,
        'INSERT INTO iot_data.measurements (device_id, parameter_id, "time", value)'
        " SELECT 'd1', 'p1', %s - make_interval(secs => s * 0.5), 1 FROM generate_series(1, 5000) AS s",
        (END,),
    )
    execute(conn, "ANALYZE iot_data.measurements")
    config = load_settings()
    staging = StagingTables.for_run(config.staging_schema, "dag", "explain")
    sync.discover_active_devices(conn, config, staging)
    identifiers = {**staging.identifiers(config), "source": staging.identifiers(config)["measurements"]}

    def rows_read(sql_file: str) -> int:
        """Rows that the plan's scans of the measurements table returned, from EXPLAIN ANALYZE."""
        statement = psycopg.sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) ") + db.compose(sql_file, identifiers)
        with conn.transaction():
            ((plan,),) = conn.execute(statement, {**WINDOW.as_params(), "shard": 0, "shards": 1}).fetchall()

        def walk(node: dict[str, Any]) -> int:
            own = node.get("Actual Rows", 0) * node.get("Actual Loops", 1)
            scanned = own if node.get("Relation Name") == "measurements" else 0
            return scanned + sum(walk(child) for child in node.get("Plans", []))

        return walk(plan[0]["Plan"])

    skip_scan = rows_read(f"{db.STEPS_SQL}observed_pairs_skip_scan.sql")
    window_scan = rows_read(f"{db.STEPS_SQL}observed_pairs_window_scan.sql")

    assert skip_scan <= 5
    assert window_scan >= 5000
    drop_tables(conn, config, staging)


# Native partitions whose bounds fall on the window's edges: before the window, its first half, its second half
# (hash sub-partitions by device), and a DEFAULT partition that takes the window's end, later rows and NULL times.
NATIVE_PARTITIONS = f"""
DROP TABLE iot_data.measurements;
CREATE TABLE iot_data.measurements
    (device_id TEXT, parameter_id TEXT, "time" TIMESTAMPTZ, value DOUBLE PRECISION) PARTITION BY RANGE ("time");
CREATE TABLE iot_data.measurements_before PARTITION OF iot_data.measurements
    FOR VALUES FROM (MINVALUE) TO ('{START.isoformat()}');
CREATE TABLE iot_data.measurements_first_half PARTITION OF iot_data.measurements
    FOR VALUES FROM ('{START.isoformat()}') TO ('{(START + timedelta(minutes=30)).isoformat()}');
CREATE TABLE iot_data.measurements_second_half PARTITION OF iot_data.measurements
    FOR VALUES FROM ('{(START + timedelta(minutes=30)).isoformat()}') TO ('{END.isoformat()}')
    PARTITION BY HASH (device_id);
CREATE TABLE iot_data.measurements_second_half_0 PARTITION OF iot_data.measurements_second_half
    FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE iot_data.measurements_second_half_1 PARTITION OF iot_data.measurements_second_half
    FOR VALUES WITH (MODULUS 2, REMAINDER 1);
CREATE TABLE iot_data.measurements_default PARTITION OF iot_data.measurements DEFAULT;
{PAIR_INDEX};
"""
# The partition-by-partition choice, and each way forced on every partition that allows it.
PARTITION_METHODS = (sync.BY_PARTITION, *(f"{sync.BY_PARTITION}:{way}" for way in (sync.SKIP_SCAN, sync.WINDOW_SCAN)))
PARTITION_TIMES = [*TIMES, START + timedelta(minutes=30) - MICROSECOND, START + timedelta(minutes=30)]


@st.composite
def partitioned_fleets(draw: st.DrawFn) -> tuple[list[Any], list[Any]]:
    devices, measurements = draw(fleets())
    extra = draw(
        st.lists(
            st.tuples(
                st.sampled_from([d for d, _, _ in devices] or DEVICE_IDS),
                st.sampled_from(PARAMETER_IDS),
                st.sampled_from(PARTITION_TIMES),
            ),
            max_size=10,
        )
    )
    return devices, measurements + extra


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60, deadline=None, database=None)
@given(fleet=partitioned_fleets(), shards=st.sampled_from([1, 2, 3]))
def test_native_partitions_stage_exactly_the_plain_querys_pairs_by_every_method(
    conn: psycopg.Connection[Any], fleet: tuple[list[Any], list[Any]], shards: int
) -> None:
    execute(conn, NATIVE_PARTITIONS)
    devices, measurements = fleet
    add_devices(conn, *devices)
    add_measurements(conn, *measurements)
    config = load_settings()
    staging = StagingTables.for_run(config.staging_schema, "dag", "partitions")
    sync.discover_active_devices(conn, config, staging)

    (plain,) = staged_pairs(conn, staging, sync.WINDOW_SCAN, 1)  # the window scan of the parent
    for method in (
        sync.BY_PARTITION,
        f"{sync.BY_PARTITION}:{sync.SKIP_SCAN}",
        f"{sync.BY_PARTITION}:{sync.WINDOW_SCAN}",
    ):
        split = staged_pairs(conn, staging, method, shards)
        assert sum(split, Counter()) == plain, method
        assert all(count == 1 for shard in split for count in shard.values()), method
    drop_tables(conn, config, staging)
