"""The callables of ``device_parameter_sync``'s tasks: thin glue from a run's context to :mod:`device_sync.sync`.

The DAG file turns them into tasks (``task(...)``, ``teardown(...)``) at every parse, so Airflow's decorators
never share state between two parses in one process. Each task opens its own connection, works on this run's
staging tables and returns a small summary (counts) as its XCom, so it runs on any executor and a retry
repeats it safely.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException

from device_sync.config import Settings, load_settings

if TYPE_CHECKING:
    import psycopg

    from device_sync import sync

# psycopg and the sync itself are imported inside the callables, when a task runs: the DAG file imports
# this module at every parse, and the DAG processor should not pay for them (see README, Performance).

log = logging.getLogger(__name__)

STEP_TASK_IDS = (
    "discover_active_devices",
    "aggregate_recent_measurements",
    "resolve_parameter_names",
    "compute_delta",
    "apply_changes",
)
AGGREGATE = "aggregate_recent_measurements"  # the mapped step: one task instance per shard
SINGLE_STEPS = tuple(task_id for task_id in STEP_TASK_IDS if task_id != AGGREGATE)


def permanent_errors() -> tuple[type[Exception], ...]:
    """Errors a retry cannot fix: a missing table or column, missing privileges, a mistake in the SQL."""
    import psycopg

    return (
        psycopg.errors.UndefinedTable,
        psycopg.errors.InvalidSchemaName,
        psycopg.errors.UndefinedColumn,
        psycopg.errors.UndefinedObject,
        psycopg.errors.InsufficientPrivilege,
        psycopg.errors.SyntaxError,
        psycopg.errors.DatatypeMismatch,
        psycopg.errors.UndefinedFunction,
        psycopg.errors.ProgramLimitExceeded,
    )


CONNECT_ATTEMPTS = 5  # about 15 s of backoff before the task itself fails and Airflow retries it
MAX_DEVICE_IDS = 10_000
MAX_LOOKBACK_MINUTES = 60 * 24 * 31


@dataclass(frozen=True)
class RunOptions:
    """What an operator may set for one run (the DAG's params); scheduled runs get the defaults."""

    dry_run: bool = False
    lookback_minutes: int | None = None
    device_ids: tuple[str, ...] | None = None
    allow_mass_delete: bool = False
    force_apply: bool = False

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> RunOptions:
        """Validate the params again in the task (they are also validated at trigger time); name the field."""
        params = params or {}
        flags = {name: params.get(name, False) for name in ("dry_run", "allow_mass_delete", "force_apply")}
        for name, value in flags.items():
            if not isinstance(value, bool):
                raise AirflowFailException(f"param {name} must be true or false, got {value!r}")
        lookback = params.get("lookback_minutes")
        if lookback is not None and (
            isinstance(lookback, bool) or not isinstance(lookback, int) or not 1 <= lookback <= MAX_LOOKBACK_MINUTES
        ):
            raise AirflowFailException(
                f"param lookback_minutes must be an integer from 1 to {MAX_LOOKBACK_MINUTES}, got {lookback!r}"
            )
        device_ids = params.get("device_ids")
        if device_ids is not None:
            if (
                not isinstance(device_ids, list | tuple)
                or not 1 <= len(device_ids) <= MAX_DEVICE_IDS
                or not all(isinstance(device, str) and device for device in device_ids)
            ):
                raise AirflowFailException(
                    f"param device_ids must be a list of 1 to {MAX_DEVICE_IDS} non-empty device id strings"
                )
            device_ids = tuple(dict.fromkeys(device_ids))
        return cls(lookback_minutes=lookback, device_ids=device_ids, **flags)


def window_end_of(dag_run: Any) -> datetime:
    """The run's window end: its data_interval_end, or run_after for a run triggered without a logical date."""
    end: datetime | None = dag_run.data_interval_end or dag_run.run_after
    if end is None:
        raise AirflowFailException("the DAG run has neither data_interval_end nor run_after")
    return end


def run_window(dag_run: Any, settings: Settings, options: RunOptions | None = None) -> sync.Window:
    from device_sync import sync

    lookback = (options.lookback_minutes if options else None) or settings.lookback_minutes
    return sync.Window.ending_at(window_end_of(dag_run), lookback)


def staging_of(dag_run: Any, settings: Settings) -> sync.StagingTables:
    from device_sync import sync

    return sync.StagingTables.for_run(settings.staging_schema, dag_run.dag_id, dag_run.run_id)


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


@contextmanager
def connection(settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    """A connection to the IoT database; permanent SQL errors fail the task at once, without retries."""
    import psycopg

    from device_sync import db, sync

    try:
        conn = db.connect(settings.postgres_conn_id, connect_timeout=10, attempts=CONNECT_ATTEMPTS)
    except AirflowNotFoundException as error:
        raise AirflowFailException(
            f"The Airflow connection {settings.postgres_conn_id!r} (DEVICE_SYNC_POSTGRES_CONN_ID) does not exist:"
            f" define it (e.g. AIRFLOW_CONN_{settings.postgres_conn_id.upper()}) or fix the setting ({error})"
        ) from error
    try:
        yield conn
    except permanent_errors() as error:
        raise AirflowFailException(
            f"{type(error).__name__}: {error} (not retried: fix the database or the configuration)"
        ) from error
    except (sync.GuardTripped, sync.StagingMissing, sync.FutureWindow) as error:
        raise AirflowFailException(str(error)) from error
    except psycopg.errors.QueryCanceled as error:
        if not is_statement_timeout(error):
            # An administrator's pg_cancel_backend, a failover, a shutdown: a fault, so Airflow retries it.
            log.warning("A statement was cancelled, not by the statement timeout; the task will be retried: %s", error)
            raise
        raise AirflowFailException(
            f"A statement ran longer than DEVICE_SYNC_STATEMENT_TIMEOUT_SECONDS={settings.statement_timeout_seconds}"
            f" and was cancelled; nothing of this step was written. Raise the timeout or look for a missing"
            f" index or a lock ({error})"
        ) from error
    finally:
        conn.close()


def is_statement_timeout(error: Exception) -> bool:
    """Whether a cancelled statement (SQLSTATE 57014) hit statement_timeout rather than another cancel.

    Both share the SQLSTATE; only the server's message tells them apart ("canceling statement due to statement
    timeout" against "... due to user request"). A server whose lc_messages is not English gives another text:
    its timeouts are then retried like any other cancel, which costs time but never data.
    """
    diag = getattr(error, "diag", None)
    message = (getattr(diag, "message_primary", None) or str(error)).lower()
    return "statement timeout" in message


def _step(name: str, context: Mapping[str, Any], **kwargs: Any) -> dict[str, Any]:
    from device_sync import sync

    settings = load_settings()
    staging = staging_of(context["dag_run"], settings)
    started = time.monotonic()
    with connection(settings) as conn:
        summary: dict[str, Any] = getattr(sync, name)(conn, settings, staging, **kwargs)
    summary[f"{name}_seconds"] = round(time.monotonic() - started, 3)
    log.info("%s: %s", name, summary)
    return summary


def record_step_failure(context: Mapping[str, Any]) -> None:
    """on_failure_callback of the steps: Airflow calls it once the task has failed for good (its last attempt,
    or an error that is not retried), never for an attempt that a retry may still fix. Marks the run failed
    in the run history with the task id first in the error (``<task_id>: <error>``) and the guard, if any."""
    from device_sync import sync

    error = context.get("exception")
    task_id = context["ti"].task_id
    cause = getattr(error, "__cause__", None)
    guard = cause.guard if isinstance(cause, sync.GuardTripped) else None
    record_failure(context, load_settings(), f"{task_id}: {error or 'failed (see its log)'}", guard=guard)


def record_failure(
    context: Mapping[str, Any], settings: Settings, message: str, keep_error: bool = False, guard: str | None = None
) -> None:
    """Best effort: mark the run failed in the run history (the database may be the thing that failed)."""
    from device_sync import sync

    try:
        run = {**run_record(context, settings), "error": message[:2000], "guard": guard}
        with connection(settings) as conn:
            sync.record_failure(conn, settings, staging_of(context["dag_run"], settings), run, keep_error)
    except Exception as error:  # the original error matters more than this one
        log.warning("Could not record the failure in the run history: %s", error)


def discover_active_devices(**context: Any) -> dict[str, Any]:
    """Stage the active devices (status IS TRUE) of iot_data.redshift_devices; count skipped device rows."""
    settings = load_settings()
    options = RunOptions.from_params(context.get("params"))
    log.info("Run options: %s", options)
    window = run_window(context["dag_run"], settings, options)
    return _step("discover_active_devices", context, device_ids=options.device_ids, window_end=window.end)


def aggregate_recent_measurements(shard: int = 0, **context: Any) -> dict[str, Any]:
    """Stage the distinct (device, parameter) pairs that one shard of the active devices reported in the window.

    Mapped over ``range(DEVICE_SYNC_AGGREGATION_SHARDS)``; a loose index scan when the measurements table has
    the recommended index, a scan of the window otherwise.
    """
    settings = load_settings()
    window = run_window(context["dag_run"], settings, RunOptions.from_params(context.get("params")))
    log.info("Window: [%s, %s)", window.start.isoformat(), window.end.isoformat())
    summary: dict[str, Any] = _step(
        "aggregate_recent_measurements", context, window=window, shard=shard, shards=settings.aggregation_shards
    )
    return {**summary, "window_start": window.start.isoformat(), "window_end": window.end.isoformat()}


def resolve_parameter_names(**context: Any) -> dict[str, Any]:
    """Combine the aggregation shards; name the observed pairs; unnameable pairs are skipped and counted."""
    return _step("resolve_parameter_names", context, shards=load_settings().aggregation_shards)


def compute_delta(**context: Any) -> dict[str, Any]:
    """Stage the inserts, updates and deletes that would bring iot_data.device_parameters up to date."""
    options = RunOptions.from_params(context.get("params"))
    return _step("compute_delta", context, device_ids=options.device_ids)


def apply_changes(**context: Any) -> dict[str, Any]:
    """Apply the delta, its change log and the run's history row in one transaction under the writers' lock.

    A dry run (param dry_run) records the delta in the run history and changes nothing else.
    """
    from device_sync import sync

    settings = load_settings()
    options = RunOptions.from_params(context.get("params"))
    devices, names = (context["ti"].xcom_pull(task_ids=task_id) or {} for task_id in SINGLE_STEPS[:2])
    run = {
        **run_record(context, settings),
        "active_devices": devices.get("active_devices"),
        "observed_pairs": names.get("observed_pairs"),
        "skipped": sync.skipped_total(devices, names),
        "skipped_by_reason": sync.skipped_by_reason(devices, names),
    }
    counts = _step(
        "apply_changes",
        context,
        run=run,
        device_ids=options.device_ids,
        dry_run=options.dry_run,
        allow_mass_delete=options.allow_mass_delete,
        force_apply=options.force_apply,
    )
    if not counts["applied"]:  # nothing was written: report what would have been, publish zero changes
        would = {f"would_have_{key}": counts[key] for key in ("inserted", "updated", "deleted")}
        counts = {**counts, **would, "inserted": 0, "updated": 0, "deleted": 0}
    return {**counts, "dry_run": options.dry_run}


def recorded_guard(dag_run: Any) -> str | None:
    """The guard that failed this run, as apply_changes recorded it in the run history (None if unknown)."""
    from device_sync import sync

    settings = load_settings()
    try:
        with connection(settings) as conn:
            return sync.recorded_guard(conn, settings, staging_of(dag_run, settings), dag_run.run_id)
    except Exception as error:  # metrics must still go out when the database is down
        log.warning("Could not read the run history: %s", error)
        return None


def shard_summaries(ti: Any) -> list[dict[str, Any]]:
    """The XComs of the aggregation shards (a mapped task with one shard still gives a single value)."""
    pulled = ti.xcom_pull(task_ids=AGGREGATE)
    shards = pulled if isinstance(pulled, list) else [pulled]
    return [shard for shard in shards if shard]


def run_summary(ti: Any, dag_run: Any) -> dict[str, Any]:
    """Everything the steps reported (from their XComs), plus success, skipped total and duration."""
    from device_sync import sync

    step_summaries = {task_id: ti.xcom_pull(task_ids=task_id) or {} for task_id in SINGLE_STEPS}
    summary: dict[str, Any] = {}
    for step_summary in step_summaries.values():
        summary.update(step_summary)
    shards = shard_summaries(ti)
    if shards:
        summary["method"] = shards[0].get("method")
        # The shards run side by side: the slowest one is the aggregation's time.
        summary[f"{AGGREGATE}_seconds"] = max(shard.get(f"{AGGREGATE}_seconds", 0.0) for shard in shards)
    summary["success"] = 1 if step_summaries["apply_changes"] else 0
    if not summary["success"]:  # the first step without a summary is the one that failed
        aggregated = bool(shards) and len(shards) == shards[0].get("shards", len(shards))
        summary["failed_task"] = next(
            task_id
            for task_id in STEP_TASK_IDS
            if not (aggregated if task_id == AGGREGATE else step_summaries[task_id])
        )
    guard = step_summaries["apply_changes"].get("guard") or recorded_guard(dag_run)
    for name in sync.GUARDS:
        summary[f"guard_{name}"] = 1 if guard == name else 0
    if step_summaries["resolve_parameter_names"]:
        summary["skipped"] = sync.skipped_total(*step_summaries.values())
    # Time spent in the steps themselves, not in queues between them (comparable across executors).
    summary["duration_seconds"] = round(sum(summary.get(f"{task_id}_seconds", 0.0) for task_id in STEP_TASK_IDS), 3)
    return summary


def publish_metrics(**context: Any) -> dict[str, Any]:
    """Publish the run's CloudWatch metrics; SyncSuccess=0 when a step failed (the run stays failed)."""
    from device_sync import metrics

    settings = load_settings()
    summary = run_summary(context["ti"], context["dag_run"])
    log.info("Run summary: %s", summary)
    if not summary["success"]:  # again, in case the database was down when the step failed
        failed = summary.get("failed_task") or "a step"
        record_failure(context, settings, f"{failed}: failed, see the task logs of this run", keep_error=True)
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
    from device_sync import sync

    settings = load_settings()
    with connection(settings) as conn:
        sync.drop_staging(conn, settings, staging_of(context["dag_run"], settings))


def fail_if_sync_failed() -> None:
    """Watcher: runs only when a step or publish_metrics failed, and fails so the DAG run is marked failed."""
    raise AirflowFailException("device_parameter_sync failed: see the failed task's log (SyncSuccess=0 was published)")
