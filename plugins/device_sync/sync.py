"""The sync's steps, one function per DAG task, each a few set-based statements in PostgreSQL.

Every step reads what earlier steps left in this run's staging tables and writes its own staging table
(dropping it first), all in one transaction, so a retried step gives the same result and any step can run
in a different process or host. Only small summaries (counts) come back to Python.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from device_sync import db
from device_sync.config import Settings

log = logging.getLogger(__name__)

SQL = "device_parameter_sync/"


@dataclass(frozen=True)
class Window:
    """The half-open time window ``[start, end)`` whose measurements a run looks at."""

    start: datetime
    end: datetime

    @classmethod
    def ending_at(cls, end: datetime, lookback_minutes: int) -> Window:
        if end.tzinfo is None:
            raise ValueError(f"window end {end!r} has no time zone")
        if lookback_minutes < 1:
            raise ValueError(f"lookback must be at least one minute, got {lookback_minutes}")
        return cls(start=end - timedelta(minutes=lookback_minutes), end=end)

    def as_params(self) -> dict[str, datetime]:
        return {"window_start": self.start, "window_end": self.end}


@dataclass(frozen=True)
class StagingTables:
    """The staging tables of one DAG run, named from a hash of the run id (always a safe identifier)."""

    schema: str
    run_key: str

    @classmethod
    def for_run(cls, schema: str, dag_id: str, run_id: str) -> StagingTables:
        digest = hashlib.sha256(f"{dag_id}\x00{run_id}".encode()).hexdigest()[:16]
        return cls(schema=schema, run_key=f"run_{digest}")

    def table(self, step: str) -> sql.Identifier:
        return sql.Identifier(self.schema, f"{self.run_key}_{step}")

    def names(self) -> list[str]:
        return [f"{self.schema}.{self.run_key}_{step}" for step in self.STEPS]

    STEPS = ("active_devices", "observed_pairs", "resolved_pairs", "delta")

    def identifiers(self, settings: Settings) -> dict[str, sql.Composable]:
        return {
            "staging_schema": sql.Identifier(self.schema),
            "measurements": settings.measurements_identifier,
            "time_column": sql.Identifier(settings.measurements_time_column),
            **{step: self.table(step) for step in self.STEPS},
        }


def _rebuild(
    cur: psycopg.Cursor[Any],
    step: str,
    staging: StagingTables,
    settings: Settings,
    params: dict[str, Any] | None = None,
) -> None:
    """Drop and re-create the staging table of ``step`` from its SQL file (idempotent on retry)."""
    identifiers = staging.identifiers(settings)
    db.run(cur, sql.SQL("DROP TABLE IF EXISTS {}").format(staging.table(step)))
    db.run(cur, db.compose(f"{SQL}{step_file(step)}.sql", identifiers), params)
    db.run(cur, sql.SQL("ANALYZE {}").format(staging.table(step)))


def step_file(step: str) -> str:
    return {
        "active_devices": "discover_active_devices",
        "observed_pairs": "aggregate_recent_measurements",
        "resolved_pairs": "resolve_parameter_names",
        "delta": "compute_delta",
    }[step]


def _summary(cur: psycopg.Cursor[Any], name: str, staging: StagingTables, settings: Settings) -> dict[str, int]:
    row = db.fetch_one_dict(cur, db.compose(f"{SQL}{name}_summary.sql", staging.identifiers(settings)))
    return {key: int(value) for key, value in row.items()}


def ensure_schema(conn: psycopg.Connection[Any], settings: Settings) -> None:
    """Create the target table, its indexes and the staging schema if missing (under the writers' lock)."""
    with db.transaction(conn, settings.statement_timeout_seconds) as cur:
        ready = db.fetch_one_dict(
            cur, db.load_sql(f"{SQL}target_ready.sql"), {"staging_schema": settings.staging_schema}
        )
        if ready["ready"]:
            return
        db.run(cur, db.load_sql(f"{SQL}lock_target.sql"))
        db.run(cur, db.compose(f"{SQL}ensure_schema.sql", {"staging_schema": sql.Identifier(settings.staging_schema)}))


def discover_active_devices(
    conn: psycopg.Connection[Any], settings: Settings, staging: StagingTables
) -> dict[str, int]:
    """Stage the active devices (``status IS TRUE``), one row per device id; count skipped device rows."""
    ensure_schema(conn, settings)
    with db.transaction(conn, settings.statement_timeout_seconds) as cur:
        _rebuild(cur, "active_devices", staging, settings)
        return _summary(cur, "discover_active_devices", staging, settings)


def aggregate_recent_measurements(
    conn: psycopg.Connection[Any], settings: Settings, staging: StagingTables, window: Window
) -> dict[str, int]:
    """Stage the distinct (device, parameter) pairs that active devices reported in the window."""
    with db.transaction(conn, settings.statement_timeout_seconds) as cur:
        _rebuild(cur, "observed_pairs", staging, settings, window.as_params())
        return _summary(cur, "aggregate_recent_measurements", staging, settings)


def resolve_parameter_names(
    conn: psycopg.Connection[Any], settings: Settings, staging: StagingTables
) -> dict[str, int]:
    """Name every observed pair; pairs that cannot be named are kept as skipped, with a reason."""
    with db.transaction(conn, settings.statement_timeout_seconds) as cur:
        _rebuild(cur, "resolved_pairs", staging, settings)
        return _summary(cur, "resolve_parameter_names", staging, settings)


def compute_delta(conn: psycopg.Connection[Any], settings: Settings, staging: StagingTables) -> dict[str, int]:
    """Stage the inserts, updates and deletes that would make the table equal the desired set now."""
    with db.transaction(conn, settings.statement_timeout_seconds) as cur:
        _rebuild(cur, "delta", staging, settings)
        return _summary(cur, "compute_delta", staging, settings)


def apply_changes(conn: psycopg.Connection[Any], settings: Settings, staging: StagingTables) -> dict[str, int]:
    """Apply the delta in one transaction, under the lock that serializes every writer of the table.

    The delta is recomputed after the lock is taken, so a run that waited for another one applies
    exactly what is still needed; a retry after a failure applies what the failed attempt did not.
    """
    identifiers = staging.identifiers(settings)
    with db.transaction(conn, settings.statement_timeout_seconds) as cur:
        db.run(cur, db.load_sql(f"{SQL}lock_target.sql"))
        _rebuild(cur, "delta", staging, settings)
        deleted = db.run(cur, db.compose(f"{SQL}apply_deletes.sql", identifiers))
        updated = db.run(cur, db.compose(f"{SQL}apply_updates.sql", identifiers))
        inserted = db.run(cur, db.compose(f"{SQL}apply_inserts.sql", identifiers))
    return {"inserted": inserted, "updated": updated, "deleted": deleted}


def drop_staging(conn: psycopg.Connection[Any], settings: Settings, staging: StagingTables) -> None:
    """Drop this run's staging tables (missing ones are fine)."""
    with db.transaction(conn, settings.statement_timeout_seconds) as cur:
        for step in StagingTables.STEPS:
            db.run(cur, sql.SQL("DROP TABLE IF EXISTS {}").format(staging.table(step)))


def skipped_total(*summaries: dict[str, int]) -> int:
    """All source rows and pairs that were skipped as bad input, over the steps' summaries."""
    reasons = (
        "device_name_missing_pairs",
        "device_id_null",
        "device_status_null",
        "device_duplicate_rows",
        "measurement_id_null",
        "parameter_unknown",
        "parameter_name_missing",
        "parameter_id_null",
        "parameter_duplicate_rows",
    )
    return sum(summary.get(reason, 0) for summary in summaries for reason in reasons)


def sync_once(
    conn: psycopg.Connection[Any], settings: Settings, staging: StagingTables, window: Window
) -> dict[str, Any]:
    """All steps in order, as the DAG runs them; for tests, the demo and the benchmark."""
    try:
        devices = discover_active_devices(conn, settings, staging)
        pairs = aggregate_recent_measurements(conn, settings, staging, window)
        names = resolve_parameter_names(conn, settings, staging)
        delta = compute_delta(conn, settings, staging)
        applied = apply_changes(conn, settings, staging)
    finally:
        drop_staging(conn, settings, staging)
    return {**devices, **pairs, **names, **delta, **applied, "skipped": skipped_total(devices, pairs, names)}
