"""A run's options and window from the DAG run (``device_sync.options``): the params an operator may set, the
window's end, and its length from the params or the settings. No database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from device_sync.config import Settings
from device_sync.options import MAX_DEVICE_IDS, MAX_LOOKBACK_MINUTES, RunOptions, run_window, window_end_of
from device_sync.window import Window

END = datetime(2026, 3, 1, 12, tzinfo=UTC)


# --- RunOptions.from_params ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        pytest.param(None, RunOptions(), id="no_params"),
        pytest.param({}, RunOptions(), id="empty_params"),
        pytest.param({"lookback_minutes": None, "device_ids": None}, RunOptions(), id="explicit_nones"),
        pytest.param({"dry_run": True}, RunOptions(dry_run=True), id="dry_run"),
        pytest.param({"lookback_minutes": 1}, RunOptions(lookback_minutes=1), id="lookback_min"),
        pytest.param({"lookback_minutes": 44640}, RunOptions(lookback_minutes=44640), id="lookback_max"),
        pytest.param({"device_ids": ["d2", "d1", "d2"]}, RunOptions(device_ids=("d2", "d1")), id="ids_deduplicated"),
        pytest.param(
            {"dry_run": False, "lookback_minutes": 90, "device_ids": ("d1",)},
            RunOptions(dry_run=False, lookback_minutes=90, device_ids=("d1",)),
            id="all_fields",
        ),
    ],
)
def test_valid_params_give_run_options(params: dict[str, Any] | None, expected: RunOptions) -> None:
    assert RunOptions.from_params(params) == expected


def test_the_largest_allowed_device_list_is_accepted() -> None:
    ids = [f"d{i}" for i in range(MAX_DEVICE_IDS)]

    options = RunOptions.from_params({"device_ids": ids})

    assert options.device_ids == tuple(ids)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        pytest.param({"dry_run": "true"}, "dry_run", id="dry_run_string"),
        pytest.param({"dry_run": 1}, "dry_run", id="dry_run_int"),
        pytest.param({"lookback_minutes": 0}, "lookback_minutes", id="lookback_0"),
        pytest.param({"lookback_minutes": -1}, "lookback_minutes", id="lookback_negative"),
        pytest.param({"lookback_minutes": 44641}, "lookback_minutes", id="lookback_above_max"),
        pytest.param({"lookback_minutes": True}, "lookback_minutes", id="lookback_bool"),
        pytest.param({"lookback_minutes": "60"}, "lookback_minutes", id="lookback_string"),
        pytest.param({"lookback_minutes": 60.0}, "lookback_minutes", id="lookback_float"),
        pytest.param({"device_ids": []}, "device_ids", id="ids_empty_list"),
        pytest.param({"device_ids": "d1"}, "device_ids", id="ids_string"),
        pytest.param({"device_ids": {"d1"}}, "device_ids", id="ids_set"),
        pytest.param({"device_ids": [f"d{i}" for i in range(MAX_DEVICE_IDS + 1)]}, "device_ids", id="ids_above_max"),
        pytest.param({"device_ids": [1]}, "device_ids", id="ids_int"),
        pytest.param({"device_ids": ["d1", None]}, "device_ids", id="ids_none"),
        pytest.param({"device_ids": [""]}, "device_ids", id="ids_empty_string"),
    ],
)
def test_invalid_params_fail_the_task_naming_the_field(params: dict[str, Any], field: str) -> None:
    with pytest.raises(AirflowFailException, match=f"param {field} "):
        RunOptions.from_params(params)


@pytest.mark.parametrize("flag", ["dry_run", "allow_mass_delete", "force_apply"])
@pytest.mark.parametrize("value", [0, 1, "false", None, [True]])
def test_every_flag_must_be_a_bool_not_an_int_or_a_string(flag: str, value: Any) -> None:
    with pytest.raises(AirflowFailException, match=f"param {flag} must be true or false"):
        RunOptions.from_params({flag: value})


def test_every_flag_is_read() -> None:
    options = RunOptions.from_params({"dry_run": True, "allow_mass_delete": True, "force_apply": True})
    assert (options.dry_run, options.allow_mass_delete, options.force_apply) == (True, True, True)
    assert RunOptions.from_params({"allow_mass_delete": False}) == RunOptions()


def test_duplicate_device_ids_keep_the_order_of_their_first_appearance() -> None:
    options = RunOptions.from_params({"device_ids": ["b", "a", "b", "c", "a", "A"]})
    assert options.device_ids == ("b", "a", "c", "A")  # ids are compared exactly: "A" is not "a"


def test_the_limits_are_named_in_the_messages() -> None:
    with pytest.raises(AirflowFailException, match=f"from 1 to {MAX_LOOKBACK_MINUTES}, got 0"):
        RunOptions.from_params({"lookback_minutes": 0})
    with pytest.raises(AirflowFailException, match=f"1 to {MAX_DEVICE_IDS} non-empty device id strings"):
        RunOptions.from_params({"device_ids": []})


# --- the window's end and length ------------------------------------------------------------------------


def dag_run(data_interval_end: datetime | None, run_after: datetime | None) -> SimpleNamespace:
    return SimpleNamespace(data_interval_end=data_interval_end, run_after=run_after)


def test_window_end_is_data_interval_end_else_run_after() -> None:
    scheduled = SimpleNamespace(
        data_interval_end=datetime(2026, 1, 2, tzinfo=UTC), run_after=datetime(2026, 1, 3, tzinfo=UTC)
    )
    no_logical_date = SimpleNamespace(data_interval_end=None, run_after=datetime(2026, 1, 3, tzinfo=UTC))
    assert window_end_of(scheduled) == datetime(2026, 1, 2, tzinfo=UTC)
    assert window_end_of(no_logical_date) == datetime(2026, 1, 3, tzinfo=UTC)


def test_window_end_is_the_data_interval_end_even_when_run_after_is_earlier() -> None:
    assert window_end_of(dag_run(END, END - timedelta(hours=1))) == END


def test_a_run_without_either_end_fails_naming_both() -> None:
    with pytest.raises(AirflowFailException, match="neither data_interval_end nor run_after"):
        window_end_of(dag_run(None, None))


def test_run_window_takes_the_params_lookback_over_the_settings() -> None:
    settings = Settings(lookback_minutes=1440)
    window = run_window(dag_run(END, None), settings, RunOptions(lookback_minutes=90))
    assert window == Window(start=END - timedelta(minutes=90), end=END)


@pytest.mark.parametrize("options", [None, RunOptions(), RunOptions(dry_run=True, device_ids=("d1",))])
def test_run_window_without_a_lookback_param_uses_the_settings(options: RunOptions | None) -> None:
    settings = Settings(lookback_minutes=30)
    window = run_window(dag_run(None, END), settings, options)
    assert (window.start, window.end) == (END - timedelta(minutes=30), END)


def test_run_window_keeps_the_time_zone_of_the_runs_end() -> None:
    end = datetime(2026, 3, 1, 14, tzinfo=timezone(timedelta(hours=2)))
    window = run_window(dag_run(end, None), Settings(lookback_minutes=60), None)
    assert window.end == end == END  # the same instant
    assert window.start == END - timedelta(hours=1)
