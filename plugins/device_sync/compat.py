"""What the running Airflow offers: the one module that looks at Airflow's version.

device-sync runs on Airflow 3.0.6 and later 3.x (Amazon MWAA offers 3.0.6, 3.2.1 and 3.3.1). The public
``airflow.sdk`` grew between those versions: where a name is not there yet, this module imports it from where
that version keeps it, and the rest of the package imports it from here. Features that an older Airflow does
not have at all are listed in :data:`FEATURES`; what stands in for them keeps the same safety (without human
approval a tripped mass-delete guard fails the run), and :func:`features_markdown` and :func:`log_disabled_features`
say which are off and why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import airflow
import airflow.sdk
import airflow.sdk.exceptions
from packaging.version import Version

log = logging.getLogger(__name__)

AIRFLOW_VERSION = Version(Version(airflow.__version__).base_version)

# Airflow 3.1 moved these into the public SDK; 3.0 keeps them in airflow.exceptions and airflow.timetables.
if hasattr(airflow.sdk.exceptions, "AirflowFailException"):
    from airflow.sdk import BaseHook, CronTriggerTimetable, TriggerRule
    from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException, AirflowSkipException
else:  # Airflow 3.0
    from airflow.exceptions import (  # type: ignore[no-redef,attr-defined]
        AirflowFailException,
        AirflowNotFoundException,
        AirflowSkipException,
    )
    from airflow.hooks.base import BaseHook  # type: ignore[no-redef,attr-defined,unused-ignore]
    from airflow.timetables.trigger import CronTriggerTimetable  # type: ignore[no-redef,assignment]
    from airflow.utils.trigger_rule import TriggerRule  # type: ignore[no-redef]

__all__ = [
    "AIRFLOW_VERSION",
    "DEADLINE_ALERTS",
    "FEATURES",
    "HUMAN_APPROVAL",
    "AirflowFailException",
    "AirflowNotFoundException",
    "AirflowSkipException",
    "BaseHook",
    "CronTriggerTimetable",
    "TriggerRule",
    "dag_runs_read_check",
    "exponential_backoff",
    "features_markdown",
    "log_disabled_features",
    "register_assets_for_a_foreground_run",
]


@dataclass(frozen=True)
class Feature:
    """A part of device-sync that needs a newer Airflow than the oldest one it runs on."""

    name: str
    needs: Version
    without_it: str  # what happens instead, for the operator

    @property
    def available(self) -> bool:
        return self.needs <= AIRFLOW_VERSION


# The task waits for the answer in the `awaiting_input` state (no worker or triggerer slot), new in 3.3.
HUMAN_APPROVAL = Feature(
    "Human approval of a mass delete (approve_mass_delete)",
    Version("3.3.0"),
    "approve_mass_delete asks nobody; a tripped mass-delete guard fails the run at once "
    "(re-run with allow_mass_delete after checking the sources).",
)
# DeadlineAlert with a synchronous callback, run by the scheduler: 3.2.
DEADLINE_ALERTS = Feature(
    "Run deadline alert (DEVICE_SYNC_DEADLINE_MINUTES)",
    Version("3.2.0"),
    "no deadline message; a run that hangs is seen by /device-sync/health and the CloudWatch alarms.",
)
# requires_access_dag(param_dag_id=...) checks the user's access to one named DAG: 3.1.
PER_DAG_ACCESS = Feature(
    "Per-DAG access check on /device-sync/runs, /changes and the status page",
    Version("3.1.0"),
    "those pages require a user who may read DAG runs (of any DAG).",
)
FEATURES = (HUMAN_APPROVAL, DEADLINE_ALERTS, PER_DAG_ACCESS)


def features_markdown() -> str:
    """The feature table of the DAG's doc_md: what this Airflow runs, what is off and what stands in for it."""
    rows = "\n".join(
        f"| {feature.name} | {feature.needs} | " + ("on |" if feature.available else f"**off**: {feature.without_it} |")
        for feature in FEATURES
    )
    return (
        f"\n\n## Features on this Airflow ({AIRFLOW_VERSION})\n\n"
        f"| feature | needs Airflow | here |\n|---|---|---|\n{rows}\n"
    )


def register_assets_for_a_foreground_run(dag: Any) -> None:
    """Airflow 3.0's ``dag.test()`` does not record the DAG's assets, so its tasks refuse their inlets and outlets
    as inactive; record them as the dag processor does (later versions do it themselves)."""
    if Version("3.1.0") <= AIRFLOW_VERSION:
        return
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.models.dag import DAG as SchedulerDAG
    from airflow.serialization.serialized_objects import SerializedDAG  # type: ignore[attr-defined,unused-ignore]

    DagBundlesManager().sync_bundles_to_db()  # type: ignore[no-untyped-call,unused-ignore]
    serialized = SerializedDAG.deserialize_dag(SerializedDAG.serialize_dag(dag))  # type: ignore[attr-defined,unused-ignore]
    # Airflow 3.0's own scheduler-side DAG: what its dag processor calls.
    SchedulerDAG.bulk_write_to_db("dags-folder", None, [serialized])  # type: ignore[call-arg,attr-defined,unused-ignore]  # noqa: AIR311


def exponential_backoff() -> float | bool:
    """``retry_exponential_backoff`` for delays that double: a multiplier from Airflow 3.2 on, a flag in 3.0."""
    return 2.0 if Version("3.2.0") <= AIRFLOW_VERSION else True


@cache
def log_disabled_features() -> None:
    """Say once per process, in the log of the process that parses the DAG, which features are off and why."""
    for feature in FEATURES:
        if not feature.available:
            log.warning(
                "device-sync: %s is off on Airflow %s (needs %s): %s",
                feature.name,
                AIRFLOW_VERSION,
                feature.needs,
                feature.without_it,
            )


def dag_runs_read_check(dag_id: str) -> Callable[..., None]:
    """Airflow's own FastAPI dependency: a logged-in user who may read ``dag_id``'s runs (any DAG's on 3.0)."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag

    kwargs: dict[str, Any] = {"param_dag_id": dag_id} if PER_DAG_ACCESS.available else {}
    return requires_access_dag("GET", DagAccessEntity.RUN, **kwargs)
