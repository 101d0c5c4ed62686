"""A run's summary for its metrics, from what the steps returned (their XComs): pure, no I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from device_sync.guards import GUARDS
from device_sync.skips import skipped_total

STEP_TASK_IDS = (
    "discover_active_devices",
    "aggregate_recent_measurements",
    "resolve_parameter_names",
    "compute_delta",
    "apply_changes",
)
AGGREGATE = "aggregate_recent_measurements"  # the mapped step: one task instance per shard


def run_summary(
    steps: Mapping[str, Mapping[str, Any]], shards: Sequence[Mapping[str, Any]], recorded_guard: str | None
) -> dict[str, Any]:
    """Everything the steps reported, plus success, the failed task, guards, skipped total and duration.

    ``steps`` maps each single step's task id to its summary (empty when it did not finish), ``shards`` are
    the finished aggregation shards' summaries, ``recorded_guard`` the guard the run history names (the
    guard that failed apply_changes leaves no summary).
    """
    summary: dict[str, Any] = {}
    for step in steps.values():
        summary.update(step)
    if shards:
        summary["method"] = shards[0].get("method")
        # The shards run side by side: the slowest one is the aggregation's time.
        summary[f"{AGGREGATE}_seconds"] = max(shard.get(f"{AGGREGATE}_seconds", 0.0) for shard in shards)
    applied = steps.get("apply_changes") or {}
    summary["success"] = 1 if applied else 0
    if not applied:  # the first step without a summary is the one that failed
        aggregated = bool(shards) and len(shards) == shards[0].get("shards", len(shards))
        summary["failed_task"] = next(
            task_id for task_id in STEP_TASK_IDS if not (aggregated if task_id == AGGREGATE else steps.get(task_id))
        )
    guard = applied.get("guard") or recorded_guard
    for name in GUARDS:
        summary[f"guard_{name}"] = 1 if guard == name else 0
    if steps.get("resolve_parameter_names"):
        summary["skipped"] = skipped_total(*steps.values())
    # Time spent in the steps themselves, not in queues between them (comparable across executors).
    summary["duration_seconds"] = round(sum(summary.get(f"{task_id}_seconds", 0.0) for task_id in STEP_TASK_IDS), 3)
    return summary
