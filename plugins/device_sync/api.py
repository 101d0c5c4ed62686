"""The operators' HTTP endpoints, served by ``airflow api-server`` under ``/device-sync`` (see the plugin).

- ``GET /health``: public, for load balancers: 200 when the tasks' Airflow pool exists, no run of the DAG
  is dated in the future (:mod:`device_sync.future_runs`), the database answers, the last finished run did
  not fail and the last applied sync is recent enough (see :func:`health_answer`), else 503 with a short
  reason class. No error text, no secrets (the details are behind ``/runs``); one small query with short timeouts,
  and the answer is cached in-process for :data:`HEALTH_CACHE_SECONDS`.
- ``GET /runs``, ``GET /changes``: the run history and the change log, paginated JSON.
- ``GET /changes/pending?run_id=…``: the changes a run waiting for approval of a mass delete would apply.
- ``GET /``: a status page (recent runs as a table and a chart of the changes per run).

Everything but ``/health`` requires an Airflow login allowed to read the DAG's runs: plugin apps do not
inherit Airflow's authentication, so it is enforced here. Bad query parameters answer 422, a database that
does not answer 503 (never 500 with the driver's message).
"""

from __future__ import annotations

import html
import logging
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Annotated, Any

import psycopg
from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse, JSONResponse
from psycopg import sql
from psycopg.rows import dict_row

from device_sync import compat, db, future_runs, history, pool
from device_sync.config import Settings, load_settings
from device_sync.guards import GUARDS, OLDER_WINDOW
from device_sync.summary import STEP_TASK_IDS

log = logging.getLogger(__name__)

DAG_ID = "device_parameter_sync"
HEALTH_TIMEOUT_SECONDS = 3
# /health answers from an in-process cache this long: a load balancer (or anyone, it is public) polling it
# many times a second costs one database session per period and process, not one per request.
HEALTH_CACHE_SECONDS = 5.0
PAGE_TIMEOUT_SECONDS = 10

# The tasks that record a failure as "<task_id>: <error>" in the run history, and the guards it may record.
# /health names only these (never free text from the error column), so nothing of the error can leak.
KNOWN_TASKS = (*STEP_TASK_IDS, "approve_mass_delete", "publish_metrics")
KNOWN_GUARDS = GUARDS


# Airflow's own check: a logged-in user (token or UI cookie) who may read this DAG's runs. One instance, so that
# tests may replace exactly this dependency (app.dependency_overrides).
require_dag_read = compat.dag_runs_read_check(DAG_ID)
AUTHORIZED = [Depends(require_dag_read)]

# No /docs, /redoc or /openapi.json: the plugin app is mounted without Airflow's authentication, so they would
# describe the private endpoints to anyone.
app = FastAPI(
    title="device-sync",
    description="Health, run history and change log of device_parameter_sync",
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
)


def _connect(settings: Settings, timeout_seconds: int) -> psycopg.Connection[Any]:
    conn = db.connect(settings.postgres_conn_id, connect_timeout=timeout_seconds)
    conn.row_factory = dict_row  # type: ignore[assignment]
    return conn


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {key: value.isoformat() if isinstance(value, datetime) else value for key, value in row.items()}


# --- health ----------------------------------------------------------------------------------------------


def failure_reason(error: str | None, guard: str | None) -> str:
    """The reason class of a failed run: its task (from the ``<task_id>: `` prefix) and guard, if known."""
    task = (error or "").split(": ", 1)[0]
    reason = f"last run failed in {task}" if task in KNOWN_TASKS else "last run failed"
    return f"{reason}: guard {guard}" if guard in KNOWN_GUARDS else reason


def health_answer(state: Mapping[str, Any], settings: Settings) -> tuple[int, dict[str, Any]]:
    """The status code and public body of /health for ``state`` (health.sql's row); no I/O.

    Unhealthy when the last finished run failed, when no sync was applied yet, or when the last applied sync
    is stale: older than ``DEVICE_SYNC_HEALTH_MAX_AGE_MINUTES`` if set, else once
    ``DEVICE_SYNC_HEALTH_MISSED_RUNS`` scheduled fire times have passed since it (so a schedule's quiet
    hours or weekends are no outage). Times are the database's (``state["now"]``), not this host's.
    """
    now: datetime = state["now"]
    applied_at: datetime | None = state.get("last_applied_at")
    body: dict[str, Any] = {"status": "unhealthy", "checked_at": now.isoformat()}
    if state.get("last_run_finished_at") is not None:
        body["last_run_finished_at"] = state["last_run_finished_at"].isoformat()
    if applied_at is not None:
        body.update(
            last_successful_sync=applied_at.isoformat(),
            age_seconds=round((now - applied_at).total_seconds(), 1),
            window_start=state["last_applied_window_start"].isoformat(),
            window_end=state["last_applied_window_end"].isoformat(),
        )

    stale = False
    if settings.health_max_age_minutes is not None:
        max_age = timedelta(minutes=settings.health_max_age_minutes)
        body["max_age_seconds"] = max_age.total_seconds()
        stale = applied_at is not None and now - applied_at > max_age
        stale_reason = f"stale: the last applied sync is older than {settings.health_max_age_minutes} minutes"
    else:
        limit = settings.health_missed_runs
        body["missed_runs_limit"] = limit
        if applied_at is not None:
            body["missed_runs"] = settings.fire_times_between(applied_at, now, limit=limit)
            stale = body["missed_runs"] >= limit
        stale_reason = f"stale: {limit} scheduled runs since the last applied sync"

    older_windows = int(state.get("older_window_runs") or 0)
    if state.get("last_run_status") == "failed":
        body["reason"] = failure_reason(state.get("last_run_error"), state.get("last_run_guard"))
    elif applied_at is None:
        body["reason"] = "no applied sync yet" if state.get("last_run_status") else "no sync has run yet"
    elif stale and older_windows:
        # The runs "succeed" but change nothing: a newer window was applied before (a backfill, a late run).
        body["reason"] = (
            f"not applying: the last {older_windows} finished runs were older windows (guard {OLDER_WINDOW})"
        )
    elif stale:
        body["reason"] = stale_reason
    else:
        body["status"] = "healthy"
        return 200, body
    return 503, body


def _compute_health() -> tuple[int, dict[str, Any]]:
    try:
        settings = load_settings()
    except Exception:  # the message quotes the configured values: for the logs, not for the public
        log.exception("device-sync health check: invalid configuration")
        return 503, {"status": "unhealthy", "reason": "invalid configuration"}
    if not _pool_exists():
        return 503, {"status": "unhealthy", "reason": pool.missing_message(settings.db_pool_slots)}
    if runs := _future_runs(settings):
        first = runs[0]
        reason = (
            f"run {first['run_id']} ({first['state']}) has the future logical date {first['logical_date']}: "
            f"it can never sync. {future_runs.what_to_do(first['run_id'])}"
        )
        return 503, {"status": "unhealthy", "reason": reason, "future_runs": runs}
    try:
        with _connect(settings, HEALTH_TIMEOUT_SECONDS) as conn, db.transaction(conn, HEALTH_TIMEOUT_SECONDS) as cur:
            cur.execute(db.compose(f"{db.API_SQL}health.sql", history.tables(settings.staging_schema)))
            state = cur.fetchone()
            if state is None:  # the query always returns one row
                raise RuntimeError("health.sql returned no row")
    except psycopg.errors.UndefinedTable:
        return 503, {"status": "unhealthy", "reason": "no sync has run yet (no run history)"}
    except Exception as error:  # any failure to read the state is reported, never raised to the balancer
        # the message (host, port, privileges) goes to the server's log only, not into the public body
        log.warning("device-sync health check: database unreachable: %s: %s", type(error).__name__, error)
        return 503, {"status": "unhealthy", "reason": f"database unreachable ({type(error).__name__})"}
    return health_answer(state, settings)


def _pool_exists() -> bool:
    """Whether the tasks' Airflow pool exists; True when the metadata database cannot tell (not our outage)."""
    try:
        return pool.exists()
    except Exception as error:
        log.warning("device-sync health check: could not look up pool %s: %s", pool.NAME, error)
        return True


def _future_runs(settings: Settings) -> list[dict[str, Any]]:
    """The DAG's runs dated in the future; none when the metadata database cannot tell (not our outage)."""
    try:
        return future_runs.listed(settings)
    except Exception as error:
        log.warning("device-sync health check: could not look for future-dated runs: %s", error)
        return []


_health_lock = threading.Lock()
_health_cached: tuple[float, int, dict[str, Any]] | None = None


def reset_health_cache() -> None:
    """Forget the cached /health answer (tests; the next request queries the database)."""
    global _health_cached
    with _health_lock:
        _health_cached = None


@app.get("/health")
def health() -> JSONResponse:
    """200 when the sync is healthy, else 503 with a short reason class; cached for HEALTH_CACHE_SECONDS."""
    global _health_cached
    # Single flight: the lock is held while the answer is computed, so concurrent requests wait for that one
    # query and then share its answer instead of each opening a database session.
    with _health_lock:
        if _health_cached is None or time.monotonic() - _health_cached[0] >= HEALTH_CACHE_SECONDS:
            status_code, body = _compute_health()
            _health_cached = (time.monotonic(), status_code, body)
        _, status_code, body = _health_cached
    return JSONResponse(body, status_code=status_code)


# --- runs, changes, status page -----------------------------------------------------------------------------

Limit = Annotated[int, Query(ge=1, le=500)]
# Bounded: PostgreSQL's OFFSET is a bigint, and a page that far is a mistake anyway.
Offset = Annotated[int, Query(ge=0, le=1_000_000_000)]
# No NUL (PostgreSQL text cannot hold it) and a bounded length: a bad filter is the caller's error (422).
NO_NUL = r"^[^\x00]*$"
Filter = Annotated[str | None, Query(max_length=1024, pattern=NO_NUL)]


def _query(
    settings: Settings,
    statements: list[tuple[str, dict[str, Any]]],
    tables: Mapping[str, sql.Composable] | None = None,
) -> list[list[dict[str, Any]]] | None:
    """The rows of each SQL file in one transaction; None when a table it reads (by default the history's,
    else ``tables``) does not exist yet.

    A database that does not answer is 503 with a short reason; its message (host, port) stays in the log."""
    try:
        with _connect(settings, PAGE_TIMEOUT_SECONDS) as conn, db.transaction(conn, PAGE_TIMEOUT_SECONDS) as cur:
            results = []
            for statement, params in statements:
                identifiers = tables if tables is not None else history.tables(settings.staging_schema)
                cur.execute(db.compose(f"{db.API_SQL}{statement}", identifiers), params)
                results.append([_jsonable(row) for row in cur.fetchall()])
            return results
    except psycopg.errors.UndefinedTable:  # no run has created the history yet
        return None
    except psycopg.OperationalError as error:  # refused, timed out, shutting down
        log.warning("device-sync API: database unavailable: %s", error)
        raise HTTPException(status_code=503, detail="database unavailable") from None


def _runs_page(limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
    settings = load_settings()
    params = {"limit": limit, "offset": offset}
    results = _query(settings, [("runs.sql", params), ("count_runs.sql", {})])
    if results is None:
        return [], 0
    rows, [count] = results
    return rows, int(count["total"])


def _next_offset(offset: int, shown: int, has_more: bool) -> int | None:
    return offset + shown if has_more else None


@app.get("/runs", dependencies=AUTHORIZED)
def runs(limit: Limit = 50, offset: Offset = 0) -> dict[str, Any]:
    """The run history, newest first; ``total`` counts every run in the history (also past the last page)."""
    items, total = _runs_page(limit, offset)
    has_more = offset + len(items) < total
    return {
        "runs": items,
        "total": total,
        "limit": limit,
        "offset": offset,
        "has_more": has_more,
        "next_offset": _next_offset(offset, len(items), has_more),
    }


@app.get("/changes", dependencies=AUTHORIZED)
def changes(
    device_id: Filter = None,
    parameter_id: Filter = None,
    run_id: Filter = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """The change log, newest first, filtered by device, parameter and/or run.

    No total (counting a large log costs more than the page); one row more than ``limit`` is read to tell
    whether there is a next page (``has_more``, ``next_offset``)."""
    params = {"device_id": device_id, "parameter_id": parameter_id, "run_id": run_id}
    results = _query(load_settings(), [("changes.sql", {**params, "limit": limit + 1, "offset": offset})])
    return _changes_page(results[0] if results is not None else [], limit, offset)


def _changes_page(rows: list[dict[str, Any]], limit: int, offset: int) -> dict[str, Any]:
    """A page of changes from ``limit + 1`` rows read: the extra one only tells that there is a next page."""
    has_more = len(rows) > limit
    items = rows[:limit]
    return {
        "changes": items,
        "limit": limit,
        "offset": offset,
        "has_more": has_more,
        "next_offset": _next_offset(offset, len(items), has_more),
    }


@app.get("/changes/pending", dependencies=AUTHORIZED)
def pending_changes(
    run_id: Annotated[str, Query(min_length=1, max_length=1024, pattern=NO_NUL)],
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """The changes a run waiting in approve_mass_delete would apply, by pair (the link in its question).

    404 when the run has none: it asked no question, or its staging tables are gone (it finished)."""
    from device_sync.staging import StagingTables

    settings = load_settings()
    staging = StagingTables.for_run(settings.staging_schema, DAG_ID, run_id)
    tables = {"pending_changes": staging.table("pending_changes")}
    results = _query(settings, [("pending_changes.sql", {"limit": limit + 1, "offset": offset})], tables)
    if results is None:
        raise HTTPException(status_code=404, detail="no changes of this run wait for approval")
    return {"run_id": run_id, **_changes_page(results[0], limit, offset)}


@app.get("/", response_class=HTMLResponse, dependencies=AUTHORIZED)
def status_page() -> HTMLResponse:
    """Recent runs as a table and a chart of inserted / deleted / updated rows per run."""
    items, total = _runs_page(48, 0)
    return HTMLResponse(render_status_page(items, total))


COLORS = {"inserted": "#2e7d32", "deleted": "#c62828", "updated": "#1565c0"}


def _chart(runs_oldest_first: list[dict[str, Any]]) -> str:
    """An inline SVG line chart of inserted / deleted / updated per run (no external scripts)."""
    width, height, pad = 720, 220, 30
    peak = max([1] + [run.get(key) or 0 for run in runs_oldest_first for key in COLORS])
    count = max(len(runs_oldest_first) - 1, 1)
    lines = []

    def point(i: int, value: int) -> str:
        return f"{pad + i * (width - 2 * pad) / count:.1f},{height - pad - value * (height - 2 * pad) / peak:.1f}"

    for key, color in COLORS.items():
        points = " ".join(point(i, run.get(key) or 0) for i, run in enumerate(runs_oldest_first))
        lines.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"/>')
        lines.append(f'<text x="{pad + 110 * list(COLORS).index(key)}" y="16" fill="{color}">{key}</text>')
    axis = (
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#999"/>'
        f'<text x="2" y="{pad + 4}" font-size="11">{peak}</text><text x="2" y="{height - pad}" font-size="11">0</text>'
    )
    return f'<svg id="changes-chart" width="{width}" height="{height}" role="img">{axis}{"".join(lines)}</svg>'


def render_status_page(runs_newest_first: list[dict[str, Any]], total: int) -> str:
    columns = ["run_id", "window_end", "status", "dry_run", "applied", "inserted", "deleted", "updated", "skipped"]
    header = "".join(f"<th>{column}</th>" for column in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(run.get(column, '')))}</td>" for column in columns) + "</tr>"
        for run in runs_newest_first
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>device-sync status</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px}}</style></head>
<body><h1>device_parameter_sync</h1>
<p>{total} runs recorded. <a href="health">health</a> · <a href="runs">runs (JSON)</a> ·
<a href="changes">changes (JSON)</a></p>
<h2>Changes per run</h2>{_chart(list(reversed(runs_newest_first)))}
<h2>Recent runs</h2><table id="runs"><tr>{header}</tr>{body}</table></body></html>"""
