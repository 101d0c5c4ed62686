"""Shared by the step tests (integration tests of the sync's SQL semantics against a real PostgreSQL, no mocks).

Each test crafts a few source rows, runs the sync (or one step of it) and asserts exactly the behaviour its
name states. Every statement the tests themselves run goes through ``source_data.execute``/``query``, which
wrap it in its own committed transaction, so the sync's transactions are never nested inside an open one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from device_sync import sync
from device_sync.config import Settings, load_settings
from device_sync.staging import StagingTables
from device_sync.window import Window
from source_data import query

END = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
LOOKBACK = 60
START = END - timedelta(minutes=LOOKBACK)
INSIDE = END - timedelta(minutes=30)
INJECTION = "'); DROP TABLE iot_data.measurements; --"
RUN_ID = "run-x"


def staging_for(settings: Settings, run_id: str = RUN_ID) -> StagingTables:
    return StagingTables.for_run(settings.staging_schema, "dag", run_id)


def run_sync(
    conn: psycopg.Connection[Any],
    settings: Settings | None = None,
    *,
    end: datetime = END,
    lookback: int = LOOKBACK,
    run_id: str = RUN_ID,
) -> dict[str, Any]:
    settings = settings or load_settings()
    return sync.sync_once(conn, settings, staging_for(settings, run_id), Window.ending_at(end, lookback))


def ensure_target(conn: psycopg.Connection[Any]) -> None:
    sync.ensure_schema(conn, load_settings())


def target_xmins(conn: psycopg.Connection[Any]) -> dict[tuple[str, str], str]:
    rows = query(conn, "SELECT device_id, parameter_id, xmin::text FROM iot_data.device_parameters")
    return {(d, p): x for d, p, x in rows}


def staging_tables(conn: psycopg.Connection[Any], schema: str, prefix: str) -> list[str]:
    rows = query(
        conn,
        "SELECT tablename FROM pg_tables WHERE schemaname = %s AND starts_with(tablename, %s) ORDER BY 1",
        (schema, prefix),
    )
    return [name for (name,) in rows]
