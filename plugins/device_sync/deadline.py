"""The run deadline: Airflow's DeadlineAlert on the run's queued time, and the DAG class that carries it.

Airflow 3.3.2's ``dag.test()`` (and so ``airflow dags test``) cannot finish a run of a DAG that has a
DeadlineAlert: when the run succeeds it looks the alerts up by id in an in-memory copy of the DAG that holds
the alerts themselves, not their ids, and fails with ``StatementError: 'dict' object has no attribute 'hex'``.
A test run is in the foreground and needs no deadline, so ``DeviceSyncDAG.test`` runs without it; the
scheduler's runs keep it (the dag processor stores the alerts and their ids).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, DeadlineAlert, DeadlineReference, SyncCallback

from device_sync import notifications
from device_sync.config import Settings


def alert(settings: Settings) -> DeadlineAlert:
    """A run not finished ``settings.deadline`` after it was queued sends the deadline SNS message."""
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=settings.deadline,
        callback=SyncCallback(notifications.run_missed_deadline),
    )


class DeviceSyncDAG(DAG):
    """A DAG whose ``test()`` runs without its deadline (see the module's docstring)."""

    def test(self, *args: Any, **kwargs: Any) -> Any:
        deadline, self.deadline = self.deadline, None
        try:
            return super().test(*args, **kwargs)
        finally:
            self.deadline = deadline
