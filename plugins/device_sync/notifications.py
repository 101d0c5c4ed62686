"""Failure and recovery messages through Amazon SNS (``DEVICE_SYNC_ALERT_SNS_TOPIC_ARN``; unset: off).

The DAG's own ``on_failure_callback`` and ``on_success_callback`` (one call per run, never per task attempt;
Airflow runs them in the dag-processor under the scheduler, in-process under ``airflow dags test``) call
:func:`run_failed` and :func:`run_succeeded`. A failed run publishes one message naming the stage, the run,
its window, the failed task and its error's first line, the guard if one tripped, and links to the run and
to ``/device-sync/changes``; the first success after a failure publishes a recovery message. What failed is
read from the run history (the failing step recorded ``<task_id>: <error>`` and the guard there), so the
message is the same under both. A callback never raises: a notification that cannot be sent is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from device_sync.config import Settings, load_settings

log = logging.getLogger(__name__)

DAG_ID = "device_parameter_sync"
SUBJECT_LIMIT = 100  # SNS refuses longer subjects


def run_failed(context: Mapping[str, Any]) -> None:
    """DAG ``on_failure_callback``: one failure message for the run."""
    _notify(context, failed=True)


def run_succeeded(context: Mapping[str, Any]) -> None:
    """DAG ``on_success_callback``: a recovery message when the run before it had failed."""
    _notify(context, failed=False)


def run_missed_deadline(context: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
    """DeadlineAlert callback: the run has not finished DEVICE_SYNC_DEADLINE_MINUTES after it was queued."""
    try:
        settings = load_settings()
        if not settings.alert_sns_topic_arn:
            return
        # Airflow passes the run as its REST representation (a dict with dag_run_id).
        dag_run: Mapping[str, Any] = (context or {}).get("dag_run") or {}
        run_id = str(dag_run.get("dag_run_id") or "unknown")
        minutes = int(settings.deadline.total_seconds() // 60)
        run_link, _ = _links(run_id)
        message = "\n".join(
            [
                f"device-sync ({settings.stage}): run {run_id} of {DAG_ID} has not finished {minutes} minutes after "
                "it was queued (DEVICE_SYNC_DEADLINE_MINUTES).",
                "It may be waiting for the writers' lock (another run or a backfill applying), a pool slot, a "
                "worker, or a slow statement: open the run and look at its running task.",
                f"Run: {run_link}",
            ]
        )
        publish(settings, f"device-sync {settings.stage}: run missed its deadline"[:SUBJECT_LIMIT], message)
    except Exception:
        log.exception("device-sync: could not send the deadline notification")


def _notify(context: Mapping[str, Any], *, failed: bool) -> None:
    try:
        settings = load_settings()
        if not settings.alert_sns_topic_arn:
            return
        run_id = str(context.get("run_id") or context["dag_run"].run_id)
        state = run_state(settings, run_id)
        if not failed and state.get("previous_status") != "failed":
            return
        subject, message = (failure_message if failed else recovery_message)(settings, run_id, state)
        publish(settings, subject, message)
    except Exception:  # the run's outcome stands; a lost notification is logged, never raised
        log.exception("device-sync: could not send the %s notification", "failure" if failed else "recovery")


def run_state(settings: Settings, run_id: str) -> dict[str, Any]:
    """The run's history row and the previous run's status (empty when the database cannot tell)."""
    from device_sync import db, history

    try:
        with db.connect(settings.postgres_conn_id, connect_timeout=10) as conn, db.transaction(conn, 30) as cur:
            sql = db.compose(f"{db.NOTIFICATIONS_SQL}run_state.sql", history.tables(settings.staging_schema))
            row = db.fetch_one_dict(cur, sql, {"run_id": run_id}) if _exists(cur, settings) else None
            return dict(row) if row else {}
    except Exception as error:  # the database may be what failed: say what we know
        log.warning("device-sync: run history unavailable for the notification: %s", error)
        return {}


def _exists(cur: Any, settings: Settings) -> bool:
    row = cur.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{settings.staging_schema}.run_history",)).fetchone()
    return bool(row and row[0])


def link(path: str) -> str:
    """An absolute link into the Airflow UI or the plugin (``[api] base_url``) for messages and questions."""
    from airflow.configuration import conf

    return conf.get("api", "base_url", fallback="http://localhost:8080").rstrip("/") + path


def _links(run_id: str) -> tuple[str, str]:
    return link(f"/dags/{DAG_ID}/runs/{quote(run_id, safe='')}"), link(f"/device-sync/changes?run_id={quote(run_id)}")


def _window(state: Mapping[str, Any]) -> str:
    start, end = state.get("window_start"), state.get("window_end")
    return f"[{start.isoformat()}, {end.isoformat()})" if start and end else "unknown (no run history)"


def failure_message(settings: Settings, run_id: str, state: Mapping[str, Any]) -> tuple[str, str]:
    error = str(state.get("error") or "")
    task, _, detail = error.partition(": ")
    if not detail:
        task, detail = "unknown", error or "no error recorded in the run history"
    first_line = detail.strip().splitlines()[0] if detail.strip() else detail
    run_link, changes_link = _links(run_id)
    lines = [
        f"device-sync ({settings.stage}): run {run_id} of {DAG_ID} FAILED.",
        f"Window: {_window(state)}",
        f"Failed task: {task}",
        f"Error: {first_line}",
        *([f"Guard: {state['guard']} (see the runbook's Safety guards)"] if state.get("guard") else []),
        f"Run: {run_link}",
        f"Changes: {changes_link}",
    ]
    return f"device-sync {settings.stage}: run failed in {task}"[:SUBJECT_LIMIT], "\n".join(lines)


def recovery_message(settings: Settings, run_id: str, state: Mapping[str, Any]) -> tuple[str, str]:
    run_link, changes_link = _links(run_id)
    lines = [
        f"device-sync ({settings.stage}): run {run_id} of {DAG_ID} succeeded after a failed run: RECOVERED.",
        f"Window: {_window(state)}",
        f"Run: {run_link}",
        f"Changes: {changes_link}",
    ]
    return f"device-sync {settings.stage}: recovered"[:SUBJECT_LIMIT], "\n".join(lines)


def publish(settings: Settings, subject: str, message: str) -> None:
    """One SNS message through the AWS connection, bounded like every AWS call of the package."""
    from device_sync.metrics import aws_client

    client = aws_client("sns", settings.aws_conn_id, timeout_seconds=settings.cloudwatch_timeout_seconds)
    client.publish(TopicArn=settings.alert_sns_topic_arn, Subject=subject, Message=message)
    log.info("device-sync: sent %r to %s", subject, settings.alert_sns_topic_arn)
