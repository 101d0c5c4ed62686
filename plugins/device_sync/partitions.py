"""Finding the window's pairs on a partitioned measurements table, partition by partition.

A loose index scan (observed_pairs_skip_scan.sql) on a partitioned table's parent would visit every
partition at every probe, so on partitioned tables (declarative partitions, a DEFAULT partition and
sub-partitions included, and TimescaleDB hypertables, whose chunks inherit from them) the pairs are found
in each partition that overlaps the window on its own, and the results are combined (a UNION: a pair seen
in two partitions is staged once).

Which partitions overlap the window is PostgreSQL's own answer, read at every run: the plan of the window
query, after partition pruning (the bounds in the catalog) and TimescaleDB's chunk exclusion (its chunks'
constraints). Its estimates, with each partition's statistics, choose how each partition is read:

- **skip scan** through the partition's own ``(device_id, parameter_id, time)`` index: a few probes per
  device and per pair stored in the partition, whatever its row count;
- **window scan**: a DISTINCT over the partition's rows in the window, when it has no such index, no
  statistics yet, or so few rows per pair that probing costs more (hourly partitions, say).

The estimate: a probe costs about as much as :data:`PROBE_COST_ROWS` rows of a window scan (measured by
``make bench``). The choice and its numbers are logged for every partition.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from device_sync import db
from device_sync.config import Settings
from device_sync.window import Window

log = logging.getLogger(__name__)

SKIP_SCAN = "skip_scan"
WINDOW_SCAN = "window_scan"
# One index probe of the skip scan costs about as much as reading this many rows in a window scan.
PROBE_COST_ROWS = 40.0


@dataclass(frozen=True)
class Partition:
    """One partition (or chunk) that overlaps the window, with the planner's and the catalog's numbers."""

    schema: str
    table: str
    window_rows: float  # the planner's estimate of its rows in the window
    rows: float  # reltuples (-1: never analyzed)
    device_n_distinct: float | None
    parameter_n_distinct: float | None
    has_pair_index: bool
    readable: bool = True
    # Read by a custom scan (a compressed TimescaleDB chunk: its rows live in another table, decompressed on read)
    custom_scan: bool = False
    # Its hypertable's compression segments by device_id and parameter_id: probes land on single batches
    segmented_by_pair: bool = False
    # The measurements table itself, an inheritance parent with rows of its own: read ONLY its own rows
    is_parent: bool = False

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.table}"

    def _distinct(self, n_distinct: float | None) -> float | None:
        if n_distinct is None or self.rows < 0:
            return None
        return -n_distinct * self.rows if n_distinct < 0 else n_distinct

    @property
    def devices(self) -> float | None:
        return self._distinct(self.device_n_distinct)

    @property
    def pairs(self) -> float | None:
        """At most every device with every parameter, and never more than its rows."""
        devices, parameters = self.devices, self._distinct(self.parameter_n_distinct)
        if devices is None or parameters is None:
            return None
        return min(self.rows, devices * parameters)

    @property
    def probes(self) -> float | None:
        """Index probes of a skip scan: one per device, about two per pair."""
        devices, pairs = self.devices, self.pairs
        return None if devices is None or pairs is None else devices + 2 * pairs

    @property
    def source(self) -> sql.Composable:
        """How a query names it: a leaf as it is (a compressed chunk decompresses only so), a parent ONLY."""
        identifier = sql.Identifier(self.schema, self.table)
        return sql.SQL("ONLY {}").format(identifier) if self.is_parent else identifier

    @property
    def method(self) -> str:
        if self.custom_scan:  # compressed: no statistics of its own; the compression layout decides
            return SKIP_SCAN if self.has_pair_index and self.segmented_by_pair else WINDOW_SCAN
        probes = self.probes
        if not self.has_pair_index or probes is None:
            return WINDOW_SCAN
        return SKIP_SCAN if probes * PROBE_COST_ROWS < self.window_rows else WINDOW_SCAN

    def describe(self) -> str:
        probes = "unknown (no statistics)" if self.probes is None else f"{self.probes:,.0f}"
        index = "" if self.has_pair_index else ", no (device_id, parameter_id, time) index"
        if self.custom_scan:
            index += ", compressed, " + (
                "segmented by device_id, parameter_id" if self.segmented_by_pair else "not segmented by the pair"
            )
        rows = f"~{self.window_rows:,.0f} rows in the window"
        return f"{self.name}: {self.method.replace('_', ' ')} ({rows}, probes {probes}{index})"


def is_partitioned(cur: psycopg.Cursor[Any], settings: Settings) -> bool:
    """Whether the measurements table has partitions or inheritance children (chunks)."""
    row = db.fetch_one_dict(
        cur,
        "SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhparent = to_regclass(%(measurements)s)) AS partitioned",
        {"measurements": settings.measurements_identifier.as_string(cur)},
    )
    return bool(row["partitioned"])


def _scanned_relations(plan: Mapping[str, Any]) -> Iterator[tuple[str, str, float, bool]]:
    """(schema, table, estimated rows, read by a custom scan) of every relation a plan node reads."""
    if "Relation Name" in plan and "Schema" in plan:
        custom = plan.get("Node Type") == "Custom Scan"
        yield str(plan["Schema"]), str(plan["Relation Name"]), float(plan.get("Plan Rows", 0)), custom
    for child in plan.get("Plans", []):
        yield from _scanned_relations(child)


def overlapping(cur: psycopg.Cursor[Any], settings: Settings, window: Window) -> list[Partition]:
    """The partitions that PostgreSQL would read for ``window``, with their numbers."""
    identifiers = {
        "measurements": settings.measurements_identifier,
        "time_column": sql.Identifier(settings.measurements_time_column),
    }
    explain = sql.SQL(
        "EXPLAIN (VERBOSE, FORMAT JSON) SELECT 1 FROM {measurements} AS m "
        "WHERE m.{time_column} >= %(window_start)s AND m.{time_column} < %(window_end)s"
    ).format(**identifiers)
    # Not prepared: a generic plan would leave the pruning to run time and list every partition.
    row = cur.execute(explain, window.as_params(), prepare=False).fetchone()
    if row is None:
        raise RuntimeError("EXPLAIN returned no plan")
    plan = row[0]
    estimates: dict[tuple[str, str], float] = {}
    custom: set[tuple[str, str]] = set()
    for schema, table, plan_rows, custom_scan in _scanned_relations(plan[0]["Plan"]):
        estimates[(schema, table)] = estimates.get((schema, table), 0.0) + plan_rows
        if custom_scan:
            custom.add((schema, table))
    if not estimates:
        return []
    found = _catalog(cur, settings, list(estimates))
    segmented = bool(custom) and _segmented_by_pair(cur, settings)
    return [
        Partition(
            schema=row["schema_name"],
            table=row["table_name"],
            window_rows=estimates[(row["schema_name"], row["table_name"])],
            rows=row["reltuples"],
            device_n_distinct=row["device_n_distinct"],
            parameter_n_distinct=row["parameter_n_distinct"],
            has_pair_index=row["has_pair_index"],
            readable=row["readable"],
            custom_scan=(row["schema_name"], row["table_name"]) in custom,
            segmented_by_pair=segmented,
            is_parent=row["is_parent"],
        )
        for row in found
    ]


def _catalog(cur: psycopg.Cursor[Any], settings: Settings, relations: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """partitions.sql for ``relations`` (schema, table): what the catalog knows of each."""
    cur.execute(
        db.load_sql(f"{db.STEPS_SQL}partitions.sql"),
        {
            "measurements": settings.measurements_identifier.as_string(cur),
            "time_column": settings.measurements_time_column,
            "schemas": [schema for schema, _ in relations],
            "names": [table for _, table in relations],
        },
    )
    columns = [column.name for column in cur.description or []]
    return [dict(zip(columns, values, strict=True)) for values in cur.fetchall()]


def has_pair_index(cur: psycopg.Cursor[Any], settings: Settings) -> bool:
    """Whether the (plain) measurements table has its own (device_id, parameter_id, time) btree."""
    schema, table = settings.measurements_table.split(".")
    return any(row["has_pair_index"] for row in _catalog(cur, settings, [(schema, table)]))


def _segmented_by_pair(cur: psycopg.Cursor[Any], settings: Settings) -> bool:
    """Whether the measurements hypertable's compression segments by device_id and parameter_id."""
    installed = cur.execute("SELECT to_regclass('timescaledb_information.compression_settings') IS NOT NULL").fetchone()
    if not installed or not installed[0]:
        return False
    schema, table = settings.measurements_table.split(".")
    row = db.fetch_one_dict(
        cur, db.load_sql(f"{db.STEPS_SQL}compression_segments.sql"), {"schema": schema, "table": table}
    )
    return {"device_id", "parameter_id"} <= set(row["segmentby"] or [])
