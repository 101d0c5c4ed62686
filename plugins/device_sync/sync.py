"""The sync's steps, one function per DAG task, each a few set-based statements in PostgreSQL.

Every step reads what earlier steps left in this run's staging tables and, up to resolve_parameter_names,
writes its own staging table (dropping it first), all in one transaction, so a retried step gives the same
result and any step can run in a different process or host. The changes themselves are never stored: they
are counted, then computed again inside the statement that applies them. Only small summaries (counts)
come back to Python.
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

    STEPS = ("active_devices", "observed_pairs", "resolved_pairs")

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
    *,
    sql_file: str | None = None,
    table: str | None = None,
    statistics: bool = True,
) -> None:
    """Drop and re-create the staging table of ``step`` from its SQL file (idempotent on retry).

    ``table`` names a table other than the step's own (an aggregation shard's), written where the SQL
    says ``{<step>}``; ``sql_file`` a file other than the step's default one. ``statistics=False`` skips
    ANALYZE (and its catalog writes) for a table that later statements only read whole into hash joins: the
    planner's size estimate from the table's pages is enough there.
    """
    target = staging.table(table or step)
    identifiers = {**staging.identifiers(settings), step: target}
    db.run(cur, sql.SQL("DROP TABLE IF EXISTS {}").format(target))
    db.run(cur, db.compose(f"{SQL}{sql_file or step_file(step)}.sql", identifiers), params)
    if statistics:
        analyze(cur, target)


def analyze(cur: psycopg.Cursor[Any], table: sql.Identifier) -> None:
    """Give the planner row counts and rough statistics of a fresh staging table, from a small sample:
    the default target of 100 costs more than the statements that read these tables."""
    db.run(cur, "SET LOCAL default_statistics_target = 10")  # until the end of this transaction
    db.run(cur, sql.SQL("ANALYZE {}").format(table))


def step_file(step: str) -> str:
    return {
        "active_devices": "discover_active_devices",
        "observed_pairs": "aggregate_recent_measurements",
        "resolved_pairs": "resolve_parameter_names",
    }[step]


def _summary(
    cur: psycopg.Cursor[Any],
    name: str,
    staging: StagingTables,
    settings: Settings,
    params: dict[str, Any] | None = None,
) -> dict[str, int]:
    row = db.fetch_one_dict(cur, db.compose(f"{SQL}{name}_summary.sql", staging.identifiers(settings)), params)
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


# Unicode's White_Space characters, as one regular expression class: a name made only of these is missing.
# (PostgreSQL's btrim strips spaces only, and [[:space:]] depends on the database's locale.)
BLANK_NAME_PATTERN = r"^[\u0009-\u000D\u0020\u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$"


def _names(device_ids: Sequence[str] | None = None) -> dict[str, Any]:
    """The bound parameters of the statements that judge names: the device scope and the blank-name pattern."""
    return {**_scope(device_ids), "blank_name": BLANK_NAME_PATTERN}


class FutureWindow(ValueError):
    """The run's window ends after the database's now(): it has not happened yet. Retrying will not help."""


def refuse_future_window(conn: psycopg.Connection[Any], settings: Settings, window_end: datetime) -> None:
    """Raise :class:`FutureWindow` when ``window_end`` lies more than DEVICE_SYNC_MAX_CLOCK_SKEW_SECONDS after
    the database's ``now()``.

    Applying such a window would make every later (real) run an older window that the forward-only guard
    refuses to apply, until the wall clock passed its end.
    """
    with db.transaction(conn, settings.statement_timeout_seconds) as cur:
        now = db.fetch_one_dict(cur, "SELECT now() AS now")["now"]
    skew = timedelta(seconds=settings.max_clock_skew_seconds)
    if window_end > now + skew:
        raise FutureWindow(
            f"the run's window ends at {window_end.isoformat()}, after the database's now() {now.isoformat()} "
            f"(DEVICE_SYNC_MAX_CLOCK_SKEW_SECONDS={settings.max_clock_skew_seconds}): a window that has not "
            f"happened yet is never synced, so nothing was staged or applied. Run it for a past or current "
            f"logical date (airflow dags test device_parameter_sync <a time not in the future>)."
        )


def discover_active_devices(
    conn: psycopg.Connection[Any],
    settings: Settings,
    staging: StagingTables,
    device_ids: Sequence[str] | None = None,
    window_end: datetime | None = None,
) -> dict[str, int]:
    """Stage the active devices (``status IS TRUE``), one row per device id; count skipped device rows.

    With ``device_ids`` only those devices take part in the run (nothing outside them changes). A
    ``window_end`` in the future is refused first (:func:`refuse_future_window`), before anything is staged.
    """
    if window_end is not None:
        refuse_future_window(conn, settings, window_end)
    ensure_schema(conn, settings)
    with db.transaction(conn, settings.statement_timeout_seconds) as cur:
        _rebuild(cur, "active_devices", staging, settings, _names(device_ids))
        return _summary(cur, "discover_active_devices", staging, settings, _scope(device_ids))


SKIP_SCAN = "skip_scan"
WINDOW_SCAN = "window_scan"
PAIR_METHODS = (SKIP_SCAN, WINDOW_SCAN)


def pair_method(cur: psycopg.Cursor[Any], settings: Settings) -> str:
    """How to find the window's pairs: a loose index scan when the measurements table has an index on
    ``(device_id, parameter_id, <time column>)`` (read from the catalog), a scan of the window otherwise."""
    row = db.fetch_one_dict(
        cur,
        db.load_sql(f"{SQL}pair_index.sql"),
        {
            "measurements": settings.measurements_identifier.as_string(cur),
            "time_column": settings.measurements_time_column,
        },
    )
    return SKIP_SCAN if row["has_pair_index"] else WINDOW_SCAN


def shard_table(shard: int, shards: int) -> str:
    """The staging table of one aggregation shard (its name says how many shards there were); a single
    shard writes ``observed_pairs`` itself."""
    return "observed_pairs" if shards == 1 else f"observed_pairs_{shard}_of_{shards}"


def aggregate_recent_measurements(
    conn: psycopg.Connection[Any],
    settings: Settings,
    staging: StagingTables,
    window: Window,
    *,
    shard: int = 0,
    shards: int = 1,
    method: str | None = None,
) -> dict[str, Any]:
    """Stage the distinct (device, parameter) pairs that this shard's active devices reported in the window.

    The active devices are split into ``shards`` by a hash of their id; each shard is one mapped task with its
    own staging table, which :func:`resolve_parameter_names` combines. ``method`` (tests and the benchmark
    only) overrides the catalog's choice between the skip scan and the window scan.
    """
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is not one of the {shards} aggregation shards")
    if method is not None and method not in PAIR_METHODS:
        raise ValueError(f"unknown pair method {method!r}; expected one of {PAIR_METHODS}")
    with db.transaction(conn, settings.statement_timeout_seconds) as cur:
        method = method or pair_method(cur, settings)
        log.info("Finding the window's pairs by %s (shard %d of %d)", method.replace("_", " "), shard + 1, shards)
        sql_file = "aggregate_recent_measurements_skip_scan" if method == SKIP_SCAN else None
        params = {**window.as_params(), "shard": shard, "shards": shards}
        table = shard_table(shard, shards)
        _rebuild(cur, "observed_pairs", staging, settings, params, sql_file=sql_file, table=table, statistics=False)
        counts = db.fetch_one_dict(
            cur, db.compose(f"{SQL}aggregate_recent_measurements_summary.sql", {"observed_pairs": staging.table(table)})
        )
    return {"shard": shard, "shards": shards, "method": method, "shard_pairs": int(counts["observed_pairs"])}


class StagingMissing(RuntimeError):
    """A staging table an earlier step should have written is missing; clear the run from its first task."""


def combine_shards(cur: psycopg.Cursor[Any], settings: Settings, staging: StagingTables, shards: int) -> None:
    """Re-create ``observed_pairs`` as the union of the aggregation shards' tables (one shard wrote it)."""
    tables = [staging.table(shard_table(shard, shards)) for shard in range(shards)]
    for shard, table in enumerate(tables):
        if db.fetch_one_dict(cur, "SELECT to_regclass(%(t)s) IS NOT NULL AS present", {"t": table.as_string(cur)})[
            "present"
        ]:
            continue
        raise StagingMissing(
            f"the staging table of aggregation shard {shard} of {shards} is missing: the aggregation ran with a "
            f"different DEVICE_SYNC_AGGREGATION_SHARDS or its staging was dropped; clear this run from "
            f"discover_active_devices"
        )
    if shards == 1:
        return
    union = sql.SQL(" UNION ALL ").join(sql.SQL("SELECT device_id, parameter_id FROM {}").format(t) for t in tables)
    target = staging.table("observed_pairs")
    db.run(cur, sql.SQL("DROP TABLE IF EXISTS {}").format(target))
    db.run(cur, sql.SQL("CREATE UNLOGGED TABLE {} AS ").format(target) + union)


def resolve_parameter_names(
    conn: psycopg.Connection[Any], settings: Settings, staging: StagingTables, *, shards: int = 1
) -> dict[str, int]:
    """Combine the aggregation shards, then name every observed pair; unnameable pairs are kept as skipped."""
    with db.transaction(conn, settings.statement_timeout_seconds) as cur:
        combine_shards(cur, settings, staging, shards)
        observed = _summary(cur, "aggregate_recent_measurements", staging, settings)
        _rebuild(cur, "resolved_pairs", staging, settings, _names(), statistics=False)
        return {**observed, **_summary(cur, "resolve_parameter_names", staging, settings)}


def changes_identifiers(staging: StagingTables, settings: Settings) -> dict[str, sql.Composable]:
    """The staging identifiers plus ``{changes}``: the SELECT of this run's changes (changes.sql)."""
    identifiers = staging.identifiers(settings)
    return {**identifiers, "changes": db.compose(f"{SQL}changes.sql", identifiers)}


def _count_changes(
    cur: psycopg.Cursor[Any], settings: Settings, staging: StagingTables, device_ids: Sequence[str] | None
) -> dict[str, int]:
    row = db.fetch_one_dict(
        cur, db.compose(f"{SQL}compute_delta.sql", changes_identifiers(staging, settings)), _scope(device_ids)
    )
    return {key: int(value) for key, value in row.items()}


def compute_delta(
    conn: psycopg.Connection[Any],
    settings: Settings,
    staging: StagingTables,
    device_ids: Sequence[str] | None = None,
) -> dict[str, int]:
    """Count the inserts, updates and deletes that would make the table equal the desired set now.

    The changes themselves are not stored: :func:`apply_changes` computes them again under the writers' lock,
    inside the statement that applies them.
    """
    with db.transaction(conn, settings.statement_timeout_seconds) as cur:
        return _count_changes(cur, settings, staging, device_ids)


HISTORY_FIELDS = (
    "run_id", "dag_id", "logical_date", "window_start", "window_end", "started_at", "finished_at", "status",
    "dry_run", "applied", "device_scope", "active_devices", "observed_pairs", "inserted", "deleted", "updated",
    "skipped", "skipped_by_reason", "error", "guard",
)  # fmt: skip

MASS_DELETE = "mass_delete"
STALE_MEASUREMENTS = "stale_measurements"
OLDER_WINDOW = "older_window"
GUARDS = (MASS_DELETE, STALE_MEASUREMENTS, OLDER_WINDOW)


class GuardTripped(Exception):
    """A safety guard refused to apply this run's changes; nothing was written. Retrying will not help."""

    def __init__(self, guard: str, message: str) -> None:
        super().__init__(message)
        self.guard = guard


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
    allow_mass_delete: bool = False,
    force_apply: bool = False,
) -> dict[str, Any]:
    """Apply the delta, its change log and the run's history row in one transaction, under the writers' lock.

    The changes are computed again after the lock is taken, inside the statement that applies them
    (apply_changes.sql), so a run that waited for another one applies exactly what is still needed and a retry
    after a failure applies what the failed attempt did not.
    The guards run before anything is written, the mass-delete guard on the statement's own delete count
    (tripping it rolls everything back; see :func:`check_guards`). A dry run, and a run whose window
    ends before the newest applied one (a backfill), record the delta's counts and change nothing else.
    """
    identifiers = staging.identifiers(settings)
    run = run or {"run_id": staging.run_key, "dag_id": "device_parameter_sync"}
    # A run that does not say when it started started no later than now (never after its finished_at).
    run = {**run, "started_at": run.get("started_at") or datetime.now(UTC)}
    if run.get("window_end") is not None and not dry_run:
        refuse_future_window(conn, settings, run["window_end"])
    with db.transaction(conn, settings.statement_timeout_seconds) as cur:
        db.run(cur, db.load_sql(f"{SQL}lock_target.sql"))
        state = db.fetch_one_dict(
            cur, db.compose(f"{SQL}guard_state.sql", staging.identifiers(settings)), _scope(device_ids)
        )
        guard = None if dry_run else check_guards(cur, settings, staging, run, state, allow_mass_delete, force_apply)
        if dry_run or guard == OLDER_WINDOW:
            would = _count_changes(cur, settings, staging, device_ids)
            counts = {"inserted": would["inserts"], "updated": would["updates"], "deleted": would["deletes"]}
        else:
            applied_counts = db.fetch_one_dict(
                cur,
                db.compose(f"{SQL}apply_changes.sql", changes_identifiers(staging, settings)),
                {**_scope(device_ids), "run_id": run["run_id"]},
            )
            counts = {key: int(value) for key, value in applied_counts.items()}
            if not allow_mass_delete:
                # Raising here rolls the whole transaction back: the deletes it counts are never committed.
                check_mass_delete(settings, state, counts["deleted"])
        applied = not dry_run and guard is None
        finished = {"status": "success", "dry_run": dry_run, "applied": applied, "error": None, "guard": guard}
        _record_run(cur, staging, settings, {**run, **counts, **finished, "finished_at": datetime.now(UTC)})
        if applied:
            db.run(
                cur,
                db.compose(f"{SQL}prune_history.sql", identifiers),
                {"retention_days": settings.history_retention_days},
            )
    return {**counts, "applied": applied, "guard": guard}


def check_guards(
    cur: psycopg.Cursor[Any],
    settings: Settings,
    staging: StagingTables,
    run: dict[str, Any],
    state: dict[str, Any],
    allow_mass_delete: bool,
    force_apply: bool,
) -> str | None:
    """The safety guards checked under the writers' lock before anything is written (``state`` is
    guard_state.sql's row); the mass-delete guard follows the writes (:func:`check_mass_delete`).

    - forward only: a run whose window ends before the newest applied window returns ``older_window``
      (record, do not apply) unless ``force_apply``;
    - stale measurements: no pair at all observed for any active device while the table (within the run's
      device scope) is not empty raises :class:`GuardTripped`, unless ``allow_mass_delete``.
    """
    window_end = run.get("window_end")
    newest = state["newest_applied_window_end"]
    if not force_apply and newest is not None and window_end is not None and window_end < newest:
        log.warning(
            "Window end %s is older than the newest applied window end %s: recording the delta, not applying it "
            "(trigger with force_apply to apply an older window).",
            window_end,
            newest,
        )
        return OLDER_WINDOW
    if allow_mass_delete:
        return None
    if state["observed_pairs"] == 0 and state["scoped_rows"] > 0:
        newest_measurement = db.fetch_one_dict(
            cur, db.compose(f"{SQL}newest_measurement.sql", staging.identifiers(settings))
        )["newest"]
        raise GuardTripped(
            STALE_MEASUREMENTS,
            f"measurements are stale: no measurement of any active device in the window "
            f"[{run.get('window_start')}, {window_end}) while iot_data.device_parameters holds "
            f"{state['scoped_rows']} rows; the newest measurement is from {newest_measurement}. Nothing was "
            f"applied. Check the measurements pipeline; to empty the table on purpose, trigger with "
            f'{{"allow_mass_delete": true}}.',
        )
    return None


def check_mass_delete(settings: Settings, state: dict[str, Any], deletes: int) -> None:
    """Mass delete: deleting more than ``max_delete_fraction`` of a table of at least ``mass_delete_min_rows``
    rows (counted before the run) raises :class:`GuardTripped`, which rolls the run's transaction back."""
    limit = settings.max_delete_fraction * state["table_rows"]
    if state["table_rows"] >= settings.mass_delete_min_rows and deletes > limit:
        raise GuardTripped(
            MASS_DELETE,
            f"mass delete blocked: this run would delete {deletes} of {state['table_rows']} rows "
            f"({deletes / state['table_rows']:.0%}), more than DEVICE_SYNC_MAX_DELETE_FRACTION="
            f"{settings.max_delete_fraction:g}. Nothing was applied. Check GET /device-sync/changes and the "
            f'sources; if the deletes are right, trigger a run with {{"allow_mass_delete": true}}.',
        )


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


def recorded_guard(
    conn: psycopg.Connection[Any], settings: Settings, staging: StagingTables, run_id: str
) -> str | None:
    """The guard recorded in the run history for ``run_id``, if any."""
    with db.transaction(conn, settings.statement_timeout_seconds) as cur:
        statement = sql.SQL("SELECT guard FROM {} WHERE run_id = %(run_id)s").format(
            staging.identifiers(settings)["run_history"]
        )
        cur.execute(statement, {"run_id": run_id})
        row = cur.fetchone()
    return str(row[0]) if row and row[0] else None


def drop_staging(conn: psycopg.Connection[Any], settings: Settings, staging: StagingTables) -> None:
    """Drop this run's staging tables, the aggregation shards' included (missing ones are fine)."""
    with db.transaction(conn, settings.statement_timeout_seconds) as cur:
        cur.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s AND starts_with(tablename, %s)",
            (staging.schema, f"{staging.run_key}_"),
        )
        for (name,) in cur.fetchall():
            db.run(cur, sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(staging.schema, name)))


SKIP_REASONS = (
    "id_too_long",
    "device_name_missing_pairs",
    "device_id_null",
    "device_id_empty",
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
    allow_mass_delete: bool = False,
    force_apply: bool = False,
    shards: int = 1,
) -> dict[str, Any]:
    """All steps in order, as the DAG runs them (its shards one after the other); for tests and the demo."""
    started_at = datetime.now(UTC)
    try:
        devices = discover_active_devices(conn, settings, staging, device_ids, window_end=window.end)
        pairs = [
            aggregate_recent_measurements(conn, settings, staging, window, shard=shard, shards=shards)
            for shard in range(shards)
        ]
        names = resolve_parameter_names(conn, settings, staging, shards=shards)
        delta = compute_delta(conn, settings, staging, device_ids)
        run = {
            "run_id": run_id,
            "dag_id": "device_parameter_sync",
            "window_start": window.start,
            "window_end": window.end,
            "started_at": started_at,
            "device_scope": len(device_ids) if device_ids is not None else None,
            "active_devices": devices["active_devices"],
            "observed_pairs": names["observed_pairs"],
            "skipped": skipped_total(devices, names),
            "skipped_by_reason": skipped_by_reason(devices, names),
        }
        applied = apply_changes(
            conn,
            settings,
            staging,
            run=run,
            device_ids=device_ids,
            dry_run=dry_run,
            allow_mass_delete=allow_mass_delete,
            force_apply=force_apply,
        )
    except BaseException:
        # The original error matters more than a failed cleanup (after a killed backend the connection is gone).
        if conn.broken or conn.closed:
            log.warning("Not dropping the staging tables of %s: the connection is gone", staging.run_key)
        else:
            try:
                drop_staging(conn, settings, staging)
            except psycopg.Error as cleanup_error:
                log.warning("Could not drop the staging tables of %s: %s", staging.run_key, cleanup_error)
        raise
    drop_staging(conn, settings, staging)
    return {**devices, "method": pairs[0]["method"], **names, **delta, **applied, "skipped": run["skipped"]}
