"""device_sync_maintenance: device-sync's migrations from inside Airflow (off by default: manual, paused).

The task graph only; the callable and what it does are in device_sync.maintenance, which is also the DAG's
doc_md. Trigger it with conf {"conn_id": "<the tables' owner's Airflow connection>"}.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import DAG, Param, task

from device_sync import maintenance

with DAG(
    dag_id=maintenance.DAG_ID,
    doc_md=maintenance.__doc__,
    schedule=None,
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    is_paused_upon_creation=True,
    max_active_runs=1,
    params={
        "conn_id": Param(
            None,
            type=["null", "string"],
            maxLength=250,
            title="Owner connection",
            description="Airflow connection of the owner of iot_data and of the staging schema (the admin).",
        ),
        "check_only": Param(False, type="boolean", title="Check only", description="Report the schema version."),
    },
    tags=["device-sync", "maintenance"],
    default_args={"owner": "iot-data-platform", "retries": 0},
) as device_sync_maintenance_dag:
    task(maintenance.apply_migrations, task_id=maintenance.TASK_ID, multiple_outputs=False)()


if __name__ == "__main__":
    device_sync_maintenance_dag.test()
