"""The callables of ``device_parameter_sync``'s tasks: thin glue from a run's context to :mod:`device_sync.sync`.

The DAG file turns them into tasks (``task(...)``, ``teardown(...)``) at every parse, so Airflow's decorators
never share state between two parses in one process. Each task opens its own connection, works on this run's
staging tables and returns a small summary (counts) as its XCom, so it runs on any executor and a retry
repeats it safely.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg
from airflow.sdk.exceptions import AirflowFailException

from device_sync import metrics, sync
from device_sync.config import Settings, load_settings

log = logging.getLogger(__name__)

STEP_TASK_IDS = (
    "discover_active_devices",
    "aggregate_recent_measurements",
    "resolve_parameter_names",
    "compute_delta",
    "apply_changes",
)

# Errors a retry cannot fix: a missing table or column, missing privileges, a mistake in the SQL.
PERMANENT_ERRORS = (
    psycopg.errors.UndefinedTable,
    psycopg.errors.InvalidSchemaName,
    psycopg.errors.UndefinedColumn,
    psycopg.errors.UndefinedObject,
    psycopg.errors.InsufficientPrivilege,
    psycopg.errors.SyntaxError,
    psycopg.errors.DatatypeMismatch,
    psycopg.errors.UndefinedFunction,
)


def window_end_of(dag_run: Any) -> datetime:
    """The run's window end: its data_interval_end, or run_after for a run triggered without a logical date."""
    end: datetime | None = dag_run.data_interval_end or dag_run.run_after
    if end is None:
        raise AirflowFailException("the DAG run has neither data_interval_end nor run_after")
    return end


def run_window(dag_run: Any, settings: Settings) -> sync.Window:
    return sync.Window.ending_at(window_end_of(dag_run), settings.lookback_minutes)


def staging_of(dag_run: Any, settings: Settings) -> sync.StagingTables:
    return sync.StagingTables.for_run(settings.staging_schema, dag_run.dag_id, dag_run.run_id)


@contextmanager
def connection(settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    """A connection to the IoT database; permanent SQL errors fail the task at once, without retries."""
    from device_sync import db

    conn = db.connect(settings.postgres_conn_id)
    try:
        yield conn
    except PERMANENT_ERRORS as error:
        raise AirflowFailException(
            f"{type(error).__name__}: {error} (not retried: fix the database or the configuration)"
        ) from error
    finally:
        conn.close()


def _step(name: str, dag_run: Any, **kwargs: Any) -> dict[str, Any]:
    settings = load_settings()
    staging = staging_of(dag_run, settings)
    started = time.monotonic()
    with connection(settings) as conn:
        summary: dict[str, Any] = getattr(sync, name)(conn, settings, staging, **kwargs)
    summary[f"{name}_seconds"] = round(time.monotonic() - started, 3)
    log.info("%s: %s", name, summary)
    return summary


def discover_active_devices(**context: Any) -> dict[str, Any]:
    """Stage the active devices (status IS TRUE) of iot_data.redshift_devices; count skipped device rows."""
    return _step("discover_active_devices", context["dag_run"])


def aggregate_recent_measurements(**context: Any) -> dict[str, Any]:
    """Stage the distinct (device, parameter) pairs active devices reported in the run's window."""
    window = run_window(context["dag_run"], load_settings())
    log.info("Window: [%s, %s)", window.start.isoformat(), window.end.isoformat())
    summary: dict[str, Any] = _step("aggregate_recent_measurements", context["dag_run"], window=window)
    return {**summary, "window_start": window.start.isoformat(), "window_end": window.end.isoformat()}


def resolve_parameter_names(**context: Any) -> dict[str, Any]:
    """Name the observed pairs from the device and parameter tables; unnameable pairs are skipped, counted."""
    return _step("resolve_parameter_names", context["dag_run"])


def compute_delta(**context: Any) -> dict[str, Any]:
    """Stage the inserts, updates and deletes that would bring iot_data.device_parameters up to date."""
    return _step("compute_delta", context["dag_run"])


def apply_changes(**context: Any) -> dict[str, Any]:
    """Apply the delta in one transaction under the writers' lock; unchanged rows are not written."""
    return _step("apply_changes", context["dag_run"])


def run_summary(ti: Any, dag_run: Any) -> dict[str, Any]:
    """Everything the steps reported (from their XComs), plus success, skipped total and duration."""
    step_summaries = {task_id: ti.xcom_pull(task_ids=task_id) or {} for task_id in STEP_TASK_IDS}
    summary: dict[str, Any] = {}
    for step_summary in step_summaries.values():
        summary.update(step_summary)
    summary["success"] = 1 if step_summaries["apply_changes"] else 0
    if step_summaries["resolve_parameter_names"]:
        summary["skipped"] = sync.skipped_total(*step_summaries.values())
    # Time spent in the steps themselves, not in queues between them (comparable across executors).
    summary["duration_seconds"] = round(sum(summary.get(f"{task_id}_seconds", 0.0) for task_id in STEP_TASK_IDS), 3)
    return summary


def publish_metrics(**context: Any) -> dict[str, Any]:
    """Publish the run's CloudWatch metrics; SyncSuccess=0 when a step failed (the run stays failed)."""
    settings = load_settings()
    summary = run_summary(context["ti"], context["dag_run"])
    log.info("Run summary: %s", summary)
    metrics.publish(
        summary, aws_conn_id=settings.aws_conn_id, namespace=settings.cloudwatch_namespace, stage=settings.stage
    )
    return summary


def cleanup_staging(**context: Any) -> None:
    """Drop this run's staging tables, whatever happened before."""
    settings = load_settings()
    with connection(settings) as conn:
        sync.drop_staging(conn, settings, staging_of(context["dag_run"], settings))


def fail_if_sync_failed() -> None:
    """Watcher: runs only when a step or publish_metrics failed, and fails so the DAG run is marked failed."""
    raise AirflowFailException("device_parameter_sync failed: see the failed task's log (SyncSuccess=0 was published)")
