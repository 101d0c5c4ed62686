"""Refuses, at the REST API, a trigger of ``device_parameter_sync`` that could never run: one whose window
would end in the future, or any while the Airflow pool of its database tasks does not exist.

A run for a future logical date never starts its tasks (Airflow's scheduler waits until the logical date)
but holds one of the DAG's run slots (see :mod:`device_sync.future_runs`, which fails such runs however they
were made). This ASGI middleware, installed on ``airflow api-server`` by the plugin, answers such a
``POST /api/v2/dags/device_parameter_sync/dagRuns`` (the Trigger DAG form of the UI uses the same call) with
422 and a message naming the window end and now, so the run is never created. A body larger than
:data:`MAX_BODY_BYTES` is not read to its end: it is refused with 413, never passed on unjudged. A missing
pool (:mod:`device_sync.pool`) would likewise leave the run's tasks queued without a word: the trigger is
refused with the command that creates the pool. Every other request passes through untouched.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio.to_thread

DAG_ID = "device_parameter_sync"
MAX_BODY_BYTES = 1_048_576  # a trigger's conf is small; a larger body is refused (413), never read to its end

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None  # Airflow refuses it with its own message
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def future_window_refusal(body: bytes, now: datetime, horizon: timedelta) -> str | None:
    """Why the trigger request ``body`` must be refused (its window would end after ``now`` + ``horizon``), or
    None. Unreadable JSON is left to Airflow, which refuses it (422) without creating a run.

    The window ends at ``data_interval_end`` when the request gives one, else at its ``logical_date`` (the
    DAG's timetable ends a manual run's data interval there); without either it ends at ``run_after``, when
    the run starts, which is never in the future.
    """
    try:
        request = json.loads(body or b"{}")
    except ValueError:
        return None
    if not isinstance(request, dict):
        return None
    window_end = _instant(request.get("data_interval_end")) or _instant(request.get("logical_date"))
    if window_end is None or window_end <= now + horizon:
        return None
    return (
        f"{DAG_ID}: the run's window would end at {window_end.isoformat()}, more than "
        f"{int(horizon.total_seconds())} s after now ({now.isoformat()}; DEVICE_SYNC_MAX_CLOCK_SKEW_SECONDS, at "
        f"most 300). A window that has not "
        f"happened yet is never synced: its run would never start and would block every later run. Trigger "
        f"with a past or current logical_date, or with none (the window then ends when the run starts)."
    )


class RefuseFutureTriggers:
    """Pure ASGI middleware: reads the body of a trigger of :data:`DAG_ID`, then replays it to the app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", "")).rstrip("/")
        if scope["type"] != "http" or scope.get("method") != "POST" or not path.endswith(f"/dags/{DAG_ID}/dagRuns"):
            await self.app(scope, receive, send)
            return
        if _declared_length(scope) > MAX_BODY_BYTES:
            await _send_json(send, 413, {"detail": too_large_refusal()})
            return
        messages: list[Message] = []
        body = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: nothing to answer, nothing to create
                return
            messages.append(message)
            body += message.get("body", b"")
            if len(body) > MAX_BODY_BYTES:
                await _send_json(send, 413, {"detail": too_large_refusal()})
                return
            if not message.get("more_body", False):
                break
        refusal = future_window_refusal(body, datetime.now(UTC), _horizon())
        if refusal is None:  # the metadata database is queried off the event loop
            refusal = await anyio.to_thread.run_sync(missing_pool_refusal)
        if refusal is not None:
            await _send_json(send, 422, {"detail": refusal})
            return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


def missing_pool_refusal() -> str | None:
    """Why a trigger must be refused because the pool is missing, or None (also when Airflow cannot tell:
    Airflow's own handler then answers for its database)."""
    import logging

    from device_sync import pool
    from device_sync.config import load_settings

    try:
        if pool.exists():
            return None
    except Exception as error:
        logging.getLogger(__name__).warning("device-sync: could not look up pool %s: %s", pool.NAME, error)
        return None
    return pool.missing_message(load_settings().db_pool_slots)


def _declared_length(scope: Scope) -> int:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0  # the body is counted as it arrives
    return 0


def too_large_refusal() -> str:
    return (
        f"{DAG_ID}: the trigger request is larger than {MAX_BODY_BYTES} bytes, more than device-sync reads to "
        f"check its logical date; a run's conf is a few small options. Send a smaller body."
    )


def _horizon() -> timedelta:
    from device_sync.config import load_settings
    from device_sync.future_runs import horizon

    return horizon(load_settings())


async def _send_json(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
