"""Runs of ``device_parameter_sync`` dated in the future: never allowed to hold the DAG.

Airflow's scheduler starts such a run (it takes one of the DAG's ``max_active_runs`` slots) and then waits
for its logical date before it schedules any task: a run dated 2031 would block every later run until 2031,
and it cannot be marked failed through the REST API while its teardown (``cleanup_staging``) is pending.
The REST trigger guard (:mod:`device_sync.trigger_guard`) refuses most of them before they exist; this module
handles the rest, however they were made (``airflow dags trigger --logical-date``, a backfill, an old run):

- :class:`FailFutureRuns`, a listener the plugin installs in the scheduler, fails a run of the DAG at the
  moment the scheduler starts it when its logical date lies more than :func:`horizon` ahead, as the scheduler
  itself ends a run past its ``dagrun_timeout`` (run failed, its unstarted tasks skipped), logs why and what
  to do, and sends one SNS alert (``DEVICE_SYNC_ALERT_SNS_TOPIC_ARN``). The slot is free for the next run at
  the scheduler's next loop; nobody has to act for the sync to go on.
- :func:`listed` finds every such run in the metadata database (any state): ``/device-sync/health`` is
  unhealthy, naming the run and :func:`what_to_do`, until the run is deleted (a failed run at a future date
  would still take the date of a scheduled run, so it is deleted, not kept).
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.listeners import hookimpl

if TYPE_CHECKING:
    from device_sync.config import Settings

log = logging.getLogger(__name__)

DAG_ID = "device_parameter_sync"
# The longest a run may wait for its own logical date while holding a run slot.
HOLD_LIMIT = timedelta(minutes=5)
LISTED_LIMIT = 5


def horizon(settings: Settings | None) -> timedelta:
    """How far ahead a logical date may lie: DEVICE_SYNC_MAX_CLOCK_SKEW_SECONDS, at most :data:`HOLD_LIMIT`
    (the scheduler holds such a run until its date, so at most that long)."""
    if settings is None:
        return HOLD_LIMIT
    return min(timedelta(seconds=settings.max_clock_skew_seconds), HOLD_LIMIT)


def is_future(logical_date: datetime | None, now: datetime, settings: Settings | None) -> bool:
    return logical_date is not None and logical_date > now + horizon(settings)


def what_to_do(run_id: str) -> str:
    """The operator's action for a future-dated run, through the REST API or the UI."""
    return (
        f"Delete the run: DELETE /api/v2/dags/{DAG_ID}/dagRuns/{run_id} (in the UI: the run's page, Delete). "
        f"A run not yet failed is failed by device-sync when the scheduler starts it; one still running from "
        f"a scheduler without the plugin: see the runbook, 'A run with a future logical date'. Trigger again "
        f"with a past or current logical date, or none."
    )


def _settings() -> Settings | None:
    from device_sync.config import load_settings

    try:
        return load_settings()
    except Exception:  # an invalid configuration is reported by the DAG and /health; the rule still holds
        log.exception("device-sync: invalid configuration; future runs are judged with the %s limit", HOLD_LIMIT)
        return None


class FailFutureRuns:
    """Scheduler listener: fails a run of the DAG dated more than :func:`horizon` ahead when it starts."""

    @hookimpl
    def on_dag_run_running(self, dag_run: Any, msg: str) -> None:
        if dag_run.dag_id != DAG_ID:
            return
        settings = _settings()
        if not is_future(dag_run.logical_date, datetime.now(UTC), settings):
            return
        fail(dag_run)
        log.error(
            "device-sync: run %s of %s has the future logical date %s: it would hold the DAG until then, so it "
            "was failed. %s",
            dag_run.run_id,
            DAG_ID,
            dag_run.logical_date.isoformat(),
            what_to_do(dag_run.run_id),
        )
        if settings is not None and settings.alert_sns_topic_arn:
            # Never on the scheduler's loop: the call is bounded, but the loop must not wait for AWS at all.
            threading.Thread(target=alert, args=(settings, dag_run.run_id, dag_run.logical_date), daemon=True).start()


def fail(dag_run: Any) -> None:
    """Fail ``dag_run`` and skip its unstarted tasks in the scheduler's session (committed with its loop)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.state import DagRunState, TaskInstanceState
    from sqlalchemy import update
    from sqlalchemy.orm import object_session

    dag_run.set_state(DagRunState.FAILED)
    session = object_session(dag_run)
    if session is None:  # the scheduler passes its attached run; anything else is a bug, not a state to guess
        raise RuntimeError(f"run {dag_run.run_id} is not attached to a session")
    session.execute(
        update(TaskInstance)
        .where(
            TaskInstance.dag_id == dag_run.dag_id,
            TaskInstance.run_id == dag_run.run_id,
            TaskInstance.state.is_(None),
        )
        .values(state=TaskInstanceState.SKIPPED)
        .execution_options(synchronize_session=False)
    )


def alert(settings: Settings, run_id: str, logical_date: datetime) -> None:
    """The one SNS message about a future-dated run; logged, never raised, when it cannot be sent."""
    from device_sync import notifications

    try:
        subject = f"device-sync {settings.stage}: run with a future logical date failed"
        message = "\n".join(
            [
                f"device-sync ({settings.stage}): run {run_id} of {DAG_ID} has the future logical date "
                f"{logical_date.isoformat()}. Airflow would hold every later run behind it until then, so "
                "device-sync failed it; the next runs go ahead.",
                what_to_do(run_id),
                "Run: " + notifications.link(f"/dags/{DAG_ID}/runs/{quote(run_id, safe='')}"),
            ]
        )
        notifications.publish(settings, subject[: notifications.SUBJECT_LIMIT], message)
    except Exception:
        log.exception("device-sync: could not send the future-run alert for %s", run_id)


def listed(settings: Settings | None, limit: int = LISTED_LIMIT) -> list[dict[str, Any]]:
    """The DAG's runs dated beyond :func:`horizon` (any state), earliest first, from the metadata database."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    latest = datetime.now(UTC) + horizon(settings)
    with create_session() as session:
        rows = session.execute(
            select(DagRun.run_id, DagRun.logical_date, DagRun.state)
            .where(DagRun.dag_id == DAG_ID, DagRun.logical_date > latest)
            .order_by(DagRun.logical_date)
            .limit(limit)
        ).all()
    return [
        {"run_id": run_id, "logical_date": date.isoformat(), "state": getattr(state, "value", state)}
        for run_id, date, state in rows
    ]
