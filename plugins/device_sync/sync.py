"""The sync's steps, one function per DAG task, each a few set-based statements in PostgreSQL.

Every step reads what earlier steps left in this run's staging tables and writes its own staging table
(dropping it first), all in one transaction, so a retried step gives the same result and any step can run
in a different process or host. Only small summaries (counts) come back to Python.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

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
        return cls(schema=schema, run_key=f"stage_{digest}")

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
            "run_history": sql.Identifier(self.schema, "run_history"),
            "change_log": sql.Identifier(self.schema, "change_log"),
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
            cur,
            db.load_sql(f"{SQL}target_ready.sql"),
            {"run_history": sql.Identifier(settings.staging_schema, "run_history").as_string(cur)},
        )
        if ready["ready"]:
            return
        db.run(cur, db.load_sql(f"{SQL}lock_target.sql"))
        history = StagingTables(schema=settings.staging_schema, run_key="").identifiers(settings)
        db.run(cur, db.compose(f"{SQL}ensure_schema.sql", history))
        db.run(cur, db.compose(f"{SQL}history_schema.sql", history))


def _scope(device_ids: Sequence[str] | None) -> dict[str, Any]:
    """The device scope as a bound parameter: NULL means every device."""
    return {"device_ids": list(device_ids) if device_ids is not None else None}


def discover_active_devices(
    conn: psycopg.Connection[Any],
    settings: Settings,
    staging: StagingTables,
    device_ids: Sequence[str] | None = None,
) -> dict[str, int]:
    """Stage the active devices (``status IS TRUE``), one row per device id; count skipped device rows.

    With ``device_ids`` only those devices take part in the run (nothing outside them changes).
    """
    ensure_schema(conn, settings)
    with db.transaction(conn, settings.statement_timeout_seconds) as cur:
        _rebuild(cur, "active_devices", staging, settings, _scope(device_ids))
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


def compute_delta(
    conn: psycopg.Connection[Any],
    settings: Settings,
    staging: StagingTables,
    device_ids: Sequence[str] | None = None,
) -> dict[str, int]:
    """Stage the inserts, updates and deletes that would make the table equal the desired set now."""
    with db.transaction(conn, settings.statement_timeout_seconds) as cur:
        _rebuild(cur, "delta", staging, settings, _scope(device_ids))
        return _summary(cur, "compute_delta", staging, settings)


HISTORY_FIELDS = (
    "run_id", "dag_id", "logical_date", "window_start", "window_end", "started_at", "finished_at", "status",
    "dry_run", "applied", "device_scope", "active_devices", "observed_pairs", "inserted", "deleted", "updated",
    "skipped", "skipped_by_reason", "error",
)  # fmt: skip


def _record_run(cur: psycopg.Cursor[Any], staging: StagingTables, settings: Settings, fields: dict[str, Any]) -> None:
    row = {name: fields.get(name) for name in HISTORY_FIELDS}
    row["skipped_by_reason"] = Jsonb(row["skipped_by_reason"]) if row["skipped_by_reason"] is not None else None
    row["dry_run"] = bool(row["dry_run"])
    row["applied"] = bool(row["applied"])
    row["started_at"] = row["started_at"] or datetime.now(UTC)
    db.run(cur, db.compose(f"{SQL}record_run.sql", staging.identifiers(settings)), row)


def apply_changes(
    conn: psycopg.Connection[Any],
    settings: Settings,
    staging: StagingTables,
    *,
    run: dict[str, Any] | None = None,
    device_ids: Sequence[str] | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Apply the delta, its change log and the run's history row in one transaction, under the writers' lock.

    The delta is recomputed after the lock is taken, so a run that waited for another one applies
    exactly what is still needed; a retry after a failure applies what the failed attempt did not.
    A dry run records the delta's counts in the history and changes nothing else.
    """
    identifiers = staging.identifiers(settings)
    run = run or {"run_id": staging.run_key, "dag_id": "device_parameter_sync"}
    # A run that does not say when it started started no later than now (never after its finished_at).
    run = {**run, "started_at": run.get("started_at") or datetime.now(UTC)}
    with db.transaction(conn, settings.statement_timeout_seconds) as cur:
        db.run(cur, db.load_sql(f"{SQL}lock_target.sql"))
        _rebuild(cur, "delta", staging, settings, _scope(device_ids))
        if dry_run:
            would = _summary(cur, "compute_delta", staging, settings)
            counts = {"inserted": would["inserts"], "updated": would["updates"], "deleted": would["deletes"]}
        else:
            counts = {
                "deleted": db.run(cur, db.compose(f"{SQL}apply_deletes.sql", identifiers)),
                "updated": db.run(cur, db.compose(f"{SQL}apply_updates.sql", identifiers)),
                "inserted": db.run(cur, db.compose(f"{SQL}apply_inserts.sql", identifiers)),
            }
            db.run(cur, db.compose(f"{SQL}record_changes.sql", identifiers), {"run_id": run["run_id"]})
        finished = {"status": "success", "dry_run": dry_run, "applied": not dry_run, "error": None}
        _record_run(cur, staging, settings, {**run, **counts, **finished, "finished_at": datetime.now(UTC)})
        db.run(
            cur,
            db.compose(f"{SQL}prune_history.sql", identifiers),
            {"retention_days": settings.history_retention_days},
        )
    return counts


def record_failure(
    conn: psycopg.Connection[Any],
    settings: Settings,
    staging: StagingTables,
    run: dict[str, Any],
    keep_error: bool = False,
) -> None:
    """Mark the run failed in the history (its own transaction), unless it already succeeded."""
    ensure_schema(conn, settings)
    with db.transaction(conn, settings.statement_timeout_seconds) as cur:
        db.run(
            cur,
            db.compose(f"{SQL}record_failure.sql", staging.identifiers(settings)),
            {
                **{name: run.get(name) for name in HISTORY_FIELDS},
                "started_at": run.get("started_at") or datetime.now(UTC),
                "finished_at": datetime.now(UTC),
                "skipped_by_reason": None,
                "dry_run": bool(run.get("dry_run")),
                "keep_error": keep_error,
            },
        )


def drop_staging(conn: psycopg.Connection[Any], settings: Settings, staging: StagingTables) -> None:
    """Drop this run's staging tables (missing ones are fine)."""
    with db.transaction(conn, settings.statement_timeout_seconds) as cur:
        for step in StagingTables.STEPS:
            db.run(cur, sql.SQL("DROP TABLE IF EXISTS {}").format(staging.table(step)))


SKIP_REASONS = (
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


def skipped_by_reason(*summaries: dict[str, Any]) -> dict[str, int]:
    """The source rows and pairs skipped as bad input, by reason, over the steps' summaries."""
    return {reason: sum(int(summary.get(reason, 0)) for summary in summaries) for reason in SKIP_REASONS}


def skipped_total(*summaries: dict[str, Any]) -> int:
    """All source rows and pairs that were skipped as bad input, over the steps' summaries."""
    return sum(skipped_by_reason(*summaries).values())


def sync_once(
    conn: psycopg.Connection[Any],
    settings: Settings,
    staging: StagingTables,
    window: Window,
    *,
    run_id: str = "manual",
    device_ids: Sequence[str] | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """All steps in order, as the DAG runs them; for tests, the demo and the benchmark."""
    started_at = datetime.now(UTC)
    try:
        devices = discover_active_devices(conn, settings, staging, device_ids)
        pairs = aggregate_recent_measurements(conn, settings, staging, window)
        names = resolve_parameter_names(conn, settings, staging)
        delta = compute_delta(conn, settings, staging, device_ids)
        run = {
            "run_id": run_id,
            "dag_id": "device_parameter_sync",
            "window_start": window.start,
            "window_end": window.end,
            "started_at": started_at,
            "device_scope": len(device_ids) if device_ids is not None else None,
            "active_devices": devices["active_devices"],
            "observed_pairs": pairs["observed_pairs"],
            "skipped": skipped_total(devices, pairs, names),
            "skipped_by_reason": skipped_by_reason(devices, pairs, names),
        }
        applied = apply_changes(conn, settings, staging, run=run, device_ids=device_ids, dry_run=dry_run)
    finally:
        drop_staging(conn, settings, staging)
    return {**devices, **pairs, **names, **delta, **applied, "skipped": run["skipped"]}
