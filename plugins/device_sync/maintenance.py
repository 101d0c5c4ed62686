"""device_sync_maintenance: the package's migrations applied from inside Airflow, for platforms without a shell.

On Amazon MWAA (or any Airflow where nobody has a shell beside the workers) the admin triggers the DAG
``device_sync_maintenance`` by hand, from the UI or the REST API, with the Airflow connection of the tables'
owner in its conf::

    {"conn_id": "device_sync_owner"}             apply the missing migrations
    {"conn_id": "device_sync_owner", "check_only": true}   only report the schema version

It is off by default: unscheduled, paused when it first appears, and it has no default connection, so it does
nothing until an admin names one. It runs the same code as ``device-sync-migrate`` (the wheel's console script):
each migration once, in its own transaction under the writers' lock, recorded in the staging schema's
``schema_version``.
"""

from __future__ import annotations

import logging
from typing import Any

from device_sync import db, migrations
from device_sync.compat import AirflowFailException, AirflowNotFoundException
from device_sync.config import load_settings

log = logging.getLogger(__name__)

DAG_ID = "device_sync_maintenance"
TASK_ID = "apply_migrations"


def apply_migrations(**context: Any) -> dict[str, Any]:
    """Apply device-sync's missing migrations as the owner connection named in the run's conf (``conn_id``);
    with ``check_only`` only report the schema version. Fails at once (no retries): a missing connection, a
    role that may not change the tables, or a database newer than this package need an admin, not a retry."""
    import psycopg

    params = context["params"]
    conn_id, check_only = params.get("conn_id"), bool(params.get("check_only"))
    if not conn_id:
        raise AirflowFailException(
            f"{DAG_ID} needs the Airflow connection of the tables' owner: trigger it with conf "
            '{"conn_id": "<connection id>"}'
        )
    settings = load_settings()
    try:
        conn = db.connect(conn_id, connect_timeout=10, attempts=3)
    except AirflowNotFoundException as error:
        raise AirflowFailException(f"the Airflow connection {conn_id!r} does not exist: {error}") from error
    with conn:
        before = migrations.schema_state(conn, settings)
        if check_only:
            summary: dict[str, Any] = {"version": before.version, "status": before.status, "applied": []}
        else:
            try:
                applied = migrations.migrate(conn, settings)
            except psycopg.errors.InsufficientPrivilege as error:
                raise AirflowFailException(
                    f"{error}: {conn_id!r} is not the owner of iot_data and {settings.staging_schema} (nothing of the "
                    "failed migration was kept; earlier ones stay applied)"
                ) from error
            after = migrations.schema_state(conn, settings)
            summary = {"version": after.version, "status": after.status, "applied": applied}
    summary["package_version"] = migrations.newest()
    log.info("%s: %s -> %s", DAG_ID, before.describe(), summary)
    if summary["status"] == "ahead":
        raise AirflowFailException(
            f"the database's device-sync schema (version {summary['version']}) is newer than this package's "
            f"({summary['package_version']}): deploy the newer package"
        )
    return summary
