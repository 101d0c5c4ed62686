"""The variants the benchmark times, each one run from the same drifted target.

- ours: the package's own steps (device_sync.sync), exactly what the DAG's tasks run, on one connection;
  with ``shards`` > 1 the aggregation shards run side by side on their own connections, like mapped tasks;
- seed-like: what the original Lambda-style service did (pairs, devices, names and target into Python,
  the delta with Python sets, one statement per changed row, one transaction);
- staging pattern: the usual Airflow staging table plus a set-based upsert and delete, one transaction;
- floor: only the query that finds the window's distinct pairs (a plain DISTINCT, or a loose index scan).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from common import load_sql
from pg import connect

from device_sync import db, sync
from device_sync.config import Settings
from device_sync.staging import StagingTables, drop_tables
from device_sync.window import Window


@dataclass
class RunResult:
    """One timed run: its total seconds, the seconds of its steps and what it reported (counts, method)."""

    seconds: float
    steps: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def window_params(window_end: datetime, lookback_minutes: int) -> dict[str, datetime]:
    return {"window_start": window_end - timedelta(minutes=lookback_minutes), "window_end": window_end}


# --- ours ---------------------------------------------------------------------------------------------------


def _aggregate(
    conn: psycopg.Connection[Any],
    settings: Settings,
    staging: StagingTables,
    window: Window,
    shard: int,
    shards: int,
) -> tuple[dict[str, Any], float]:
    """One aggregation shard and its own seconds."""
    started = time.perf_counter()
    summary = sync.aggregate_recent_measurements(conn, settings, staging, window, shard=shard, shards=shards)
    return summary, time.perf_counter() - started


def run_ours(settings: Settings, window_end: datetime, lookback_minutes: int, shards: int = 1) -> RunResult:
    """All steps of one DAG run, timed per step. Connections are opened before and closed after the timing;
    the staging tables are dropped untimed (the DAG's teardown)."""
    run_id = f"bench-{uuid.uuid4().hex[:12]}"
    staging = StagingTables.for_run(settings.staging_schema, "bench", run_id)
    window = Window.ending_at(window_end, lookback_minutes)
    connections = [db.connect(settings.postgres_conn_id) for _ in range(shards)]
    conn = connections[0]
    steps: dict[str, float] = {}
    info: dict[str, Any] = {"shards": shards}
    try:
        started = time.perf_counter()
        step_started = started
        devices = sync.discover_active_devices(conn, settings, staging)
        steps["discover_active_devices"] = time.perf_counter() - step_started

        step_started = time.perf_counter()
        if shards == 1:
            shard_results = [_aggregate(conn, settings, staging, window, 0, 1)]
        else:
            with ThreadPoolExecutor(max_workers=shards, thread_name_prefix="shard") as pool:
                futures = [
                    pool.submit(_aggregate, connections[shard], settings, staging, window, shard, shards)
                    for shard in range(shards)
                ]
                shard_results = [future.result() for future in futures]
        steps["aggregate_recent_measurements"] = time.perf_counter() - step_started

        step_started = time.perf_counter()
        names = sync.resolve_parameter_names(conn, settings, staging, shards=shards)
        steps["resolve_parameter_names"] = time.perf_counter() - step_started

        step_started = time.perf_counter()
        delta = sync.compute_delta(conn, settings, staging)
        steps["compute_delta"] = time.perf_counter() - step_started

        step_started = time.perf_counter()
        run = {"run_id": run_id, "dag_id": "bench", "window_start": window.start, "window_end": window.end}
        applied = sync.apply_changes(conn, settings, staging, run=run)
        steps["apply_changes"] = time.perf_counter() - step_started
        seconds = time.perf_counter() - started
    finally:
        try:
            drop_tables(conn, settings, staging)
        finally:
            for connection in connections:
                connection.close()
    info.update(
        {
            "method": shard_results[0][0].get("method"),
            "active_devices": devices.get("active_devices"),
            "observed_pairs": names.get("observed_pairs"),
            "shard_pairs": [summary.get("shard_pairs") for summary, _ in shard_results],
            "aggregate_shard_seconds": [seconds for _, seconds in shard_results],
            "resolved": {key: value for key, value in names.items() if isinstance(value, int | float)},
            "delta": {key: delta[key] for key in ("inserts", "updates", "deletes") if key in delta},
            "inserted": applied["inserted"],
            "updated": applied["updated"],
            "deleted": applied["deleted"],
            "applied": applied["applied"],
            "guard": applied["guard"],
        }
    )
    return RunResult(seconds=seconds, steps=steps, info=info)


# --- seed-like ----------------------------------------------------------------------------------------------

SEED_ACTIVE_DEVICES = "SELECT device_id, device_name FROM iot_data.redshift_devices WHERE status IS TRUE"
SEED_PARAMETERS = "SELECT parameter_id, parameter_name FROM iot_data.timescale_parameters"
SEED_PAIRS = (
    'SELECT DISTINCT device_id, parameter_id FROM iot_data.measurements WHERE "time" >= %s AND "time" < %s'
    " AND device_id = ANY (%s)"
)
SEED_TARGET = "SELECT device_id, parameter_id, device_name, parameter_name FROM iot_data.device_parameters"
SEED_INSERT = (
    "INSERT INTO iot_data.device_parameters (device_id, device_name, parameter_id, parameter_name)"
    " VALUES (%s, %s, %s, %s)"
)
SEED_DELETE = "DELETE FROM iot_data.device_parameters WHERE device_id = %s AND parameter_id = %s"
SEED_UPDATE = (
    "UPDATE iot_data.device_parameters SET device_name = %s, parameter_name = %s, updated_at = now()"
    " WHERE device_id = %s AND parameter_id = %s"
)


def run_seed_like(url: str, window_end: datetime, lookback_minutes: int) -> RunResult:
    """The original service's algorithm: everything into Python, then one statement per changed row."""
    window = window_params(window_end, lookback_minutes)
    steps: dict[str, float] = {}
    with connect(url, autocommit=False) as conn, conn.cursor() as cur:
        started = time.perf_counter()
        devices: dict[str, str] = dict(cur.execute(SEED_ACTIVE_DEVICES).fetchall())
        names: dict[str, str] = dict(cur.execute(SEED_PARAMETERS).fetchall())
        steps["fetch_devices_and_names"] = time.perf_counter() - started

        step_started = time.perf_counter()
        pairs = cur.execute(SEED_PAIRS, (window["window_start"], window["window_end"], list(devices))).fetchall()
        steps["distinct_pairs"] = time.perf_counter() - step_started

        step_started = time.perf_counter()
        current = {(row[0], row[1]): (row[2], row[3]) for row in cur.execute(SEED_TARGET).fetchall()}
        steps["fetch_target"] = time.perf_counter() - step_started

        step_started = time.perf_counter()
        desired = {
            (device, parameter): (devices[device], names[parameter])
            for device, parameter in pairs
            if device in devices and parameter in names
        }
        inserts = sorted(desired.keys() - current.keys())
        deletes = sorted(current.keys() - desired.keys())
        updates = sorted(key for key in desired.keys() & current.keys() if desired[key] != current[key])
        steps["python_delta"] = time.perf_counter() - step_started

        step_started = time.perf_counter()
        for device, parameter in inserts:
            device_name, parameter_name = desired[(device, parameter)]
            cur.execute(SEED_INSERT, (device, device_name, parameter, parameter_name))
        for device, parameter in deletes:
            cur.execute(SEED_DELETE, (device, parameter))
        for device, parameter in updates:
            device_name, parameter_name = desired[(device, parameter)]
            cur.execute(SEED_UPDATE, (device_name, parameter_name, device, parameter))
        steps["row_by_row_apply"] = time.perf_counter() - step_started

        step_started = time.perf_counter()
        conn.commit()
        steps["commit"] = time.perf_counter() - step_started
        seconds = time.perf_counter() - started
    info = {
        "observed_pairs": len(pairs),
        "inserted": len(inserts),
        "deleted": len(deletes),
        "updated": len(updates),
        "statements": len(inserts) + len(deletes) + len(updates),
    }
    return RunResult(seconds=seconds, steps=steps, info=info)


# --- staging pattern ----------------------------------------------------------------------------------------


def run_staging_pattern(url: str, window_end: datetime, lookback_minutes: int) -> RunResult:
    """A staging table of the window's named pairs, then INSERT ... ON CONFLICT and DELETE, one transaction."""
    window = window_params(window_end, lookback_minutes)
    steps: dict[str, float] = {}
    with connect(url, autocommit=False) as conn, conn.cursor() as cur:
        started = time.perf_counter()
        cur.execute(load_sql("staging_pattern_stage"), window)
        cur.execute("ANALYZE bench_staging")
        steps["stage"] = time.perf_counter() - started

        step_started = time.perf_counter()
        upserted = cur.execute(load_sql("staging_pattern_upsert")).fetchall()
        steps["upsert"] = time.perf_counter() - step_started

        step_started = time.perf_counter()
        cur.execute(load_sql("staging_pattern_delete"))
        deleted = cur.rowcount
        steps["delete"] = time.perf_counter() - step_started

        step_started = time.perf_counter()
        conn.commit()
        steps["commit"] = time.perf_counter() - step_started
        seconds = time.perf_counter() - started
    inserted = sum(1 for (was_insert,) in upserted if was_insert)
    info = {"inserted": inserted, "updated": len(upserted) - inserted, "deleted": deleted}
    return RunResult(seconds=seconds, steps=steps, info=info)


# --- floor --------------------------------------------------------------------------------------------------

FLOOR_QUERIES = {"plain_distinct": "floor_distinct", "loose_index_scan": "floor_loose_index_scan"}


def run_floor(url: str, query: str, window_end: datetime, lookback_minutes: int) -> RunResult:
    """Only the pairs of the window, fetched in full by the client."""
    with connect(url) as conn, conn.cursor() as cur:
        started = time.perf_counter()
        pairs = cur.execute(load_sql(FLOOR_QUERIES[query]), window_params(window_end, lookback_minutes)).fetchall()
        seconds = time.perf_counter() - started
    return RunResult(seconds=seconds, steps={"query": seconds}, info={"pairs": len(pairs)})


def explain_floor(url: str, query: str, window_end: datetime, lookback_minutes: int) -> str:
    """EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) of a floor query: the plan as text."""
    with connect(url) as conn:
        rows = conn.execute(
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + load_sql(FLOOR_QUERIES[query]).rstrip().rstrip(";"),
            window_params(window_end, lookback_minutes),
        ).fetchall()
    return "\n".join(str(row[0]) for row in rows)


_NODE = re.compile(r"^(?:->\s+)?([A-Z][A-Za-z ]*?)(?=\s+(?:on|using)\s|\s*\(|\s*$)")


def plan_shape(plan: str) -> str:
    """The plan's node types in order of first appearance: a one-line summary of a text plan."""
    nodes: list[str] = []
    for number, line in enumerate(plan.splitlines()):
        text = line.strip()
        if number > 0 and not text.startswith("->"):
            continue  # details (Sort Key, Buffers, Filter ...), SubPlan/InitPlan labels
        match = _NODE.match(text)
        if match and match.group(1) not in nodes:
            nodes.append(match.group(1))
    return " > ".join(nodes)


Runner = Callable[[], RunResult]
