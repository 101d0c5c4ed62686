"""The safety guards' arithmetic (``device_sync.guards``), without a database: the mass-delete threshold and the
forward-only (older window) decision. The guards under the writers' lock are tested in
tests/integration/test_guards_integration.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from device_sync.config import Settings
from device_sync.guards import MASS_DELETE, OLDER_WINDOW, GuardTripped, check_before_writing, check_mass_delete

# --- mass delete -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fraction", "table_rows", "allowed"),
    [
        (0.25, 100, 25),
        (0.25, 1000, 250),
        (0.5, 10, 5),
        (1.0, 100, 100),
        (0.1, 30, 3),
        (0.25, 101, 25),  # 25.25 rows: 25 is within, 26 is not
        (0.01, 100, 1),
    ],
)
def test_deleting_exactly_the_fraction_passes_and_one_more_trips(
    fraction: float, table_rows: int, allowed: int
) -> None:
    settings = Settings(max_delete_fraction=fraction, mass_delete_min_rows=10)
    check_mass_delete(settings, table_rows, allowed)
    check_mass_delete(settings, table_rows, 0)
    if allowed < table_rows:
        with pytest.raises(GuardTripped) as tripped:
            check_mass_delete(settings, table_rows, allowed + 1)
        assert tripped.value.guard == MASS_DELETE


@pytest.mark.parametrize(
    ("fraction", "table_rows", "allowed"),
    [(0.29, 100, 29), (0.57, 100, 57), (0.07, 100, 7), (0.3, 10, 3)],  # each fraction * rows < allowed in floats
)
def test_deleting_exactly_a_fraction_that_binary_floats_round_down_passes(
    fraction: float, table_rows: int, allowed: int
) -> None:
    check_mass_delete(Settings(max_delete_fraction=fraction, mass_delete_min_rows=10), table_rows, allowed)


@pytest.mark.parametrize("table_rows", [0, 1, 50, 99])
def test_a_table_below_the_minimum_rows_never_trips(table_rows: int) -> None:
    settings = Settings(max_delete_fraction=0.01, mass_delete_min_rows=100)
    check_mass_delete(settings, table_rows, table_rows)  # even deleting every row


def test_a_table_of_exactly_the_minimum_rows_is_guarded() -> None:
    settings = Settings(max_delete_fraction=0.5, mass_delete_min_rows=100)
    check_mass_delete(settings, 100, 50)
    with pytest.raises(GuardTripped):
        check_mass_delete(settings, 100, 51)


def test_a_minimum_of_zero_rows_guards_every_table() -> None:
    settings = Settings(max_delete_fraction=0.5, mass_delete_min_rows=0)
    check_mass_delete(settings, 0, 0)
    with pytest.raises(GuardTripped):
        check_mass_delete(settings, 1, 1)


def test_the_message_names_the_counts_the_setting_and_the_way_out() -> None:
    settings = Settings(max_delete_fraction=0.25, mass_delete_min_rows=100)
    with pytest.raises(GuardTripped) as tripped:
        check_mass_delete(settings, 200, 120)
    message = str(tripped.value)
    assert "120 of 200 rows (60%)" in message
    assert "DEVICE_SYNC_MAX_DELETE_FRACTION=0.25" in message
    assert '"allow_mass_delete": true' in message
    assert "Nothing was applied" in message


# --- forward only: an older window is recorded, not applied ----------------------------------------------

NEWEST = datetime(2026, 3, 1, 12, tzinfo=UTC)


def guard_state(newest: datetime | None, observed_pairs: int = 5, scoped_rows: int = 5) -> dict[str, Any]:
    """guard_state.sql's row."""
    return {"newest_applied_window_end": newest, "observed_pairs": observed_pairs, "scoped_rows": scoped_rows}


def check(window_end: datetime | None, state: dict[str, Any], **flags: bool) -> str | None:
    run = {"window_start": None if window_end is None else window_end - timedelta(hours=1), "window_end": window_end}
    options = {"allow_mass_delete": False, "force_apply": False, **flags}
    return check_before_writing(None, {}, run, state, **options)  # type: ignore[arg-type]  # no cursor: no query


def test_a_window_ending_before_the_newest_applied_one_is_an_older_window() -> None:
    assert check(NEWEST - timedelta(microseconds=1), guard_state(NEWEST)) == OLDER_WINDOW
    assert check(NEWEST - timedelta(days=30), guard_state(NEWEST)) == OLDER_WINDOW


@pytest.mark.parametrize("window_end", [NEWEST, NEWEST + timedelta(hours=1)])
def test_the_same_or_a_later_window_is_applied(window_end: datetime) -> None:
    assert check(window_end, guard_state(NEWEST)) is None


def test_without_any_applied_window_every_window_is_applied() -> None:
    assert check(NEWEST - timedelta(days=365), guard_state(None)) is None


def test_a_run_without_a_window_end_is_never_an_older_window() -> None:
    assert check(None, guard_state(NEWEST)) is None


def test_force_apply_applies_an_older_window() -> None:
    assert check(NEWEST - timedelta(hours=1), guard_state(NEWEST), force_apply=True) is None


def test_an_older_window_is_decided_before_the_stale_measurements_guard() -> None:
    """Nothing observed in an old window over a full table: recorded as older_window, no stale-guard query."""
    assert check(NEWEST - timedelta(hours=1), guard_state(NEWEST, observed_pairs=0, scoped_rows=1000)) == OLDER_WINDOW


@pytest.mark.parametrize(
    ("observed_pairs", "scoped_rows", "flags"),
    [
        (0, 0, {}),  # an empty table (in scope): nothing to lose
        (1, 1000, {}),  # something observed
        (0, 1000, {"allow_mass_delete": True}),  # emptying the table on purpose
    ],
)
def test_the_stale_measurements_guard_does_not_trip(
    observed_pairs: int, scoped_rows: int, flags: dict[str, bool]
) -> None:
    assert check(NEWEST, guard_state(NEWEST, observed_pairs, scoped_rows), **flags) is None
