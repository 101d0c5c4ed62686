"""The run's CloudWatch metric data (``device_sync.metrics.metric_data``) from its summary, without AWS."""

from __future__ import annotations

from typing import Any

import pytest

from device_sync.metrics import METRICS, MetricDatum, metric_data

FULL_SUMMARY: dict[str, Any] = {
    "active_devices": 12,
    "observed_pairs": 340,
    "inserted": 3,
    "deleted": 2,
    "updated": 1,
    "skipped": 7,
    "duration_seconds": 4.25,
    "success": 1,
    "guard_mass_delete": 0,
    "guard_stale_measurements": 0,
    "guard_older_window": 1,
}


def by_name(summary: dict[str, Any]) -> dict[str, MetricDatum]:
    return {datum.name: datum for datum in metric_data(summary)}


def test_every_metric_of_a_full_summary_with_its_value_and_unit() -> None:
    assert by_name(FULL_SUMMARY) == {
        "ActiveDevices": MetricDatum("ActiveDevices", 12.0, "Count"),
        "ObservedPairs": MetricDatum("ObservedPairs", 340.0, "Count"),
        "RowsInserted": MetricDatum("RowsInserted", 3.0, "Count"),
        "RowsDeleted": MetricDatum("RowsDeleted", 2.0, "Count"),
        "RowsUpdated": MetricDatum("RowsUpdated", 1.0, "Count"),
        "RowsSkipped": MetricDatum("RowsSkipped", 7.0, "Count"),
        "SyncDurationSeconds": MetricDatum("SyncDurationSeconds", 4.25, "Seconds"),
        "SyncSuccess": MetricDatum("SyncSuccess", 1.0, "None"),
        "MassDeleteBlocked": MetricDatum("MassDeleteBlocked", 0.0, "Count"),
        "StaleMeasurementsBlocked": MetricDatum("StaleMeasurementsBlocked", 0.0, "Count"),
        "OlderWindowNotApplied": MetricDatum("OlderWindowNotApplied", 1.0, "Count"),
    }


def test_values_are_floats() -> None:
    assert all(isinstance(datum.value, float) for datum in metric_data(FULL_SUMMARY))


@pytest.mark.parametrize(("key", "name"), [("inserted", "RowsInserted"), ("observed_pairs", "ObservedPairs")])
def test_a_count_the_run_never_reached_is_left_out_not_sent_as_zero(key: str, name: str) -> None:
    for summary in ({k: v for k, v in FULL_SUMMARY.items() if k != key}, {**FULL_SUMMARY, key: None}):
        data = by_name(summary)
        assert name not in data
        assert len(data) == len(METRICS) - 1


def test_a_zero_count_is_sent() -> None:
    assert by_name({**FULL_SUMMARY, "inserted": 0})["RowsInserted"].value == 0.0


def test_a_failed_run_still_reports_its_failure_and_duration() -> None:
    """The summary of a run that failed in its first step: only what it knows."""
    summary = {"success": 0, "duration_seconds": 0.0, "guard_mass_delete": 0, "guard_stale_measurements": 0,
               "guard_older_window": 0, "failed_task": "discover_active_devices"}  # fmt: skip
    data = by_name(summary)
    assert set(data) == {"SyncSuccess", "SyncDurationSeconds", "MassDeleteBlocked", "StaleMeasurementsBlocked",
                         "OlderWindowNotApplied"}  # fmt: skip
    assert data["SyncSuccess"].value == 0.0


def test_keys_that_are_no_metric_are_ignored() -> None:
    assert metric_data({"method": "skip_scan", "failed_task": "compute_delta", "inserts": 4}) == []
