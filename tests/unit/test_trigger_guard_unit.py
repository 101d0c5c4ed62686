"""The refusal of a REST trigger whose window would end in the future (``trigger_guard.future_window_refusal``):
a pure function of the request body, now and the allowed clock skew. The middleware on a real api-server is
tested in tests/e2e/test_future_window_e2e.py, the sync's own refusal in
tests/integration/test_future_window_integration.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from device_sync.trigger_guard import future_window_refusal

SKEW = timedelta(minutes=5)

NOW = datetime(2026, 12, 3, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    "body",
    [
        {"logical_date": "2030-01-01T00:00:00Z"},
        {"logical_date": (NOW + SKEW + timedelta(seconds=1)).isoformat()},
        {"logical_date": "2026-12-03T10:00:00+00:00", "data_interval_start": "2026-12-03T10:00:00+00:00",
         "data_interval_end": "2026-12-04T10:00:00+00:00"},
        {"logical_date": "2026-12-03T14:00:00"},  # naive: Airflow reads it as UTC
    ],
)  # fmt: skip
def test_a_trigger_whose_window_ends_in_the_future_is_refused_naming_the_end_and_now(body: dict[str, Any]) -> None:
    refusal = future_window_refusal(json.dumps(body).encode(), NOW, SKEW)
    assert refusal is not None
    assert NOW.isoformat() in refusal
    assert "DEVICE_SYNC_MAX_CLOCK_SKEW_SECONDS=300" in refusal


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{}",
        b'{"logical_date": null, "conf": {"dry_run": true}}',
        json.dumps({"logical_date": (NOW + SKEW).isoformat()}).encode(),  # within the allowed skew
        json.dumps({"logical_date": "2026-12-01T00:00:00+00:00"}).encode(),
        json.dumps({"run_after": "2030-01-01T00:00:00+00:00"}).encode(),  # a later start, not a later window
        b'{"logical_date": "not a date"}',  # Airflow refuses it with its own message
        b"[1, 2]",
        b"not json",
    ],
)
def test_triggers_whose_window_is_not_in_the_future_pass(body: bytes) -> None:
    assert future_window_refusal(body, NOW, SKEW) is None
