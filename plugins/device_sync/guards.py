"""The safety guards of ``apply_changes``: checked under the writers' lock; a tripped guard writes nothing.

- forward only: a run whose window ends before the newest applied one records its delta, applies nothing;
- stale measurements: no pair observed at all while the table (in the run's device scope) is not empty;
- mass delete: more than ``DEVICE_SYNC_MAX_DELETE_FRACTION`` of the table deleted by one run.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from typing import Any

import psycopg

from device_sync import db
from device_sync.config import Settings

log = logging.getLogger(__name__)

MASS_DELETE = "mass_delete"
STALE_MEASUREMENTS = "stale_measurements"
OLDER_WINDOW = "older_window"
GUARDS = (MASS_DELETE, STALE_MEASUREMENTS, OLDER_WINDOW)


class GuardTripped(Exception):
    """A safety guard refused to apply this run's changes; nothing was written. Retrying will not help."""

    def __init__(self, guard: str, message: str) -> None:
        super().__init__(message)
        self.guard = guard


def check_before_writing(
    cur: psycopg.Cursor[Any],
    identifiers: dict[str, Any],
    run: dict[str, Any],
    state: dict[str, Any],
    allow_mass_delete: bool,
    force_apply: bool,
) -> str | None:
    """The guards checked under the writers' lock before anything is written (``state`` is guard_state.sql's
    row); the mass-delete guard follows the writes (:func:`check_mass_delete`).

    - forward only: a run whose window ends before the newest applied window returns ``older_window``
      (record, do not apply) unless ``force_apply``;
    - stale measurements: no pair at all observed for any active device while the table (within the run's
      device scope) is not empty raises :class:`GuardTripped`, unless ``allow_mass_delete``.
    """
    window_end = run.get("window_end")
    newest = state["newest_applied_window_end"]
    if not force_apply and newest is not None and window_end is not None and window_end < newest:
        log.warning(
            "Window end %s is older than the newest applied window end %s: recording the delta, not applying it "
            "(trigger with force_apply to apply an older window).",
            window_end,
            newest,
        )
        return OLDER_WINDOW
    if allow_mass_delete:
        return None
    if state["observed_pairs"] == 0 and state["scoped_rows"] > 0:
        newest_measurement = db.fetch_one_dict(cur, db.compose(f"{db.STEPS_SQL}newest_measurement.sql", identifiers))[
            "newest"
        ]
        raise GuardTripped(
            STALE_MEASUREMENTS,
            f"measurements are stale: no measurement of any active device in the window "
            f"[{run.get('window_start')}, {window_end}) while iot_data.device_parameters holds "
            f"{state['scoped_rows']} rows; the newest measurement is from {newest_measurement}. Nothing was "
            f"applied. Check the measurements pipeline; to empty the table on purpose, trigger with "
            f'{{"allow_mass_delete": true}}.',
        )
    return None


def mass_delete_exceeds(settings: Settings, table_rows: int, deletes: int) -> bool:
    """More than ``max_delete_fraction`` of a table of at least ``mass_delete_min_rows`` rows."""
    # The fraction as written (0.29 is 29/100), not its binary float: 0.29 * 100 is 28.999999999999996 in floats.
    limit = Fraction(str(settings.max_delete_fraction)) * table_rows
    return table_rows >= settings.mass_delete_min_rows and deletes > limit


def check_mass_delete(settings: Settings, table_rows: int, deletes: int) -> None:
    """Mass delete: deleting more than ``max_delete_fraction`` of a table of at least ``mass_delete_min_rows``
    rows (counted before the run) raises :class:`GuardTripped`, which rolls the run's transaction back."""
    if mass_delete_exceeds(settings, table_rows, deletes):
        raise GuardTripped(
            MASS_DELETE,
            f"mass delete blocked: this run would delete {deletes} of {table_rows} rows "
            f"({deletes / table_rows:.0%}), more than DEVICE_SYNC_MAX_DELETE_FRACTION="
            f"{settings.max_delete_fraction:g}. Nothing was applied. Check GET /device-sync/changes and the "
            f"sources; if the deletes are right, approve them when a run asks (approve_mass_delete), or trigger "
            f'a run with {{"allow_mass_delete": true}}.',
        )
