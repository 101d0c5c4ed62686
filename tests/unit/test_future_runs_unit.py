"""Which runs count as dated in the future (``future_runs.is_future``): more than
DEVICE_SYNC_MAX_CLOCK_SKEW_SECONDS ahead, never more than five minutes. The listener on a real scheduler and
/health naming the run are tested in tests/e2e/test_stack_e2e.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from device_sync.config import Settings
from device_sync.future_runs import DAG_ID, HOLD_LIMIT, horizon, is_future, what_to_do

NOW = datetime(2026, 12, 4, 12, tzinfo=UTC)


@pytest.mark.parametrize(("skew", "expected"), [(0, 0), (60, 60), (300, 300), (3600, 300)])
def test_the_horizon_is_the_clock_skew_capped_at_five_minutes(skew: int, expected: int) -> None:
    assert horizon(Settings(max_clock_skew_seconds=skew)) == timedelta(seconds=expected)
    assert horizon(None) == HOLD_LIMIT == timedelta(minutes=5)


@pytest.mark.parametrize(
    ("logical_date", "future"),
    [
        (datetime(2031, 1, 1, tzinfo=UTC), True),
        (NOW + timedelta(minutes=5, seconds=1), True),
        (NOW + timedelta(minutes=5), False),  # the scheduler holds it at most five minutes
        (NOW, False),
        (NOW - timedelta(days=1), False),
        (None, False),  # a run without a logical date starts when it is due
    ],
)
def test_a_run_is_future_dated_beyond_the_horizon(logical_date: datetime | None, future: bool) -> None:
    assert is_future(logical_date, NOW, Settings(max_clock_skew_seconds=3600)) is future


def test_what_to_do_names_the_rest_call_that_clears_the_run() -> None:
    assert f"DELETE /api/v2/dags/{DAG_ID}/dagRuns/manual__2031" in what_to_do("manual__2031")
