"""The time window a run looks at, and the refusal of a window that has not happened yet."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the DAG file imports this module at every parse: no database code then
    import psycopg

    from device_sync.config import Settings


@dataclass(frozen=True)
class Window:
    """The half-open time window ``[start, end)`` whose measurements a run looks at."""

    start: datetime
    end: datetime

    @classmethod
    def ending_at(cls, end: datetime, lookback_minutes: int) -> Window:
        if end.tzinfo is None:
            raise ValueError(f"window end {end!r} has no time zone")
        if lookback_minutes < 1:
            raise ValueError(f"lookback must be at least one minute, got {lookback_minutes}")
        return cls(start=end - timedelta(minutes=lookback_minutes), end=end)

    def as_params(self) -> dict[str, datetime]:
        return {"window_start": self.start, "window_end": self.end}


class FutureWindow(ValueError):
    """The run's window ends after the database's now(): it has not happened yet. Retrying will not help."""


def refuse_future_window(conn: psycopg.Connection[Any], settings: Settings, window_end: datetime) -> None:
    """Raise :class:`FutureWindow` when ``window_end`` lies more than DEVICE_SYNC_MAX_CLOCK_SKEW_SECONDS after
    the database's ``now()``.

    Applying such a window would make every later (real) run an older window that the forward-only guard
    refuses to apply, until the wall clock passed its end.
    """
    from device_sync import db

    with db.transaction(conn, settings.statement_timeout_seconds) as cur:
        now = db.fetch_one_dict(cur, "SELECT now() AS now")["now"]
    skew = timedelta(seconds=settings.max_clock_skew_seconds)
    if window_end > now + skew:
        raise FutureWindow(
            f"the run's window ends at {window_end.isoformat()}, after the database's now() {now.isoformat()} "
            f"(DEVICE_SYNC_MAX_CLOCK_SKEW_SECONDS={settings.max_clock_skew_seconds}): a window that has not "
            f"happened yet is never synced, so nothing was staged or applied. Run it for a past or current "
            f"logical date (airflow dags test device_parameter_sync <a time not in the future>)."
        )
