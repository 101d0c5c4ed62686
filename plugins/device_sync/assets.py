"""The Airflow Assets of device-sync: the table it keeps (the DAG's outlet) and the tables it reads (inlets).

URIs in the postgres provider's form, ``postgres://<host>:<port>/<database>/<schema>/<table>``, the database
part from ``DEVICE_SYNC_ASSET_DATABASE_URI`` (default ``postgres://iot-db:5432/iot``). A downstream DAG
schedules on the target's URI, for example::

    from airflow.sdk import Asset, dag

    @dag(schedule=[Asset("postgres://iot-db:5432/iot/iot_data/device_parameters")])
    def refresh_device_dashboards(): ...

An event is emitted only by a run that applied at least one change (task ``announce_change``), with extra
``run_id``, ``window_start``, ``window_end``, ``inserted``, ``deleted``, ``updated``.
"""

from __future__ import annotations

from airflow.sdk import Asset

from device_sync.config import Settings

TARGET_TABLE = "iot_data.device_parameters"


def _asset(settings: Settings, table: str) -> Asset:
    schema, name = table.split(".")
    return Asset(uri=f"{settings.asset_database_uri}/{schema}/{name}")


def target(settings: Settings) -> Asset:
    """``iot_data.device_parameters``: the outlet; its events say that the table changed."""
    return _asset(settings, TARGET_TABLE)


def devices(settings: Settings) -> Asset:
    return _asset(settings, "iot_data.redshift_devices")


def parameters(settings: Settings) -> Asset:
    return _asset(settings, "iot_data.timescale_parameters")


def measurements(settings: Settings) -> Asset:
    return _asset(settings, settings.measurements_table)
