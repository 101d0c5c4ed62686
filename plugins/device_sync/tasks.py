"""The callables of ``device_parameter_sync``'s tasks: thin glue from a run's context to the steps.

The DAG file turns them into tasks at every parse, so Airflow's decorators never share state between two
parses in one process. Each task opens its own connection (:func:`device_sync.errors.connection`, which also
decides what is retried), works on this run's staging tables and returns a small summary (counts) as its XCom,
so it runs on any executor and a retry repeats it safely.

psycopg and the steps are imported inside the callables, when a task runs: the DAG file imports this module at
every parse, and the DAG processor should not pay for them (see bench/README.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from device_sync.config import Settings, load_settings
from device_sync.errors import connection
from device_sync.options import RunOptions, run_window

if TYPE_CHECKING:
    from device_sync.staging import StagingTables

log = logging.getLogger(__name__)


def staging_of(dag_run: Any, settings: Settings) -> StagingTables:
    from device_sync.staging import StagingTables

    return StagingTables.for_run(settings.staging_schema, dag_run.dag_id, dag_run.run_id)


def run_record(context: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """The run's identity for the run history: ids, logical date, window, options."""
    dag_run = context["dag_run"]
    options = RunOptions.from_params(context.get("params"))
    window = run_window(dag_run, settings, options)
    return {
        "run_id": dag_run.run_id,
        "dag_id": dag_run.dag_id,
        "logical_date": dag_run.logical_date,
        "window_start": window.start,
        "window_end": window.end,
        "started_at": dag_run.start_date,
        "dry_run": options.dry_run,
        "device_scope": len(options.device_ids) if options.device_ids is not None else None,
    }


def _timed(name: str, started: float, summary: dict[str, Any]) -> dict[str, Any]:
    summary[f"{name}_seconds"] = round(time.monotonic() - started, 3)
    log.info("%s: %s", name, summary)
    return summary


# --- the steps --------------------------------------------------------------------------------------------


def plan_aggregation_shards() -> list[dict[str, int]]:
    """Fix this run's aggregation shards: one ``{"shard": i, "shards": N}`` per shard, N read once, here, from
    DEVICE_SYNC_AGGREGATION_SHARDS. The shards are mapped over this list and resolve_parameter_names combines
    exactly these, so a change of the variable while the run goes on changes nothing in it."""
    shards = load_settings().aggregation_shards
    return [{"shard": shard, "shards": shards} for shard in range(shards)]


def discover_active_devices(**context: Any) -> dict[str, Any]:
    """Stage the active devices (status IS TRUE) of iot_data.redshift_devices; count skipped device rows."""
    from device_sync import sync

    settings = load_settings()
    options = RunOptions.from_params(context.get("params"))
    log.info("Run options: %s", options)
    window = run_window(context["dag_run"], settings, options)
    started = time.monotonic()
    with connection(settings) as conn:
        summary = sync.discover_active_devices(
            conn, settings, staging_of(context["dag_run"], settings), options.device_ids, window_end=window.end
        )
    return _timed("discover_active_devices", started, summary)


def aggregate_recent_measurements(shard: int, shards: int, **context: Any) -> dict[str, Any]:
    """Stage the distinct (device, parameter) pairs that one shard of the active devices reported in the window.

    Mapped over this run's shards (plan_aggregation_shards); a loose index scan when the measurements table has
    the recommended index, a scan of the window otherwise (the log says which).
    """
    from device_sync import sync

    settings = load_settings()
    window = run_window(context["dag_run"], settings, RunOptions.from_params(context.get("params")))
    log.info("Window: [%s, %s)", window.start.isoformat(), window.end.isoformat())
    started = time.monotonic()
    with connection(settings) as conn:
        summary = sync.aggregate_recent_measurements(
            conn, settings, staging_of(context["dag_run"], settings), window, shard=shard, shards=shards
        )
    summary = _timed("aggregate_recent_measurements", started, summary)
    return {**summary, "window_start": window.start.isoformat(), "window_end": window.end.isoformat()}


def resolve_parameter_names(shard_plan: list[dict[str, int]], **context: Any) -> dict[str, Any]:
    """Combine this run's aggregation shards (``shard_plan``); name the observed pairs; unnameable pairs are
    skipped and counted."""
    from device_sync import sync

    settings = load_settings()
    started = time.monotonic()
    with connection(settings) as conn:
        summary = sync.resolve_parameter_names(
            conn, settings, staging_of(context["dag_run"], settings), shards=len(shard_plan)
        )
    return _timed("resolve_parameter_names", started, summary)


def compute_delta(**context: Any) -> dict[str, Any]:
    """Count the inserts, updates and deletes that would bring iot_data.device_parameters up to date."""
    from device_sync import sync

    settings = load_settings()
    options = RunOptions.from_params(context.get("params"))
    started = time.monotonic()
    with connection(settings) as conn:
        summary = sync.compute_delta(conn, settings, staging_of(context["dag_run"], settings), options.device_ids)
    return _timed("compute_delta", started, summary)


def review_mass_delete(context: Mapping[str, Any]) -> dict[str, Any] | None:
    """The approve_mass_delete question's content, or None when this run's apply_changes would not trip the
    mass-delete guard (see :func:`device_sync.sync.mass_delete_review`). A dry run and a run with
    allow_mass_delete never ask."""
    from device_sync import sync

    settings = load_settings()
    options = RunOptions.from_params(context.get("params"))
    if options.dry_run or options.allow_mass_delete:
        return None
    delta = context["ti"].xcom_pull(task_ids="compute_delta") or {}
    if not delta.get("deletes"):
        return None  # nothing to delete: no mass delete
    with connection(settings) as conn:
        return sync.mass_delete_review(
            conn,
            settings,
            staging_of(context["dag_run"], settings),
            run=run_record(context, settings),
            deletes=int(delta["deletes"]),
            device_ids=options.device_ids,
            force_apply=options.force_apply,
        )


def apply_changes(**context: Any) -> dict[str, Any]:
    """Apply the delta, its change log and the run's history row in one transaction under the writers' lock.

    A dry run (param dry_run) records the delta in the run history and changes nothing else.
    """
    from device_sync import skips, sync

    settings = load_settings()
    options = RunOptions.from_params(context.get("params"))
    ti = context["ti"]
    devices = ti.xcom_pull(task_ids="discover_active_devices") or {}
    names = ti.xcom_pull(task_ids="resolve_parameter_names") or {}
    run = {
        **run_record(context, settings),
        "active_devices": devices.get("active_devices"),
        "observed_pairs": names.get("observed_pairs"),
        "skipped": skips.skipped_total(devices, names),
        "skipped_by_reason": skips.skipped_by_reason(devices, names),
        # A retry after a lost worker applies on another one: the history row says which attempt and where.
        "apply_attempt": ti.try_number,
        "apply_host": getattr(ti, "hostname", None),
    }
    # A mass delete put to a human (approve_mass_delete): approved, it is applied if the delta is unchanged;
    # rejected or unanswered, the mass-delete guard trips as it does without a question.
    answer = ti.xcom_pull(task_ids="approve_mass_delete") or {}
    approved = answer if answer.get("approved") else None
    started = time.monotonic()
    with connection(settings) as conn, guard_recorded(context, settings), guards_explained(answer):
        counts = sync.apply_changes(
            conn,
            settings,
            staging_of(context["dag_run"], settings),
            run=run,
            device_ids=options.device_ids,
            dry_run=options.dry_run,
            allow_mass_delete=options.allow_mass_delete,
            force_apply=options.force_apply,
            approved=approved,
        )
    counts = _timed("apply_changes", started, counts)
    if not counts["applied"]:  # nothing was written: report what would have been, publish zero changes
        would = {f"would_have_{key}": counts[key] for key in ("inserted", "updated", "deleted")}
        counts = {**counts, **would, "inserted": 0, "updated": 0, "deleted": 0}
    return {**counts, "dry_run": options.dry_run}


@contextmanager
def guard_recorded(context: Mapping[str, Any], settings: Settings) -> Iterator[None]:
    """A tripped guard marks the run failed in the run history, with the guard, where it is known: not every
    Airflow hands on_failure_callback the exception (3.0 and 3.2 under ``airflow dags test`` do not)."""
    from device_sync.guards import GuardTripped

    try:
        yield
    except GuardTripped as tripped:
        record_run_failure(context, settings, f"{context['ti'].task_id}: {tripped}", guard=tripped.guard)
        raise


@contextmanager
def guards_explained(answer: Mapping[str, Any]) -> Iterator[None]:
    """A mass delete that a human rejected, or left unanswered, says so in the guard's error."""
    from device_sync.guards import MASS_DELETE, GuardTripped

    try:
        yield
    except GuardTripped as tripped:
        if tripped.guard != MASS_DELETE or not answer.get("asked") or answer.get("approved"):
            raise
        who = answer.get("answered_by")
        said = f"Rejected by {who} in approve_mass_delete." if who else "No answer in approve_mass_delete in time."
        raise GuardTripped(MASS_DELETE, f"{tripped} {said}") from None


def announce_change(**context: Any) -> dict[str, Any]:
    """Emit the event of the Asset iot_data.device_parameters, with the run's window and counts, when this run
    applied at least one change. Skipped otherwise (a dry run, a guarded run, an older window, no change): a
    skipped task emits no asset event, so downstream DAGs run only after a real change."""
    from device_sync import assets
    from device_sync.compat import AirflowSkipException

    applied = context["ti"].xcom_pull(task_ids="apply_changes") or {}
    counts = {key: int(applied.get(key) or 0) for key in ("inserted", "deleted", "updated")}
    if not applied.get("applied") or not any(counts.values()):
        raise AirflowSkipException("The run changed nothing in iot_data.device_parameters: no asset event")
    settings = load_settings()
    dag_run = context["dag_run"]
    window = run_window(dag_run, settings, RunOptions.from_params(context.get("params")))
    extra = {
        "run_id": dag_run.run_id,
        "window_start": window.start.isoformat(),
        "window_end": window.end.isoformat(),
        **counts,
    }
    context["outlet_events"][assets.target(settings)].extra = extra
    return extra


# --- failures ---------------------------------------------------------------------------------------------


def record_run_failure(
    context: Mapping[str, Any], settings: Settings, message: str, keep_error: bool = False, guard: str | None = None
) -> None:
    """Best effort: mark the run failed in the run history (the database may be the thing that failed)."""
    from device_sync import history, sync

    try:
        run = {**run_record(context, settings), "error": message[:2000], "guard": guard}
        with connection(settings) as conn:
            sync.ensure_schema(conn, settings)
            history.mark_run_failed(conn, settings, run, keep_error)
    except Exception as error:  # the original error matters more than this one
        log.warning("Could not record the failure in the run history: %s", error)


def record_step_failure(context: Mapping[str, Any]) -> None:
    """on_failure_callback of the steps: Airflow calls it once the task has failed for good (its last attempt,
    or an error that is not retried), never for an attempt that a retry may still fix. Marks the run failed
    in the run history with the task id first in the error (``<task_id>: <error>``) and the guard, if any."""
    from device_sync.guards import GuardTripped

    error = context.get("exception")
    task_id = context["ti"].task_id
    cause = getattr(error, "__cause__", None)
    guard = cause.guard if isinstance(cause, GuardTripped) else None
    # Without the exception (not every Airflow passes it), an error the step recorded itself is kept.
    message = f"{task_id}: {error or 'failed (see its log)'}"
    record_run_failure(context, load_settings(), message, keep_error=error is None, guard=guard)


# --- after the steps --------------------------------------------------------------------------------------


def recorded_guard(dag_run: Any) -> str | None:
    """The guard that failed this run, as apply_changes recorded it in the run history (None if unknown)."""
    from device_sync import history

    settings = load_settings()
    try:
        with connection(settings) as conn:
            return history.recorded_guard(conn, settings, dag_run.run_id)
    except Exception as error:  # metrics must still go out when the database is down
        log.warning("Could not read the run history: %s", error)
        return None


def publish_metrics(**context: Any) -> dict[str, Any]:
    """Publish the run's CloudWatch metrics; SyncSuccess=0 when a step failed (the run stays failed)."""
    from device_sync import metrics
    from device_sync.summary import AGGREGATE, STEP_TASK_IDS, run_summary

    settings = load_settings()
    ti, dag_run = context["ti"], context["dag_run"]
    steps = {task_id: ti.xcom_pull(task_ids=task_id) or {} for task_id in STEP_TASK_IDS if task_id != AGGREGATE}
    pulled = ti.xcom_pull(task_ids=AGGREGATE)  # a list per shard (a single value for one mapped instance)
    shards = [shard for shard in (pulled if isinstance(pulled, list) else [pulled]) if shard]
    guard = None if steps["apply_changes"] else recorded_guard(dag_run)
    summary = run_summary(steps, shards, guard)
    log.info("Run summary: %s", summary)
    if not summary["success"]:  # again, in case the database was down when the step failed
        failed = summary.get("failed_task") or "a step"
        record_run_failure(context, settings, f"{failed}: failed, see the task logs of this run", keep_error=True)
    metrics.publish(
        summary,
        aws_conn_id=settings.aws_conn_id,
        namespace=settings.cloudwatch_namespace,
        stage=settings.stage,
        timeout_seconds=settings.cloudwatch_timeout_seconds,
    )
    return summary


def cleanup_staging(**context: Any) -> None:
    """Drop this run's staging tables, whatever happened before."""
    from device_sync import staging

    settings = load_settings()
    with connection(settings) as conn:
        staging.drop_tables(conn, settings, staging_of(context["dag_run"], settings))


def fail_if_sync_failed() -> None:
    """Watcher: runs only when a step or publish_metrics failed, and fails so the DAG run is marked failed."""
    from device_sync.compat import AirflowFailException

    raise AirflowFailException("device_parameter_sync failed: see the failed task's log (SyncSuccess=0 was published)")
