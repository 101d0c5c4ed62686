"""The operators' HTTP endpoints, served by ``airflow api-server`` under ``/device-sync`` (see the plugin).

- ``GET /health``: public, for load balancers: 200 when the database answers and the last applied sync is
  recent enough, else 503 with the reason. No secrets, one indexed query, short timeouts.
- ``GET /runs``, ``GET /changes``: the run history and the change log, paginated JSON.
- ``GET /``: a status page (recent runs as a table and a chart of the changes per run).

Everything but ``/health`` requires an Airflow login allowed to read the DAG's runs: plugin apps do not
inherit Airflow's authentication, so it is enforced here.
"""

from __future__ import annotations

import html
import logging
from datetime import datetime
from typing import Annotated, Any

import psycopg
from fastapi import Depends, FastAPI, Query
from fastapi.responses import HTMLResponse, JSONResponse
from psycopg import sql
from psycopg.rows import dict_row

from device_sync import db
from device_sync.config import Settings, load_settings

log = logging.getLogger(__name__)

DAG_ID = "device_parameter_sync"
HEALTH_TIMEOUT_SECONDS = 3
SQL = "device_parameter_sync/"


def _authorized() -> Any:
    """Airflow's own check: a logged-in user (token or UI cookie) who may read this DAG's runs."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag

    return Depends(requires_access_dag("GET", DagAccessEntity.RUN, param_dag_id=DAG_ID))


app = FastAPI(title="device-sync", description="Health, run history and change log of device_parameter_sync")


def _connect(settings: Settings, timeout_seconds: int) -> psycopg.Connection[Any]:
    conn = db.connect(settings.postgres_conn_id, connect_timeout=timeout_seconds)
    conn.row_factory = dict_row  # type: ignore[assignment]
    return conn


def _tables(settings: Settings) -> dict[str, sql.Composable]:
    return {
        "run_history": sql.Identifier(settings.staging_schema, "run_history"),
        "change_log": sql.Identifier(settings.staging_schema, "change_log"),
    }


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {key: value.isoformat() if isinstance(value, datetime) else value for key, value in row.items()}


@app.get("/health")
def health() -> JSONResponse:
    """200 if the last applied sync is younger than the allowed age and the last run did not fail; else 503."""
    settings = load_settings()
    max_age = settings.health_max_age
    body: dict[str, Any] = {"status": "unhealthy", "max_age_seconds": max_age.total_seconds()}
    try:
        with _connect(settings, HEALTH_TIMEOUT_SECONDS) as conn, db.transaction(conn, HEALTH_TIMEOUT_SECONDS) as cur:
            cur.execute(db.compose(f"{SQL}health.sql", _tables(settings)))
            state = cur.fetchone() or {}
    except psycopg.errors.UndefinedTable:
        body["reason"] = "no sync has run yet (no run history)"
        return JSONResponse(body, status_code=503)
    except Exception as error:  # any failure to read the state is reported, never raised to the balancer
        log.warning("device-sync health check: database unreachable: %s", type(error).__name__)
        body["reason"] = f"database unreachable ({type(error).__name__})"
        return JSONResponse(body, status_code=503)

    if state.get("last_success_at") is not None:
        age = state["now"] - state["last_success_at"]
        body.update(
            last_successful_sync=state["last_success_at"].isoformat(),
            age_seconds=round(age.total_seconds(), 1),
            window_start=state["last_success_window_start"].isoformat(),
            window_end=state["last_success_window_end"].isoformat(),
        )
    if state.get("last_run_status") == "failed":
        body["reason"] = f"the last run failed: {state['last_run_id']}: {state['last_run_error'] or 'see its logs'}"
    elif state.get("last_success_at") is None:
        body["reason"] = "no applied sync yet"
    elif state["now"] - state["last_success_at"] > max_age:
        body["reason"] = f"stale: the last applied sync is older than {max_age}"
    else:
        body["status"] = "healthy"
        return JSONResponse(body, status_code=200)
    return JSONResponse(body, status_code=503)


Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0)]


def _page(statement: str, params: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
    settings = load_settings()
    try:
        with _connect(settings, 10) as conn, db.transaction(conn, 10) as cur:
            cur.execute(db.compose(f"{SQL}{statement}", _tables(settings)), params)
            rows = [_jsonable(row) for row in cur.fetchall()]
    except psycopg.errors.UndefinedTable:  # no run has created the history yet
        return [], 0
    total = int(rows[0].pop("total")) if rows else 0
    for row in rows[1:]:
        row.pop("total")
    return rows, total


@app.get("/runs", dependencies=[_authorized()])
def runs(limit: Limit = 50, offset: Offset = 0) -> dict[str, Any]:
    """The run history, newest first."""
    items, total = _page("list_runs.sql", {"limit": limit, "offset": offset})
    return {"runs": items, "total": total, "limit": limit, "offset": offset}


@app.get("/changes", dependencies=[_authorized()])
def changes(
    device_id: str | None = None,
    parameter_id: str | None = None,
    run_id: str | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """The change log, newest first, filtered by device, parameter and/or run."""
    params = {"device_id": device_id, "parameter_id": parameter_id, "run_id": run_id, "limit": limit, "offset": offset}
    items, total = _page("list_changes.sql", params)
    return {"changes": items, "total": total, "limit": limit, "offset": offset}


@app.get("/", response_class=HTMLResponse, dependencies=[_authorized()])
def status_page() -> HTMLResponse:
    """Recent runs as a table and a chart of inserted / deleted / updated rows per run."""
    items, total = _page("list_runs.sql", {"limit": 48, "offset": 0})
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
