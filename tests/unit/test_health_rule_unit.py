"""The /health rule (``api.health_answer``) and its reason class (``api.failure_reason``): pure functions of
health.sql's row and the settings, tested with fixed datetimes. The endpoint against the database's now() is
tested in tests/integration/test_api_integration.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from device_sync import api
from device_sync.config import Settings
from device_sync.guards import GUARDS
from device_sync.summary import STEP_TASK_IDS

# --- staleness by missed fire times ----------------------------------------------------------------------

FRIDAY_17 = datetime(2026, 11, 27, 17, 0, 40, tzinfo=UTC)  # finished just after Friday's last fire time
MONDAY = datetime(2026, 11, 30, tzinfo=UTC)


def state(now: datetime, applied_at: datetime | None, **fields: Any) -> dict[str, Any]:
    """A health.sql row: the last finished run is the last applied sync unless ``fields`` say otherwise."""
    return {
        "now": now,
        "last_run_status": "success" if applied_at else None,
        "last_run_finished_at": applied_at,
        "last_applied_at": applied_at,
        "last_applied_window_start": applied_at - timedelta(days=1) if applied_at else None,
        "last_applied_window_end": applied_at - timedelta(seconds=40) if applied_at else None,
        "older_window_runs": 0,
        **fields,
    }


OFFICE_HOURS = Settings(schedule="0 9-17 * * 1-5")


@pytest.mark.parametrize(
    ("now", "missed", "status"),
    [
        (FRIDAY_17 + timedelta(hours=2), 0, 200),
        (MONDAY - timedelta(hours=4), 0, 200),  # Sunday night: ~2 days old, but no fire time was missed
        (MONDAY + timedelta(hours=9, minutes=5), 1, 200),
        (MONDAY + timedelta(hours=10, minutes=5), 2, 200),
        (MONDAY + timedelta(hours=11), 3, 503),  # 09:00, 10:00, 11:00 missed
    ],
)
def test_health_rule_office_hours_schedule_skips_the_weekend(now: datetime, missed: int, status: int) -> None:
    code, body = api.health_answer(state(now, FRIDAY_17), OFFICE_HOURS)
    assert (code, body["missed_runs"], body["missed_runs_limit"]) == (status, missed, 3)
    assert body["status"] == ("healthy" if status == 200 else "unhealthy")
    if status == 503:
        assert body["reason"] == "stale: 3 scheduled runs since the last applied sync"
        assert "max_age_seconds" not in body


def test_health_rule_a_missed_monday_nine_is_the_third_missed_fire_time() -> None:
    friday_15 = datetime(2026, 11, 27, 15, 0, 30, tzinfo=UTC)  # Friday's 16:00 and 17:00 were missed too
    code, body = api.health_answer(state(MONDAY + timedelta(hours=8, minutes=59), friday_15), OFFICE_HOURS)
    assert (code, body["missed_runs"]) == (200, 2)
    code, body = api.health_answer(state(MONDAY + timedelta(hours=9, minutes=1), friday_15), OFFICE_HOURS)
    assert (code, body["missed_runs"]) == (503, 3)


def test_health_rule_counts_to_the_configured_missed_runs() -> None:
    applied = datetime(2026, 12, 1, 10, 0, 30, tzinfo=UTC)
    settings = Settings(schedule="*/5 * * * *", health_missed_runs=6)
    code, body = api.health_answer(state(applied + timedelta(minutes=29), applied), settings)
    assert (code, body["missed_runs"], body["missed_runs_limit"]) == (200, 5, 6)
    code, body = api.health_answer(state(applied + timedelta(hours=5), applied), settings)
    assert (code, body["missed_runs"]) == (503, 6)  # counted up to the limit only


def test_health_rule_max_age_minutes_replaces_the_fire_times() -> None:
    applied = datetime(2026, 11, 27, 17, 0, 40, tzinfo=UTC)
    settings = Settings(schedule="0 9-17 * * 1-5", health_max_age_minutes=90)
    code, body = api.health_answer(state(applied + timedelta(minutes=89), applied), settings)
    assert (code, body["max_age_seconds"], body["age_seconds"]) == (200, 5400.0, 89 * 60.0)
    assert "missed_runs" not in body
    code, body = api.health_answer(state(applied + timedelta(minutes=91), applied), settings)
    assert (code, body["reason"]) == (503, "stale: the last applied sync is older than 90 minutes")


def test_health_rule_older_window_runs_that_apply_nothing_turn_unhealthy_once_stale() -> None:
    applied = datetime(2026, 12, 1, 10, 0, 30, tzinfo=UTC)
    hourly = Settings(schedule="0 * * * *")
    later = {"last_run_status": "success", "last_run_finished_at": applied + timedelta(hours=2, minutes=59)}
    fresh = state(applied + timedelta(minutes=30), applied, older_window_runs=1, **later)
    assert api.health_answer(fresh, hourly)[0] == 200  # a backfill of old windows while the live one is fresh
    code, body = api.health_answer(state(applied + timedelta(hours=3), applied, older_window_runs=3, **later), hourly)
    assert (code, body["missed_runs"]) == (503, 3)
    assert body["reason"] == "not applying: the last 3 finished runs were older windows (guard older_window)"


def test_health_rule_without_any_applied_sync() -> None:
    now = datetime(2026, 12, 1, 10, tzinfo=UTC)
    code, body = api.health_answer(state(now, None), Settings())
    assert (code, body["reason"]) == (503, "no sync has run yet")
    dry_run_only = state(now, None, last_run_status="success", last_run_finished_at=now)
    code, body = api.health_answer(dry_run_only, Settings())
    assert (code, body["reason"]) == (503, "no applied sync yet")
    assert "missed_runs" not in body


# --- the reason class of a failed run -------------------------------------------------------------------


@pytest.mark.parametrize("task_id", [*STEP_TASK_IDS, "publish_metrics"])
def test_a_failed_run_names_its_task_from_the_error_prefix(task_id: str) -> None:
    assert api.failure_reason(f"{task_id}: anything at all", None) == f"last run failed in {task_id}"


@pytest.mark.parametrize("guard", GUARDS)
def test_a_known_guard_is_named_after_the_task(guard: str) -> None:
    assert api.failure_reason("apply_changes: blocked", guard) == f"last run failed in apply_changes: guard {guard}"
    assert api.failure_reason(None, guard) == f"last run failed: guard {guard}"


@pytest.mark.parametrize(
    ("error", "guard"),
    [
        (None, None),
        ("", None),
        ("apply_changes_evil: x", None),
        ("APPLY_CHANGES: x", None),
        ("cleanup_staging: x", None),  # a task of the DAG, but not one the health reason names
        ("host 127.0.0.1 port 5432: connection refused", "DROP TABLE x"),
        ("compute_delta:no space", "Mass_Delete"),
    ],
)  # fmt: skip
def test_anything_else_is_only_last_run_failed(error: str | None, guard: str | None) -> None:
    assert api.failure_reason(error, guard) == "last run failed"
