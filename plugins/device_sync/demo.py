"""The demo fleet: sources and a drifted target generated inside PostgreSQL (used by the demo and tests)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from device_sync import db


def load_demo_fleet(
    conn: psycopg.Connection[Any],
    window_end: datetime,
    *,
    devices: int = 400,
    parameters: int = 60,
    per_device: int = 12,
    step_minutes: int = 5,
) -> None:
    """Replace the three source tables and the target with a demo fleet whose day ends at ``window_end``."""
    settings = {
        "window_end": window_end.isoformat(),
        "devices": str(devices),
        "parameters": str(parameters),
        "per_device": str(per_device),
        "step_minutes": str(step_minutes),
    }
    with conn.transaction(), conn.cursor() as cur:
        for name, value in settings.items():
            cur.execute("SELECT set_config(%s, %s, true)", (f"device_sync_demo.{name}", value))
        cur.execute(db.load_sql("demo/load_demo_fleet.sql"))
