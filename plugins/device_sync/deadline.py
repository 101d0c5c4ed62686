"""The run deadline: Airflow's DeadlineAlert on the run's queued time (DEVICE_SYNC_DEADLINE_MINUTES)."""

from __future__ import annotations

from typing import Any

from device_sync import compat, notifications
from device_sync.config import Settings


def dag_kwargs(settings: Settings) -> dict[str, Any]:
    """The DAG's ``deadline`` argument: a run not finished ``settings.deadline`` after it was queued sends the
    deadline SNS message. Nothing on an Airflow without deadline alerts (:data:`device_sync.compat.DEADLINE_ALERTS`)."""
    if not compat.DEADLINE_ALERTS.available:
        return {}
    from airflow.sdk.definitions.callback import SyncCallback
    from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

    alert = DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=settings.deadline,
        callback=SyncCallback(notifications.run_missed_deadline),
    )
    return {"deadline": alert}
