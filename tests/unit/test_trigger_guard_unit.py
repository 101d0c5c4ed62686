"""The refusal of a REST trigger whose window would end in the future (``trigger_guard.future_window_refusal``):
a pure function of the request body, now and the allowed clock skew; and the refusal (413) of a body too large
to judge, driven through the ASGI middleware itself. The middleware on a real api-server is
tested in tests/e2e/test_future_window_e2e.py, the sync's own refusal in
tests/integration/test_future_window_integration.py."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from device_sync.trigger_guard import MAX_BODY_BYTES, RefuseFutureTriggers, future_window_refusal

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
    assert "more than 300 s after now" in refusal


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


# --- a body too large to judge ------------------------------------------------------------------------------

PATH = "/api/v2/dags/device_parameter_sync/dagRuns"


def drive(
    chunks: list[bytes], headers: list[tuple[bytes, bytes]] | None = None, *, complete: bool = True
) -> tuple[list[Any], bool]:
    """Send ``chunks`` as one POST through the middleware (``complete=False``: the client leaves before the
    end); (messages sent to the client, whether the app ran)."""
    reached: list[bool] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(True)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    incoming = [
        {"type": "http.request", "body": chunk, "more_body": not complete or i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    sent: list[Any] = []

    async def receive() -> Any:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": PATH, "headers": headers or []}
    asyncio.run(RefuseFutureTriggers(app)(scope, receive, send))
    return sent, bool(reached)


def test_a_future_trigger_padded_past_the_limit_is_refused_with_413_not_passed_on() -> None:
    padding = "x" * (3 * MAX_BODY_BYTES)
    body = json.dumps({"logical_date": "2031-01-01T00:00:00Z", "conf": {"padding": padding}}).encode()
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)]  # as a server streams it
    sent, reached = drive(chunks)
    assert not reached
    assert sent[0]["status"] == 413
    assert str(MAX_BODY_BYTES) in json.loads(sent[1]["body"])["detail"]


def test_a_declared_length_past_the_limit_is_refused_before_reading() -> None:
    sent, reached = drive([b"{}"], headers=[(b"content-length", str(MAX_BODY_BYTES + 1).encode())])
    assert (sent[0]["status"], reached) == (413, False)


def test_a_future_trigger_just_under_the_limit_is_read_whole_and_refused_with_422() -> None:
    head = json.dumps({"logical_date": "2031-01-01T00:00:00Z", "conf": {"p": ""}}).encode()
    body = head.replace(b'"p": ""', b'"p": "' + b"x" * (MAX_BODY_BYTES - len(head)) + b'"')
    assert len(body) == MAX_BODY_BYTES
    sent, reached = drive([body[: len(body) // 2], body[len(body) // 2 :]])
    assert (sent[0]["status"], reached) == (422, False)
    assert "2031-01-01T00:00:00+00:00" in json.loads(sent[1]["body"])["detail"]


def test_a_client_that_leaves_mid_body_creates_nothing_and_gets_no_answer() -> None:
    sent, reached = drive([b'{"logical_date": null, '], complete=False)
    assert (sent, reached) == ([], False)
