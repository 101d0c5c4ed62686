"""A run's staging tables: UNLOGGED tables in the package's schema, named from a hash of the run id.

The first three steps each write one (``active_devices``, ``observed_pairs`` — one per aggregation shard when
there are several —, ``resolved_pairs``), dropping it first in the same transaction, so a retried step gives
the same result and each step may run in another process or on another host. ``cleanup_staging`` drops them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from device_sync import db, history
from device_sync.config import Settings

# Each staging table and the step (and SQL file) that writes it.
TABLE_STEPS = {
    "active_devices": "discover_active_devices",
    "observed_pairs": "aggregate_recent_measurements",
    "resolved_pairs": "resolve_parameter_names",
}


class StagingMissing(RuntimeError):
    """A staging table an earlier step should have written is missing; clear the run from its first task."""


@dataclass(frozen=True)
class StagingTables:
    """The staging tables of one DAG run, named from a hash of the run id (always a safe identifier)."""

    schema: str
    run_key: str

    @classmethod
    def for_run(cls, schema: str, dag_id: str, run_id: str) -> StagingTables:
        digest = hashlib.sha256(f"{dag_id}\x00{run_id}".encode()).hexdigest()[:16]
        return cls(schema=schema, run_key=f"stage_{digest}")

    def table(self, name: str) -> sql.Identifier:
        return sql.Identifier(self.schema, f"{self.run_key}_{name}")

    def identifiers(self, settings: Settings) -> dict[str, sql.Composable]:
        """Every ``{placeholder}`` of the steps' SQL files: the sources, the staging tables, the history."""
        return {
            "staging_schema": sql.Identifier(self.schema),
            "measurements": settings.measurements_identifier,
            "time_column": sql.Identifier(settings.measurements_time_column),
            **history.tables(self.schema),
            **{name: self.table(name) for name in TABLE_STEPS},
        }


def shard_table(shard: int, shards: int) -> str:
    """The staging table of one aggregation shard (its name says how many shards there were); a single
    shard writes ``observed_pairs`` itself."""
    return "observed_pairs" if shards == 1 else f"observed_pairs_{shard}_of_{shards}"


def rebuild(
    cur: psycopg.Cursor[Any],
    name: str,
    staging: StagingTables,
    settings: Settings,
    params: dict[str, Any] | None = None,
    *,
    sql_file: str | None = None,
    table: str | None = None,
    statistics: bool = True,
    extra: Mapping[str, sql.Composable] | None = None,
) -> None:
    """Drop and re-create the staging table ``name`` from its step's SQL file (idempotent on retry).

    ``table`` names a table other than ``name`` (an aggregation shard's), written where the SQL says
    ``{<name>}``; ``sql_file`` a file other than the step's own; ``extra`` more pieces the SQL names.
    ``statistics=False`` skips ANALYZE (and its catalog writes) for a table that later statements only read
    whole into hash joins: the planner's size estimate from the table's pages is enough there.
    """
    target = staging.table(table or name)
    identifiers = {**staging.identifiers(settings), **(extra or {}), name: target}
    db.run(cur, sql.SQL("DROP TABLE IF EXISTS {}").format(target))
    db.run(cur, db.compose(f"{db.STEPS_SQL}{sql_file or TABLE_STEPS[name]}.sql", identifiers), params)
    if statistics:
        analyze(cur, target)


def analyze(cur: psycopg.Cursor[Any], table: sql.Identifier) -> None:
    """Give the planner row counts and rough statistics of a fresh staging table, from a small sample:
    the default target of 100 costs more than the statements that read these tables."""
    db.run(cur, "SET LOCAL default_statistics_target = 10")  # until the end of this transaction
    db.run(cur, sql.SQL("ANALYZE {}").format(table))


def summary(
    cur: psycopg.Cursor[Any],
    step: str,
    staging: StagingTables,
    settings: Settings,
    params: dict[str, Any] | None = None,
) -> dict[str, int]:
    """The counts of a step's ``<step>_summary.sql`` over its staging table."""
    row = db.fetch_one_dict(cur, db.compose(f"{db.STEPS_SQL}{step}_summary.sql", staging.identifiers(settings)), params)
    return {key: int(value) for key, value in row.items()}


def combine_shards(cur: psycopg.Cursor[Any], settings: Settings, staging: StagingTables, shards: int) -> None:
    """Re-create ``observed_pairs`` as the union of the aggregation shards' tables (one shard wrote it)."""
    tables = [staging.table(shard_table(shard, shards)) for shard in range(shards)]
    for shard, table in enumerate(tables):
        present = db.fetch_one_dict(
            cur, "SELECT to_regclass(%(t)s) IS NOT NULL AS present", {"t": table.as_string(cur)}
        )
        if not present["present"]:
            raise StagingMissing(
                f"the staging table of aggregation shard {shard} of {shards} is missing: its staging was dropped "
                f"or it never ran; clear this run from discover_active_devices"
            )
    if shards == 1:
        return
    union = sql.SQL(" UNION ALL ").join(sql.SQL("SELECT device_id, parameter_id FROM {}").format(t) for t in tables)
    target = staging.table("observed_pairs")
    db.run(cur, sql.SQL("DROP TABLE IF EXISTS {}").format(target))
    db.run(cur, sql.SQL("CREATE UNLOGGED TABLE {} AS ").format(target) + union)


def drop_tables(conn: psycopg.Connection[Any], settings: Settings, staging: StagingTables) -> None:
    """Drop this run's staging tables, the aggregation shards' included (missing ones are fine)."""
    with db.transaction(conn, settings.statement_timeout_seconds) as cur:
        cur.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s AND starts_with(tablename, %s)",
            (staging.schema, f"{staging.run_key}_"),
        )
        for (name,) in cur.fetchall():
            db.run(cur, sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(staging.schema, name)))
