"""A run's summary for its metrics (``device_sync.summary.run_summary``) from what its steps returned: success,
the failed task (the mapped aggregation counts only when every shard finished), the guard flags, the skipped
total and the duration of the steps themselves. Pure: no database, no Airflow run."""

from __future__ import annotations

from typing import Any

import pytest

from device_sync.guards import GUARDS, MASS_DELETE, OLDER_WINDOW, STALE_MEASUREMENTS
from device_sync.summary import AGGREGATE, STEP_TASK_IDS, run_summary


def discover(seconds: float = 0.5) -> dict[str, Any]:
    return {
        "active_devices": 4,
        "device_name_missing": 1,
        "device_id_null": 2,
        "device_id_empty": 0,
        "device_status_null": 1,
        "device_duplicate_rows": 3,
        "discover_active_devices_seconds": seconds,
    }


def shard(index: int, of: int, seconds: float) -> dict[str, Any]:
    return {"shard": index, "shards": of, "method": "skip_scan", "shard_pairs": 10, f"{AGGREGATE}_seconds": seconds}


def resolve(seconds: float = 0.25) -> dict[str, Any]:
    return {
        "observed_pairs": 30,
        "measurement_id_null": 5,
        "desired_pairs": 20,
        "id_too_long": 1,
        "device_name_missing_pairs": 2,
        "parameter_unknown": 3,
        "parameter_name_missing": 4,
        "parameter_id_null": 6,
        "parameter_duplicate_rows": 7,
        "resolve_parameter_names_seconds": seconds,
    }


def delta(seconds: float = 0.125) -> dict[str, Any]:
    return {"inserts": 3, "updates": 1, "deletes": 2, "compute_delta_seconds": seconds}


def apply(guard: str | None = None, seconds: float = 1.0) -> dict[str, Any]:
    applied = guard is None
    counts = (3, 1, 2) if applied else (0, 0, 0)
    return {
        "inserted": counts[0],
        "updated": counts[1],
        "deleted": counts[2],
        "applied": applied,
        "guard": guard,
        "apply_changes_seconds": seconds,
    }


# Device rows: 2 + 0 + 1 + 3; measurement rows: 5; pairs: 1 + 2 + 3 + 4; parameter rows: 6 + 7.
SKIPPED = 6 + 5 + 10 + 13


def steps(**done: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every single step's summary, empty for the steps that did not finish (as publish_metrics pulls them)."""
    return {task_id: done.get(task_id, {}) for task_id in STEP_TASK_IDS if task_id != AGGREGATE}


def all_steps(**overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    done = {"discover_active_devices": discover(), "resolve_parameter_names": resolve(), "compute_delta": delta(),
            "apply_changes": apply(), **overrides}  # fmt: skip
    return steps(**done)


SHARDS = [shard(0, 3, 0.5), shard(1, 3, 2.0), shard(2, 3, 1.5)]


def test_a_successful_run() -> None:
    summary = run_summary(all_steps(), SHARDS, None)
    assert summary["success"] == 1
    assert "failed_task" not in summary
    assert (summary["inserted"], summary["updated"], summary["deleted"]) == (3, 1, 2)
    assert (summary["active_devices"], summary["observed_pairs"]) == (4, 30)
    assert summary["method"] == "skip_scan"
    assert {f"guard_{name}": summary[f"guard_{name}"] for name in GUARDS} == {f"guard_{name}": 0 for name in GUARDS}
    assert summary["skipped"] == SKIPPED


def test_the_duration_is_the_sum_of_the_steps_with_the_slowest_shard() -> None:
    """The shards run side by side: the aggregation took as long as its slowest shard."""
    summary = run_summary(all_steps(), SHARDS, None)
    assert summary[f"{AGGREGATE}_seconds"] == 2.0
    assert summary["duration_seconds"] == 0.5 + 2.0 + 0.25 + 0.125 + 1.0


def test_the_duration_leaves_out_time_that_is_no_steps() -> None:
    with_other_times = all_steps(apply_changes={**apply(), "publish_metrics_seconds": 100.0, "wait_seconds": 9.0})
    assert run_summary(with_other_times, SHARDS, None)["duration_seconds"] == 3.875


def test_the_duration_is_rounded_to_milliseconds() -> None:
    summary = run_summary(all_steps(compute_delta=delta(seconds=0.1), apply_changes=apply(seconds=0.2)), SHARDS, None)
    assert summary["duration_seconds"] == 3.05  # not 3.0500000000000003


def test_a_run_that_failed_in_its_first_step() -> None:
    summary = run_summary(steps(), [], None)
    assert (summary["success"], summary["failed_task"]) == (0, "discover_active_devices")
    assert summary["duration_seconds"] == 0
    assert "skipped" not in summary  # not known: resolve_parameter_names never ran
    assert "method" not in summary


@pytest.mark.parametrize("finished", [0, 1, 2])
def test_a_partially_failed_mapped_aggregation_is_the_failed_task(finished: int) -> None:
    summary = run_summary(steps(discover_active_devices=discover()), SHARDS[:finished], None)
    assert (summary["success"], summary["failed_task"]) == (0, AGGREGATE)


def test_a_partially_failed_aggregation_still_counts_its_slowest_finished_shard() -> None:
    summary = run_summary(steps(discover_active_devices=discover()), [SHARDS[0], SHARDS[2]], None)
    assert summary["duration_seconds"] == 0.5 + 1.5


@pytest.mark.parametrize(
    ("done", "failed"),
    [
        ({"discover_active_devices": discover()}, "resolve_parameter_names"),
        ({"discover_active_devices": discover(), "resolve_parameter_names": resolve()}, "compute_delta"),
        ({"discover_active_devices": discover(), "resolve_parameter_names": resolve(), "compute_delta": delta()},
         "apply_changes"),
    ],
)  # fmt: skip
def test_the_first_step_without_a_summary_after_every_shard_finished_is_the_failed_task(
    done: dict[str, dict[str, Any]], failed: str
) -> None:
    summary = run_summary(steps(**done), SHARDS, None)
    assert (summary["success"], summary["failed_task"]) == (0, failed)


def test_a_single_unmapped_shard_counts_as_the_whole_aggregation() -> None:
    summary = run_summary(steps(discover_active_devices=discover()), [shard(0, 1, 0.5)], None)
    assert summary["failed_task"] == "resolve_parameter_names"


def test_skipped_counts_only_skip_reasons_once_names_were_resolved() -> None:
    summary = run_summary(steps(discover_active_devices=discover(), resolve_parameter_names=resolve()), SHARDS, None)
    assert summary["skipped"] == SKIPPED  # not desired_pairs, observed_pairs or device_name_missing (devices)


@pytest.mark.parametrize("guard", [MASS_DELETE, STALE_MEASUREMENTS])
def test_a_guard_that_failed_apply_changes_comes_from_the_run_history(guard: str) -> None:
    done = {"discover_active_devices": discover(), "resolve_parameter_names": resolve(), "compute_delta": delta()}
    summary = run_summary(steps(**done), SHARDS, guard)
    assert (summary["success"], summary["failed_task"]) == (0, "apply_changes")
    assert {name: summary[f"guard_{name}"] for name in GUARDS} == {name: int(name == guard) for name in GUARDS}


def test_an_older_window_is_a_success_that_flags_its_guard() -> None:
    summary = run_summary(all_steps(apply_changes=apply(guard=OLDER_WINDOW)), SHARDS, None)
    assert summary["success"] == 1
    assert {name: summary[f"guard_{name}"] for name in GUARDS} == {name: int(name == OLDER_WINDOW) for name in GUARDS}


def test_the_guard_of_the_apply_summary_wins_over_the_recorded_one() -> None:
    summary = run_summary(all_steps(apply_changes=apply(guard=OLDER_WINDOW)), SHARDS, MASS_DELETE)
    assert (summary["guard_older_window"], summary["guard_mass_delete"]) == (1, 0)


def test_an_unknown_recorded_guard_flags_nothing() -> None:
    summary = run_summary(steps(), [], "DROP TABLE")
    assert [summary[f"guard_{name}"] for name in GUARDS] == [0, 0, 0]
