"""Registers device-sync's operator endpoints with ``airflow api-server`` and links them in the UI.

Served under ``/device-sync``: ``/health`` (public, for load balancers), ``/runs``, ``/changes`` and the
status page ``/`` (these three need an Airflow login that may read the DAG's runs).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from device_sync.api import app

URL_PREFIX = "/device-sync"


class DeviceSyncPlugin(AirflowPlugin):
    name = "device_sync"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "device-sync operations"}]
    external_views = [
        {
            "name": "Device sync status",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "category": "browse",
            "url_route": "device-sync",
        }
    ]
