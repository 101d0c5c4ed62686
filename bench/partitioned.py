"""The partitioned cases of the benchmark: finding the window's pairs on partitioned measurements.

One generated fleet (every device reports every parameter once a minute for 36 h; a 24 h window ending at the
data's end) in three layouts, each with the index on (device_id, parameter_id, time):

- native daily partitions (plus a DEFAULT partition) on the machine's PostgreSQL;
- native hourly partitions, where each partition holds few rows per pair (the method choice);
- a TimescaleDB hypertable with 1-day chunks, on a throwaway server with the extension preloaded (when
  TimescaleDB is installed: ``scripts/ensure_timescaledb.sh``), uncompressed, then with the older chunk
  compressed (columnstore).

Each case times, warm, the median of ``--runs`` runs: ours (``aggregate_recent_measurements`` as the DAG runs
it: the plan's partitions, the choice, the staging table), the plain ``SELECT DISTINCT`` over the window,
TimescaleDB's own SkipScan DISTINCT (its id columns set NOT NULL for that measurement only), and the floor (the
loose index scan of bench/sql/floor_loose_index_scan.sql on each overlapping partition, without staging or
bookkeeping). A no-change rerun of the whole sync on the daily partitions must write no row.

    python bench/partitioned.py [--devices N] [--runs N] [--no-timescaledb]    # also part of `make bench`

Results: bench/results/partitioned.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))
from common import ADMIN_URL, BENCH, REPO, load_sql, rounded, say
from pg import connect, write_mark, writes_since
from psycopg import sql

from device_sync import sync
from device_sync.config import load_settings
from device_sync.staging import StagingTables, drop_tables
from device_sync.window import Window

DATABASE = "device_sync_bench_partitioned"
DATA_END = datetime(2026, 11, 30, 12, tzinfo=UTC)
DATA_HOURS = 36
WINDOW = Window.ending_at(DATA_END, 24 * 60)
PARAMETERS = 20
PAIR_INDEX = 'CREATE INDEX ON {} (device_id, parameter_id, "time")'
SOURCES = """
CREATE SCHEMA IF NOT EXISTS iot_data;
DROP TABLE IF EXISTS iot_data.redshift_devices, iot_data.timescale_parameters, iot_data.device_parameters;
DROP SCHEMA IF EXISTS device_sync CASCADE;
CREATE TABLE iot_data.redshift_devices (device_id TEXT, device_name TEXT, status BOOLEAN);
CREATE TABLE iot_data.timescale_parameters (parameter_id TEXT, parameter_name TEXT);
INSERT INTO iot_data.redshift_devices
    SELECT format('dev-%%s', lpad(d::text, 5, '0')), format('Device %%s', d), true
    FROM generate_series(1, %(devices)s::int) AS d;
INSERT INTO iot_data.timescale_parameters
    SELECT format('par-%%s', lpad(p::text, 4, '0')), format('parameter %%s', p)
    FROM generate_series(1, %(parameters)s::int) AS p;
"""


def median_seconds(action: Callable[[], Any], runs: int) -> tuple[float, Any]:
    """Run ``action`` once to warm the caches, then ``runs`` times; the median seconds and the last result."""
    result = action()
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        result = action()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


@contextmanager
def measurements_table(table: str) -> Iterator[None]:
    """The sync's settings point at ``table`` (DEVICE_SYNC_MEASUREMENTS_TABLE) for the duration."""
    saved = os.environ.get("DEVICE_SYNC_MEASUREMENTS_TABLE")
    os.environ["DEVICE_SYNC_MEASUREMENTS_TABLE"] = table
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("DEVICE_SYNC_MEASUREMENTS_TABLE", None)
        else:
            os.environ["DEVICE_SYNC_MEASUREMENTS_TABLE"] = saved


def identifier(table: str) -> sql.Identifier:
    return sql.Identifier(*table.split("."))


def create_native(conn: psycopg.Connection[Any], table: str, step: timedelta, devices: int) -> None:
    """A natively range-partitioned table, one partition per ``step`` over the data and a DEFAULT one."""
    target = identifier(table)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(target))
    conn.execute(
        sql.SQL(
            'CREATE TABLE {} (device_id TEXT, parameter_id TEXT, "time" TIMESTAMPTZ, value DOUBLE PRECISION)'
            ' PARTITION BY RANGE ("time")'
        ).format(target)
    )
    start = DATA_END - timedelta(hours=DATA_HOURS)
    bound = start.replace(hour=0) if step >= timedelta(days=1) else start
    while bound < DATA_END:
        name = f"{table.split('.')[1]}_{bound:%Y%m%d_%H}"
        conn.execute(
            sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
                sql.Identifier(table.split(".")[0], name), target, sql.Literal(bound), sql.Literal(bound + step)
            )
        )
        bound += step
    conn.execute(
        sql.SQL("CREATE TABLE {} PARTITION OF {} DEFAULT").format(
            sql.Identifier(table.split(".")[0], f"{table.split('.')[1]}_default"), target
        )
    )
    fill(conn, table, devices)


def fill(conn: psycopg.Connection[Any], table: str, devices: int) -> None:
    started = time.perf_counter()
    conn.execute(
        sql.SQL(load_sql("partitioned_fleet")).format(measurements=identifier(table)),
        {
            "data_start": DATA_END - timedelta(hours=DATA_HOURS),
            "data_end": DATA_END,
            "devices": devices,
            "parameters": PARAMETERS,
        },
    )
    conn.execute(sql.SQL(PAIR_INDEX).format(identifier(table)))
    conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(identifier(table)))
    say(f"  {table}: generated, indexed and analysed in {time.perf_counter() - started:.0f} s")


def sources(conn: psycopg.Connection[Any], devices: int) -> None:
    for statement in filter(str.strip, SOURCES.split(";")):
        params = {"devices": devices, "parameters": PARAMETERS} if "%(" in statement else None
        conn.execute(statement if params else statement.replace("%%", "%"), params)


def ours(conn: psycopg.Connection[Any], table: str, method: str | None = None) -> dict[str, Any]:
    """aggregate_recent_measurements as the DAG runs it (one shard), timed; the active devices staged first."""
    with measurements_table(table):
        settings = load_settings()
        staging = StagingTables.for_run(settings.staging_schema, sync.DAG_ID, "bench-partitioned")
        sync.discover_active_devices(conn, settings, staging)
        seconds, summary = median_seconds(
            lambda: sync.aggregate_recent_measurements(conn, settings, staging, WINDOW, method=method), RUNS
        )
        drop_tables(conn, settings, staging)
    return {"seconds": seconds, "pairs": summary["shard_pairs"], "partitions": summary.get("partitions_by_method")}


def plain_distinct(conn: psycopg.Connection[Any], table: str) -> dict[str, Any]:
    statement = sql.SQL(
        'SELECT count(*) FROM (SELECT DISTINCT device_id, parameter_id FROM {} WHERE "time" >= %(window_start)s'
        ' AND "time" < %(window_end)s) AS pairs'
    ).format(identifier(table))

    def run() -> int:
        row = conn.execute(statement, WINDOW.as_params()).fetchone()
        return int(row[0]) if row else 0

    seconds, pairs = median_seconds(run, RUNS)
    plan = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + statement, WINDOW.as_params()).fetchone()
    nodes = json.dumps(plan[0] if plan else [])
    return {"seconds": seconds, "pairs": pairs, "timescaledb_skip_scan": "SkipScan" in nodes}


def floor(conn: psycopg.Connection[Any], table: str) -> dict[str, Any]:
    """The loose index scan on each partition that overlaps the window, one after the other."""
    with measurements_table(table):
        settings = load_settings()
        with conn.cursor() as cur:
            overlapping = [p for p in sync.partitions.overlapping(cur, settings, WINDOW) if not p.custom_scan]
    statements = [load_sql("floor_loose_index_scan").replace("iot_data.measurements", p.name) for p in overlapping]

    def run() -> int:
        return sum(len(conn.execute(statement, WINDOW.as_params()).fetchall()) for statement in statements)

    seconds, pairs = median_seconds(run, RUNS)
    return {"seconds": seconds, "pairs": pairs, "partitions": len(statements)}


def compressed_chunk_ways(conn: psycopg.Connection[Any], chunk: str) -> dict[str, Any]:
    """The two ways to find a compressed chunk's pairs in the window, timed on that chunk alone: the window
    scan through TimescaleDB's decompression (what ours does) and the loose index scan through it (each
    probe decompresses), the latter bounded by a statement timeout."""
    window_scan = (
        'SELECT DISTINCT device_id, parameter_id FROM {} WHERE "time" >= %(window_start)s AND "time" < %(window_end)s'
    )
    probe = load_sql("floor_loose_index_scan").replace("iot_data.measurements", chunk)
    found: dict[str, Any] = {}
    for way, statement in (("window_scan", window_scan.replace("{}", chunk)), ("skip_scan", probe)):
        conn.execute("SET statement_timeout = '60s'")
        try:
            seconds, rows = median_seconds(lambda s=statement: conn.execute(s, WINDOW.as_params()).fetchall(), RUNS)
            found[way] = {"seconds": seconds, "pairs": len(rows)}
        except psycopg.errors.QueryCanceled:
            found[way] = {"seconds": None, "note": "over 60 s"}
        finally:
            conn.execute("RESET statement_timeout")
    return found


def no_change_rerun(url: str, table: str) -> dict[str, Any]:
    """The whole sync twice over the same window, each on a session of its own (a session's row counts reach
    the statistics when it ends): the rows the second run wrote to the target."""
    with measurements_table(table):
        settings = load_settings()
        summaries = {}
        for run in ("first", "rerun"):
            if run == "rerun":
                mark = write_mark(url)
            with connect(url, autocommit=False) as conn:
                sync.ensure_schema(conn, settings)
                staging = StagingTables.for_run(settings.staging_schema, sync.DAG_ID, f"bench-{run}")
                summaries[run] = sync.sync_once(conn, settings, staging, WINDOW, run_id=f"bench-{run}")
            time.sleep(1)
    written = writes_since(url, mark, DATABASE)
    return {"first_run_inserted": summaries["first"]["inserted"], "rerun_rows_written": written["rows_written"]}


def timescaledb_installed() -> bool:
    return (
        subprocess.run([str(REPO / "scripts/ensure_timescaledb.sh")], capture_output=True, check=False).returncode == 0
    )


def native_cases(devices: int) -> dict[str, Any]:
    from fleet import recreate_database

    recreate_database(DATABASE)
    url = psycopg.conninfo.make_conninfo(ADMIN_URL, dbname=DATABASE)
    results: dict[str, Any] = {}
    with connect(url) as conn:
        sources(conn, devices)
        say("native daily partitions")
        create_native(conn, "iot_data.measurements_daily", timedelta(days=1), devices)
        results["daily"] = {
            "ours": ours(conn, "iot_data.measurements_daily"),
            "plain_distinct": plain_distinct(conn, "iot_data.measurements_daily"),
            "floor": floor(conn, "iot_data.measurements_daily"),
        }
        say(f"  {results['daily']}")
        results["daily"]["no_change"] = no_change_rerun(url, "iot_data.measurements_daily")
        say(f"  no-change rerun: {results['daily']['no_change']}")
        say("native hourly partitions")
        create_native(conn, "iot_data.measurements_hourly", timedelta(hours=1), devices)
        table = "iot_data.measurements_hourly"
        results["hourly"] = {
            "ours": ours(conn, table),
            "skip_scan_every_partition": ours(conn, table, f"{sync.BY_PARTITION}:{sync.SKIP_SCAN}"),
            "window_scan_every_partition": ours(conn, table, f"{sync.BY_PARTITION}:{sync.WINDOW_SCAN}"),
            "plain_distinct": plain_distinct(conn, table),
        }
        say(f"  {results['hourly']}")
    with connect(ADMIN_URL) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE)))
    return results


def timescaledb_case(devices: int) -> dict[str, Any]:
    sys.path.insert(0, str(REPO / "scripts"))
    from throwaway_postgres import throwaway_cluster

    settings = {"shared_preload_libraries": "timescaledb", "timescaledb.telemetry_level": "off"}
    with throwaway_cluster(settings, prefix="device-sync-bench-timescaledb-") as url, connect(url) as conn:
        conn.execute("CREATE EXTENSION timescaledb")
        row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
        sources(conn, devices)
        table = "iot_data.measurements"
        conn.execute(
            'CREATE TABLE iot_data.measurements (device_id TEXT, parameter_id TEXT, "time" TIMESTAMPTZ NOT NULL,'
            " value DOUBLE PRECISION)"
        )
        conn.execute(
            "SELECT create_hypertable('iot_data.measurements', 'time', chunk_time_interval => interval '1 day')"
        )
        say("TimescaleDB hypertable, 1-day chunks")
        fill(conn, table, devices)
        result: dict[str, Any] = {
            "timescaledb": row[0] if row else None,
            "ours": ours(conn, table),
            "plain_distinct": plain_distinct(conn, table),
            "floor": floor(conn, table),
        }
        not_null = "ALTER TABLE iot_data.measurements ALTER device_id {0} NOT NULL, ALTER parameter_id {0} NOT NULL"
        conn.execute(not_null.format("SET"))
        conn.execute("ANALYZE iot_data.measurements")
        result["timescaledb_skip_scan_distinct"] = plain_distinct(conn, table)
        conn.execute(
            "ALTER TABLE iot_data.measurements ALTER device_id DROP NOT NULL, ALTER parameter_id DROP NOT NULL"
        )
        say(f"  {result}")
        conn.execute(
            "ALTER TABLE iot_data.measurements SET (timescaledb.compress,"
            " timescaledb.compress_segmentby = 'device_id, parameter_id', timescaledb.compress_orderby = 'time')"
        )
        oldest = conn.execute("SELECT show_chunks('iot_data.measurements') ORDER BY 1 LIMIT 1").fetchone()
        assert oldest is not None
        conn.execute("SELECT compress_chunk(%s)", (oldest[0],))
        conn.execute("ANALYZE iot_data.measurements")
        result["older_chunk_compressed"] = {
            "ours": ours(conn, table),
            "plain_distinct": plain_distinct(conn, table),
            "compressed_chunk_alone": compressed_chunk_ways(conn, str(oldest[0])),
        }
        say(f"  compressed: {result['older_chunk_compressed']}")
    return result


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("inf")


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    daily, hourly = results["native"]["daily"], results["native"]["hourly"]
    found = [
        (
            "daily partitions: ours <= 0.3x the plain DISTINCT",
            ratio(daily["ours"]["seconds"], daily["plain_distinct"]["seconds"]),
            lambda value: value <= 0.3,
        ),
        (
            "hourly partitions: ours <= 1.2x the faster of skip scan and window scan on every partition",
            ratio(
                hourly["ours"]["seconds"],
                min(hourly["skip_scan_every_partition"]["seconds"], hourly["window_scan_every_partition"]["seconds"]),
            ),
            lambda value: value <= 1.2,
        ),
        ("no-change rerun writes no row", float(daily["no_change"]["rerun_rows_written"]), lambda value: value == 0),
    ]
    hypertable = results.get("timescaledb")
    if hypertable:
        found += [
            (
                "1-day chunks: ours <= 0.3x the plain DISTINCT",
                ratio(hypertable["ours"]["seconds"], hypertable["plain_distinct"]["seconds"]),
                lambda value: value <= 0.3,
            ),
            (
                "1-day chunks: ours >= 2.5x faster than TimescaleDB's SkipScan DISTINCT",
                ratio(hypertable["timescaledb_skip_scan_distinct"]["seconds"], hypertable["ours"]["seconds"]),
                lambda value: value >= 2.5,
            ),
        ]
    return [{"target": name, "measured": round(value, 3), "passed": check(value)} for name, value, check in found]


def compressed_lines(results: dict[str, Any]) -> list[str]:
    if not results.get("timescaledb"):
        return []
    ways = results["timescaledb"]["older_chunk_compressed"]["compressed_chunk_alone"]

    def shown(way: str) -> str:
        seconds = ways[way].get("seconds")
        return f"{seconds:.3f} s" if seconds is not None else ways[way]["note"]

    return [
        f"The compressed chunk alone (segmented by device_id, parameter_id): window scan through TimescaleDB's "
        f"decompression {shown('window_scan')}, loose index scan through it {shown('skip_scan')}; ours reads a "
        f"compressed chunk segmented by the pair by the skip scan, any other by the window scan."
    ]


def report(results: dict[str, Any]) -> str:
    lines = [
        "# Partitioned measurements: the aggregation step",
        "",
        f"{results['devices']} devices x {PARAMETERS} parameters, one row a minute for {DATA_HOURS} h "
        f"({results['rows']:,} rows), a 24 h window; warm medians of {results['runs']} runs, measured "
        f"{results['measured_at']}.",
        "",
        "| case | ours | plain DISTINCT | TimescaleDB SkipScan DISTINCT | floor | ours / plain | how ours read it |",
        "|---|---|---|---|---|---|---|",
    ]

    def row(name: str, case: dict[str, Any]) -> None:
        skip = case.get("timescaledb_skip_scan_distinct", {}).get("seconds")
        floor_seconds = case.get("floor", {}).get("seconds")
        lines.append(
            f"| {name} | {case['ours']['seconds']:.3f} s | {case['plain_distinct']['seconds']:.3f} s | "
            f"{f'{skip:.3f} s' if skip else '—'} | {f'{floor_seconds:.3f} s' if floor_seconds else '—'} | "
            f"{ratio(case['ours']['seconds'], case['plain_distinct']['seconds']):.2f}x | "
            f"{case['ours']['partitions']} |"
        )

    row("native daily partitions", results["native"]["daily"])
    row("native hourly partitions", results["native"]["hourly"])
    if results.get("timescaledb"):
        row(f"hypertable, 1-day chunks (TimescaleDB {results['timescaledb']['timescaledb']})", results["timescaledb"])
        row("hypertable, older chunk compressed", results["timescaledb"]["older_chunk_compressed"])
    hourly = results["native"]["hourly"]
    lines += [
        "",
        f"Hourly partitions, each way forced on every partition: skip scan "
        f"{hourly['skip_scan_every_partition']['seconds']:.3f} s, window scan "
        f"{hourly['window_scan_every_partition']['seconds']:.3f} s.",
        *compressed_lines(results),
        f"No-change rerun of the whole sync on the daily partitions: "
        f"{results['native']['daily']['no_change']['rerun_rows_written']} rows written.",
        "",
        "| target | measured | |",
        "|---|---|---|",
        *(f"| {t['target']} | {t['measured']} | {'PASS' if t['passed'] else 'FAIL'} |" for t in results["targets"]),
    ]
    return "\n".join(lines) + "\n"


RUNS = 3


def main(argv: list[str] | None = None) -> int:
    global RUNS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=300, help="devices of the fleet (x 20 parameters)")
    parser.add_argument("--runs", type=int, default=3, help="warm runs per measurement; the median is reported")
    parser.add_argument("--no-timescaledb", action="store_true", help="skip the hypertable case")
    parser.add_argument("--output-dir", type=Path, default=BENCH / "results")
    args = parser.parse_args(argv)
    RUNS = args.runs
    results: dict[str, Any] = {
        "devices": args.devices,
        "rows": args.devices * PARAMETERS * DATA_HOURS * 60,
        "runs": args.runs,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "native": native_cases(args.devices),
    }
    if args.no_timescaledb:
        say("TimescaleDB case skipped (--no-timescaledb)")
    elif timescaledb_installed():
        results["timescaledb"] = timescaledb_case(args.devices)
    else:
        say("TimescaleDB is not installed and could not be built: the hypertable case is skipped")
    results["targets"] = targets(results)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "partitioned.json").write_text(json.dumps(rounded(results), indent=2) + "\n")
    (args.output_dir / "partitioned.md").write_text(report(results))
    say(report(results))
    return 0 if all(t["passed"] for t in results["targets"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
