"""The run deadline: Airflow's DeadlineAlert on the run's queued time (DEVICE_SYNC_DEADLINE_MINUTES)."""

from __future__ import annotations

from airflow.sdk.definitions.callback import SyncCallback
from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

from device_sync import notifications
from device_sync.config import Settings


def alert(settings: Settings) -> DeadlineAlert:
    """A run not finished ``settings.deadline`` after it was queued sends the deadline SNS message."""
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=settings.deadline,
        callback=SyncCallback(notifications.run_missed_deadline),
    )
