"""The sync's five steps, one function per DAG task, each a few set-based statements in PostgreSQL.

``discover_active_devices`` → ``aggregate_recent_measurements`` (one call per shard) → ``resolve_parameter_names``
→ ``compute_delta`` → ``apply_changes``. The first three each write this run's staging table
(:mod:`device_sync.staging`) in one transaction, so a retried step gives the same result and any step can run
in a different process or host. The changes themselves are never stored: they are counted, then computed again
inside the statement that applies them. Only small summaries (counts) come back to Python. :func:`sync_once`
runs them all in order (the demo and the tests).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from device_sync import db, guards, history, migrations, partitions, skips, staging
from device_sync.config import Settings
from device_sync.staging import StagingTables
from device_sync.window import Window, refuse_future_window

log = logging.getLogger(__name__)

DAG_ID = "device_parameter_sync"
SKIP_SCAN = partitions.SKIP_SCAN
WINDOW_SCAN = partitions.WINDOW_SCAN
BY_PARTITION = "by_partition"
PAIR_METHODS = (SKIP_SCAN, WINDOW_SCAN, BY_PARTITION, f"{BY_PARTITION}:{SKIP_SCAN}", f"{BY_PARTITION}:{WINDOW_SCAN}")


def _scope(device_ids: Sequence[str] | None) -> dict[str, Any]:
    """The device scope as a bound parameter: NULL means every device."""
    return {"device_ids": list(device_ids) if device_ids is not None else None}


def _names(device_ids: Sequence[str] | None = None) -> dict[str, Any]:
    """The bound parameters of the statements that judge names: the device scope and the blank-name pattern."""
    return {**_scope(device_ids), "blank_name": skips.BLANK_NAME_PATTERN}


def ensure_schema(conn: psycopg.Connection[Any], settings: Settings) -> None:
    """Make sure the package's tables are at this version's schema (:mod:`device_sync.migrations`).

    A brand-new database gets them created (a fresh install); a database behind this version raises
    ``SchemaBehind`` naming ``device-sync-migrate``, which its owner runs (the DAG's login may not change the tables).
    """
    migrations.ensure_current(conn, settings)


def discover_active_devices(
    conn: psycopg.Connection[Any],
    settings: Settings,
    tables: StagingTables,
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
        staging.rebuild(cur, "active_devices", tables, settings, _names(device_ids))
        return staging.summary(cur, "discover_active_devices", tables, settings, _names(device_ids))


def pair_method(cur: psycopg.Cursor[Any], settings: Settings) -> str:
    """How to find the window's pairs: partition by partition on a partitioned table (:mod:`device_sync.partitions`);
    else a loose index scan when the measurements table has an index on ``(device_id, parameter_id, <time
    column>)`` (read from the catalog), a scan of the window otherwise."""
    if partitions.is_partitioned(cur, settings):
        return BY_PARTITION
    return SKIP_SCAN if partitions.has_pair_index(cur, settings) else WINDOW_SCAN


def _pairs_of(source: sql.Composable, method: str, settings: Settings, tables: StagingTables) -> sql.Composed:
    """The SELECT of the observed pairs of ``source`` (a table, or ONLY one partition) by ``method``."""
    identifiers = {**tables.identifiers(settings), "source": source}
    return db.compose(f"{db.STEPS_SQL}observed_pairs_{method}.sql", identifiers)


def _partition_method(partition: partitions.Partition, forced: str | None) -> str:
    """The partition's own choice, or the forced one where the partition allows it (tests, the benchmark)."""
    usable = forced == WINDOW_SCAN or partition.has_pair_index
    return forced if forced and usable else partition.method


def _pairs_by_partition(
    cur: psycopg.Cursor[Any], settings: Settings, tables: StagingTables, window: Window, forced: str | None
) -> tuple[sql.Composable, dict[str, int]]:
    """The UNION of every overlapping partition's pairs, each read its own way; the count of each way."""
    overlapping = partitions.overlapping(cur, settings, window)
    unreadable = [partition.name for partition in overlapping if not partition.readable]
    if unreadable:  # partitions carry privileges of their own: read them through the parent instead
        log.warning(
            "Cannot read partitions %s directly (GRANT SELECT on them, as on the measurements table, to find the "
            "pairs partition by partition): scanning the window through %s",
            ", ".join(unreadable),
            settings.measurements_table,
        )
        return _pairs_of(settings.measurements_identifier, WINDOW_SCAN, settings, tables), {WINDOW_SCAN: 1}
    if not overlapping:
        log.info("No partition of %s overlaps the window", settings.measurements_table)
        return _pairs_of(settings.measurements_identifier, WINDOW_SCAN, settings, tables), {}
    chosen = [(partition, _partition_method(partition, forced)) for partition in overlapping]
    for partition, method in chosen:
        forced_note = "" if method == partition.method else f" (forced: {method.replace('_', ' ')})"
        log.info("Partition %s%s", partition.describe(), forced_note)
    counts = dict(Counter(method for _, method in chosen))
    if forced is None and set(counts) == {WINDOW_SCAN}:
        # One DISTINCT over the parent reads the same partitions (pruned), hashes once and may run in parallel.
        log.info("Every partition by window scan: one scan of %s", settings.measurements_table)
        return _pairs_of(settings.measurements_identifier, WINDOW_SCAN, settings, tables), counts
    parts = [sql.SQL("({})").format(_pairs_of(p.source, method, settings, tables)) for p, method in chosen]
    return sql.SQL("\nUNION\n").join(parts), counts


def aggregate_recent_measurements(
    conn: psycopg.Connection[Any],
    settings: Settings,
    tables: StagingTables,
    window: Window,
    *,
    shard: int = 0,
    shards: int = 1,
    method: str | None = None,
) -> dict[str, Any]:
    """Stage the distinct (device, parameter) pairs that this shard's active devices reported in the window.

    The active devices are split into ``shards`` by a hash of their id; each shard is one mapped task with its
    own staging table, which :func:`resolve_parameter_names` combines. ``method`` (tests and the benchmark
    only) overrides the catalog's choice: the skip scan or the window scan of the whole table, or, by
    partition, every partition with an index by the skip scan (``by_partition:skip_scan``) or every one by
    the window scan (``by_partition:window_scan``).
    """
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is not one of the {shards} aggregation shards")
    if method is not None and method not in PAIR_METHODS:
        raise ValueError(f"unknown pair method {method!r}; expected one of {PAIR_METHODS}")
    with db.transaction(conn, settings.statement_timeout_seconds) as cur:
        method = method or pair_method(cur, settings)
        log.info("Finding the window's pairs by %s (shard %d of %d)", method.replace("_", " "), shard + 1, shards)
        by_partition: dict[str, int] = {}
        if method.startswith(BY_PARTITION):
            forced = method.partition(":")[2] or None
            pairs, by_partition = _pairs_by_partition(cur, settings, tables, window, forced)
        else:
            pairs = _pairs_of(settings.measurements_identifier, method, settings, tables)
        params = {**window.as_params(), "shard": shard, "shards": shards}
        table = staging.shard_table(shard, shards)
        staging.rebuild(
            cur, "observed_pairs", tables, settings, params, table=table, statistics=False, extra={"pairs": pairs}
        )
        counts = db.fetch_one_dict(
            cur,
            db.compose(
                f"{db.STEPS_SQL}aggregate_recent_measurements_summary.sql", {"observed_pairs": tables.table(table)}
            ),
        )
    summary = {"shard": shard, "shards": shards, "method": method, "shard_pairs": int(counts["observed_pairs"])}
    if method.startswith(BY_PARTITION):
        summary["partitions_by_method"] = by_partition
    return summary


def resolve_parameter_names(
    conn: psycopg.Connection[Any], settings: Settings, tables: StagingTables, *, shards: int = 1
) -> dict[str, int]:
    """Combine the aggregation shards, then name every observed pair; unnameable pairs are kept as skipped."""
    with db.transaction(conn, settings.statement_timeout_seconds) as cur:
        staging.combine_shards(cur, settings, tables, shards)
        observed = staging.summary(cur, "aggregate_recent_measurements", tables, settings)
        staging.rebuild(cur, "resolved_pairs", tables, settings, _names(), statistics=False)
        return {**observed, **staging.summary(cur, "resolve_parameter_names", tables, settings)}


def changes_identifiers(tables: StagingTables, settings: Settings) -> dict[str, sql.Composable]:
    """The staging identifiers plus ``{changes}``: the SELECT of this run's changes (changes.sql)."""
    identifiers = tables.identifiers(settings)
    return {**identifiers, "changes": db.compose(f"{db.STEPS_SQL}changes.sql", identifiers)}


def _count_changes(
    cur: psycopg.Cursor[Any], settings: Settings, tables: StagingTables, device_ids: Sequence[str] | None
) -> dict[str, int]:
    row = db.fetch_one_dict(
        cur, db.compose(f"{db.STEPS_SQL}compute_delta.sql", changes_identifiers(tables, settings)), _scope(device_ids)
    )
    return {key: int(value) for key, value in row.items()}


def compute_delta(
    conn: psycopg.Connection[Any],
    settings: Settings,
    tables: StagingTables,
    device_ids: Sequence[str] | None = None,
) -> dict[str, int]:
    """Count the inserts, updates and deletes that would make the table equal the desired set now.

    The changes themselves are not stored: :func:`apply_changes` computes them again under the writers' lock,
    inside the statement that applies them.
    """
    with db.transaction(conn, settings.statement_timeout_seconds) as cur:
        return _count_changes(cur, settings, tables, device_ids)


DELETED_SAMPLE_SIZE = 10


def _delta_fingerprint(
    cur: psycopg.Cursor[Any], change_set: sql.Composable, device_ids: Sequence[str] | None
) -> dict[str, Any]:
    """Counts and fingerprint (delta_fingerprint.sql) of ``change_set``: a table, or a parenthesized SELECT."""
    row = db.fetch_one_dict(
        cur, db.compose(f"{db.STEPS_SQL}delta_fingerprint.sql", {"change_set": change_set}), _scope(device_ids)
    )
    return {**{key: int(row[key]) for key in ("inserts", "updates", "deletes")}, "fingerprint": row["fingerprint"]}


def mass_delete_review(
    conn: psycopg.Connection[Any],
    settings: Settings,
    tables: StagingTables,
    *,
    run: dict[str, Any],
    deletes: int,
    device_ids: Sequence[str] | None = None,
    force_apply: bool = False,
) -> dict[str, Any] | None:
    """What a human must see to approve this run's mass delete, or None when apply_changes would not trip the
    mass-delete guard (another guard decides first, or the deletes are within DEVICE_SYNC_MAX_DELETE_FRACTION).
    ``deletes`` is compute_delta's count: a run that asks nothing pays only guard_state.sql's counts.

    The run's changes are written once to its ``pending_changes`` staging table: the approver pages through
    them, and the review carries their counts and fingerprint, which apply_changes compares with the delta it
    computes again under the writers' lock. Read without the lock: the approval is only a question.
    """
    identifiers = changes_identifiers(tables, settings)
    with db.transaction(conn, settings.statement_timeout_seconds) as cur:
        state = db.fetch_one_dict(cur, db.compose(f"{db.STEPS_SQL}guard_state.sql", identifiers), _scope(device_ids))
        try:
            if guards.check_before_writing(cur, identifiers, run, state, False, force_apply) is not None:
                return None  # an older window: apply_changes records the delta, applies nothing
        except guards.GuardTripped:
            return None  # stale measurements: not a question for a human, the run fails as before
        if not guards.mass_delete_exceeds(settings, state["table_rows"], deletes):
            return None
        staging.rebuild(
            cur,
            "pending_changes",
            tables,
            settings,
            _scope(device_ids),
            sql_file="pending_changes",
            extra={"changes": identifiers["changes"]},
            statistics=False,
        )
        pending = tables.table("pending_changes")
        db.run(cur, sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (device_id, parameter_id)").format(pending))
        delta = _delta_fingerprint(cur, pending, device_ids)
        sample = db.fetch_all_dicts(
            cur,
            db.compose(f"{db.STEPS_SQL}deleted_sample.sql", {"pending_changes": pending}),
            {"limit": DELETED_SAMPLE_SIZE},
        )
    return {**delta, "table_rows": int(state["table_rows"]), "deleted_sample": sample}


def apply_changes(
    conn: psycopg.Connection[Any],
    settings: Settings,
    tables: StagingTables,
    *,
    run: dict[str, Any] | None = None,
    device_ids: Sequence[str] | None = None,
    dry_run: bool = False,
    allow_mass_delete: bool = False,
    force_apply: bool = False,
    approved: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Apply the delta, its change log and the run's history row in one transaction, under the writers' lock.

    The changes are computed again after the lock is taken, inside the statement that applies them
    (apply_changes.sql), so a run that waited for another one applies exactly what is still needed and a retry
    after a failure applies what the failed attempt did not.
    The guards (:mod:`device_sync.guards`) run before anything is written, the mass-delete guard on the
    statement's own delete count (tripping it rolls everything back). A dry run, and a run whose window
    ends before the newest applied one (a backfill), record the delta's counts and change nothing else.
    ``approved`` is a mass delete a human approved (:func:`mass_delete_review`'s counts and fingerprint): it
    is applied past the mass-delete guard only if the delta computed now under the lock is still that one.
    """
    identifiers = tables.identifiers(settings)
    run = run or {"run_id": tables.run_key, "dag_id": DAG_ID}
    # A run that does not say when it started started no later than now (never after its finished_at).
    run = {**run, "started_at": run.get("started_at") or datetime.now(UTC)}
    if run.get("window_end") is not None and not dry_run:
        refuse_future_window(conn, settings, run["window_end"])
    with db.transaction(conn, settings.statement_timeout_seconds) as cur:
        db.run(cur, db.load_sql(f"{db.STEPS_SQL}lock_target.sql"))
        state = db.fetch_one_dict(cur, db.compose(f"{db.STEPS_SQL}guard_state.sql", identifiers), _scope(device_ids))
        guard = (
            None
            if dry_run
            else guards.check_before_writing(cur, identifiers, run, state, allow_mass_delete, force_apply)
        )
        if dry_run or guard == guards.OLDER_WINDOW:
            would = _count_changes(cur, settings, tables, device_ids)
            counts = {"inserted": would["inserts"], "updated": would["updates"], "deleted": would["deletes"]}
        else:
            with_changes = changes_identifiers(tables, settings)
            if approved is not None:
                _refuse_a_changed_delta(cur, with_changes["changes"], approved, device_ids)
            applied_counts = db.fetch_one_dict(
                cur,
                db.compose(f"{db.STEPS_SQL}apply_changes.sql", with_changes),
                {**_scope(device_ids), "run_id": run["run_id"]},
            )
            counts = {key: int(value) for key, value in applied_counts.items()}
            if not allow_mass_delete and approved is None:
                # Raising here rolls the whole transaction back: the deletes it counts are never committed.
                guards.check_mass_delete(settings, state["table_rows"], counts["deleted"])
        applied = not dry_run and guard is None
        finished = {"status": "success", "dry_run": dry_run, "applied": applied, "error": None, "guard": guard}
        history.record_run(cur, tables.schema, {**run, **counts, **finished, "finished_at": datetime.now(UTC)})
        if applied:
            history.prune(cur, tables.schema, settings.history_retention_days)
    return {**counts, "applied": applied, "guard": guard}


def _refuse_a_changed_delta(
    cur: psycopg.Cursor[Any], changes: sql.Composable, approved: dict[str, Any], device_ids: Sequence[str] | None
) -> None:
    """An approved mass delete is applied only as approved: a delta that changed since fails the run unapplied."""
    now = _delta_fingerprint(cur, sql.SQL("({})").format(changes), device_ids)
    if now["fingerprint"] != approved["fingerprint"]:
        counts = "{inserts} inserts, {updates} updates, {deletes} deletes"
        raise guards.GuardTripped(
            guards.MASS_DELETE,
            f"mass delete not applied: the delta changed after it was approved (approved: "
            f"{counts.format(**approved)}; now: {counts.format(**now)}). Nothing was applied. Trigger a new run "
            f"to be asked again about the current delta.",
        )


def sync_once(
    conn: psycopg.Connection[Any],
    settings: Settings,
    tables: StagingTables,
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
        devices = discover_active_devices(conn, settings, tables, device_ids, window_end=window.end)
        pairs = [
            aggregate_recent_measurements(conn, settings, tables, window, shard=shard, shards=shards)
            for shard in range(shards)
        ]
        names = resolve_parameter_names(conn, settings, tables, shards=shards)
        delta = compute_delta(conn, settings, tables, device_ids)
        run = {
            "run_id": run_id,
            "dag_id": DAG_ID,
            "window_start": window.start,
            "window_end": window.end,
            "started_at": started_at,
            "device_scope": len(device_ids) if device_ids is not None else None,
            "active_devices": devices["active_devices"],
            "observed_pairs": names["observed_pairs"],
            "skipped": skips.skipped_total(devices, names),
            "skipped_by_reason": skips.skipped_by_reason(devices, names),
        }
        applied = apply_changes(
            conn,
            settings,
            tables,
            run=run,
            device_ids=device_ids,
            dry_run=dry_run,
            allow_mass_delete=allow_mass_delete,
            force_apply=force_apply,
        )
    except BaseException:
        # The original error matters more than a failed cleanup (after a killed backend the connection is gone).
        if conn.broken or conn.closed:
            log.warning("Not dropping the staging tables of %s: the connection is gone", tables.run_key)
        else:
            try:
                staging.drop_tables(conn, settings, tables)
            except psycopg.Error as cleanup_error:
                log.warning("Could not drop the staging tables of %s: %s", tables.run_key, cleanup_error)
        raise
    staging.drop_tables(conn, settings, tables)
    return {**devices, "method": pairs[0]["method"], **names, **delta, **applied, "skipped": run["skipped"]}
