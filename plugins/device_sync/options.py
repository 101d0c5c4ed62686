"""What a run looks at and what an operator may set for it: the window, and the DAG's params as RunOptions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from device_sync.compat import AirflowFailException
from device_sync.config import Settings
from device_sync.window import Window

MAX_DEVICE_IDS = 10_000
MAX_LOOKBACK_MINUTES = 60 * 24 * 31


@dataclass(frozen=True)
class RunOptions:
    """What an operator may set for one run (the DAG's params); scheduled runs get the defaults."""

    dry_run: bool = False
    lookback_minutes: int | None = None
    device_ids: tuple[str, ...] | None = None
    allow_mass_delete: bool = False
    force_apply: bool = False

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> RunOptions:
        """Validate the params again in the task (they are also validated at trigger time); name the field."""
        params = params or {}
        flags = {name: params.get(name, False) for name in ("dry_run", "allow_mass_delete", "force_apply")}
        for name, value in flags.items():
            if not isinstance(value, bool):
                raise AirflowFailException(f"param {name} must be true or false, got {value!r}")
        lookback = params.get("lookback_minutes")
        if lookback is not None and (
            isinstance(lookback, bool) or not isinstance(lookback, int) or not 1 <= lookback <= MAX_LOOKBACK_MINUTES
        ):
            raise AirflowFailException(
                f"param lookback_minutes must be an integer from 1 to {MAX_LOOKBACK_MINUTES}, got {lookback!r}"
            )
        device_ids = params.get("device_ids")
        if device_ids is not None:
            if (
                not isinstance(device_ids, list | tuple)
                or not 1 <= len(device_ids) <= MAX_DEVICE_IDS
                or not all(isinstance(device, str) and device for device in device_ids)
            ):
                raise AirflowFailException(
                    f"param device_ids must be a list of 1 to {MAX_DEVICE_IDS} non-empty device id strings"
                )
            device_ids = tuple(dict.fromkeys(device_ids))
        return cls(lookback_minutes=lookback, device_ids=device_ids, **flags)


def window_end_of(dag_run: Any) -> datetime:
    """The run's window end: its data_interval_end, or run_after for a run triggered without a logical date."""
    end: datetime | None = dag_run.data_interval_end or dag_run.run_after
    if end is None:
        raise AirflowFailException("the DAG run has neither data_interval_end nor run_after")
    return end


def run_window(dag_run: Any, settings: Settings, options: RunOptions | None = None) -> Window:
    """``[end - lookback, end)``: the params' lookback_minutes, else DEVICE_SYNC_LOOKBACK_MINUTES."""
    lookback = (options.lookback_minutes if options else None) or settings.lookback_minutes
    return Window.ending_at(window_end_of(dag_run), lookback)
