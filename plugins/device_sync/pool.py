"""The Airflow pool of the tasks that query the IoT database.

Every step that opens a session on the IoT database (discover, the aggregation shards, resolve, compute,
apply, cleanup) runs in the pool :data:`NAME`, so that shards, backfills and manual runs spread over many
workers never hold more than its slots of database sessions at once. Airflow does not create pools: the
local stacks and the Compose file create it with :func:`create_command` (``DEVICE_SYNC_DB_POOL_SLOTS``
slots); on another Airflow an operator runs that command once, or, on Amazon MWAA, ``device-sync-deploy`` sets
it through the MWAA REST API. A missing pool would leave the tasks queued
without a word, so the plugin says so instead: ``/device-sync/health`` answers 503 and a REST trigger of the
DAG is refused with :func:`missing_message` (and Airflow lists a DAG warning "non-existent pools").
"""

from __future__ import annotations

import shlex

NAME = "device_sync_db"
DESCRIPTION = "device-sync: tasks that query the IoT database"


def create_command(slots: int) -> list[str]:
    """The Airflow CLI call that creates (or resizes) the pool; idempotent."""
    return ["airflow", "pools", "set", NAME, str(slots), DESCRIPTION]


def missing_message(slots: int) -> str:
    return (
        f"The Airflow pool {NAME} does not exist, so the device-sync tasks that query the IoT database would "
        f"wait in the queue forever. Create it once (DEVICE_SYNC_DB_POOL_SLOTS={slots} slots): "
        f"{shlex.join(create_command(slots))}; without a shell (Amazon MWAA): Admin > Pools in the UI, or "
        f"device-sync-deploy with DEVICE_SYNC_MWAA_ENVIRONMENT set, which sets it through the MWAA REST API"
    )


def exists() -> bool:
    """Whether the pool exists in Airflow's metadata database (api-server side: the ORM is available there)."""
    from airflow.models.pool import Pool

    return Pool.get_pool(NAME) is not None
