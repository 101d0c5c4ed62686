"""The DAG's class: Airflow's DAG whose ``test()`` leaves out what only a scheduler can drive.

``dag.test()`` and ``airflow dags test`` run in the foreground, without a scheduler:

- Airflow 3.3.2's ``dag.test()`` cannot finish a run of a DAG that has a DeadlineAlert: when the run succeeds
  it looks the alerts up by id in an in-memory copy of the DAG that holds the alerts themselves, not their
  ids, and fails (``StatementError: 'dict' object has no attribute 'hex'``). A foreground run needs no
  deadline, so it runs without it; the scheduler's runs keep it (the dag processor stores the alerts).
- Airflow 3.0's ``dag.test()`` does not record the DAG's assets, and the tasks with inlets or outlets then
  fail; they are recorded first (:func:`device_sync.compat.register_assets_for_a_foreground_run`).
- A human-in-the-loop question's timeout is enforced by the scheduler only: under ``dag.test()`` a question
  nobody answers would wait forever. ``approve_mass_delete`` does not ask in a foreground run, so a tripped
  mass-delete guard fails it as it always did.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG

from device_sync import compat


class DeviceSyncDAG(DAG):
    """A DAG whose ``test()`` runs without its deadline and without human-in-the-loop questions."""

    def test(self, *args: Any, **kwargs: Any) -> Any:
        deadline = getattr(self, "deadline", None)  # Airflow 3.0 has no deadlines
        if deadline is not None:
            self.deadline = None
        self.running_in_foreground = True
        compat.register_assets_for_a_foreground_run(self)
        try:
            return super().test(*args, **kwargs)
        finally:
            if deadline is not None:
                self.deadline = deadline
            self.running_in_foreground = False


def running_in_foreground(dag: Any) -> bool:
    """Whether ``dag`` (a task's ``context["dag"]``) is being run by ``dag.test()`` in this process."""
    return bool(getattr(dag, "running_in_foreground", False))
