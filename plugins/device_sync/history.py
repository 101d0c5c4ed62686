"""The run history and the change log: the package's record of every run and every applied change.

Both live in the package's schema (``DEVICE_SYNC_STAGING_SCHEMA``) next to the data. A run's row is written
in the same transaction as its changes (:func:`record_run`, by ``apply_changes``), or marked failed once a
step has failed for good (:func:`mark_run_failed`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from device_sync import db
from device_sync.config import Settings

RUN_HISTORY = "run_history"
CHANGE_LOG = "change_log"

# The columns of the run history that a run writes (the table is created by the schema SQL; a test checks
# that the two agree). /runs reads the table whole.
HISTORY_FIELDS = (
    "run_id", "dag_id", "logical_date", "window_start", "window_end", "started_at", "finished_at", "status",
    "dry_run", "applied", "device_scope", "active_devices", "observed_pairs", "inserted", "deleted", "updated",
    "skipped", "skipped_by_reason", "error", "guard", "apply_attempt", "apply_host",
)  # fmt: skip


def tables(schema: str) -> dict[str, sql.Identifier]:
    """The identifiers ``{run_history}`` and ``{change_log}`` of the package's schema, for the SQL files."""
    return {RUN_HISTORY: sql.Identifier(schema, RUN_HISTORY), CHANGE_LOG: sql.Identifier(schema, CHANGE_LOG)}


def record_run(cur: psycopg.Cursor[Any], schema: str, fields: dict[str, Any]) -> None:
    """Create or complete a run's history row (a retry's attempt overwrites the earlier one)."""
    row = {name: fields.get(name) for name in HISTORY_FIELDS}
    row["skipped_by_reason"] = Jsonb(row["skipped_by_reason"]) if row["skipped_by_reason"] is not None else None
    row["dry_run"] = bool(row["dry_run"])
    row["applied"] = bool(row["applied"])
    row["started_at"] = row["started_at"] or datetime.now(UTC)
    db.run(cur, db.compose(f"{db.HISTORY_SQL}record_run.sql", tables(schema)), row)


def prune(cur: psycopg.Cursor[Any], schema: str, retention_days: int) -> None:
    """Delete history rows and change-log rows older than the retention."""
    db.run(cur, db.compose(f"{db.HISTORY_SQL}prune.sql", tables(schema)), {"retention_days": retention_days})


def mark_run_failed(
    conn: psycopg.Connection[Any], settings: Settings, run: dict[str, Any], keep_error: bool = False
) -> None:
    """Mark the run failed in the history (its own transaction), unless it already succeeded.

    ``run["error"]`` starts with the failed task's id (``<task_id>: <message>``); ``keep_error`` keeps an error
    recorded earlier (the failed step's own message is more useful than a later summary one).
    """
    with db.transaction(conn, settings.statement_timeout_seconds) as cur:
        db.run(
            cur,
            db.compose(f"{db.HISTORY_SQL}mark_failed.sql", tables(settings.staging_schema)),
            {
                **{name: run.get(name) for name in HISTORY_FIELDS},
                "started_at": run.get("started_at") or datetime.now(UTC),
                "finished_at": datetime.now(UTC),
                "skipped_by_reason": None,
                "dry_run": bool(run.get("dry_run")),
                "keep_error": keep_error,
            },
        )


def recorded_guard(conn: psycopg.Connection[Any], settings: Settings, run_id: str) -> str | None:
    """The guard recorded in the run history for ``run_id``, if any."""
    with db.transaction(conn, settings.statement_timeout_seconds) as cur:
        table = tables(settings.staging_schema)[RUN_HISTORY]
        statement = sql.SQL("SELECT guard FROM {} WHERE run_id = %(run_id)s").format(table)
        cur.execute(statement, {"run_id": run_id})
        row = cur.fetchone()
    return str(row[0]) if row and row[0] else None
