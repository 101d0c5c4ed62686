"""The window a run looks at (``device_sync.window.Window``): ``[end - lookback, end)``, built only from a
time-zone-aware end and a lookback of at least one minute. No database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from device_sync.window import Window

END = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


@pytest.mark.parametrize("lookback", [1, 59, 60, 1440, 60 * 24 * 31])
def test_the_window_ends_at_the_end_and_starts_lookback_minutes_before(lookback: int) -> None:
    window = Window.ending_at(END, lookback)
    assert window.end == END
    assert window.end - window.start == timedelta(minutes=lookback)


def test_the_window_is_exact_to_the_microsecond() -> None:
    end = datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=UTC)
    assert Window.ending_at(end, 1).start == datetime(2025, 12, 31, 23, 59, 0, 1, tzinfo=UTC)


def test_the_window_spans_a_clock_change_in_elapsed_minutes() -> None:
    """Europe's spring-forward night: 60 minutes before 03:30+02:00 is 01:30+01:00, not 02:30."""
    summer = timezone(timedelta(hours=2))
    end = datetime(2026, 3, 29, 3, 30, tzinfo=summer)  # = END
    window = Window.ending_at(end, 60)
    assert window.start == END - timedelta(hours=1)
    assert window.start.astimezone(timezone(timedelta(hours=1))).hour == 1


def test_consecutive_windows_meet_without_a_gap_or_an_overlap() -> None:
    """Half-open [start, end): an hourly run with a 60-minute lookback starts where the previous one ended."""
    earlier = Window.ending_at(END - timedelta(hours=1), 60)
    later = Window.ending_at(END, 60)
    assert earlier.end == later.start


def test_a_naive_end_is_refused() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        Window.ending_at(datetime(2026, 1, 1, 12), 60)


@pytest.mark.parametrize("lookback", [0, -1, -1440])
def test_a_lookback_below_one_minute_is_refused(lookback: int) -> None:
    with pytest.raises(ValueError, match=f"at least one minute, got {lookback}"):
        Window.ending_at(END, lookback)


def test_as_params_binds_the_start_and_the_end() -> None:
    window = Window.ending_at(END, 90)
    assert window.as_params() == {"window_start": END - timedelta(minutes=90), "window_end": END}
