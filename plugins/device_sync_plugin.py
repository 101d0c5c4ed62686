"""Registers device-sync's operator endpoints with ``airflow api-server`` and links them in the UI.

Served under ``/device-sync``: ``/health`` (public, for load balancers), ``/runs``, ``/changes`` and the
status page ``/`` (these three need an Airflow login that may read the DAG's runs). A root middleware
refuses REST triggers of the DAG whose window would end in the future (:mod:`device_sync.trigger_guard`).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from device_sync.api import app
from device_sync.trigger_guard import RefuseFutureTriggers

URL_PREFIX = "/device-sync"


class DeviceSyncPlugin(AirflowPlugin):
    name = "device_sync"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "device-sync operations"}]
    fastapi_root_middlewares = [
        {"middleware": RefuseFutureTriggers, "args": [], "kwargs": {}, "name": "device-sync future-window refusal"}
    ]
    external_views = [
        {
            "name": "Device sync status",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "category": "browse",
            "url_route": "device-sync",
        }
    ]
