"""The Airflow plugin of device-sync, registered by the installed distribution's ``airflow.plugins`` entry point.

It mounts the operators' endpoints (:mod:`device_sync.api`) under ``/device-sync`` in ``airflow api-server``
(``/health`` public; ``/runs``, ``/changes`` and the status page ``/`` need an Airflow login that may read the
DAG's runs), links the status page in the UI, and installs a root middleware that refuses REST triggers of the
DAG whose window would end in the future (:mod:`device_sync.trigger_guard`), and a scheduler listener that fails
a run dated in the future that exists anyway (:mod:`device_sync.future_runs`).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from device_sync.api import app
from device_sync.future_runs import FailFutureRuns
from device_sync.trigger_guard import RefuseFutureTriggers

NAME = "device_sync"
URL_PREFIX = "/device-sync"


class DeviceSyncPlugin(AirflowPlugin):
    name = NAME
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "device-sync operations"}]  # noqa: RUF012
    fastapi_root_middlewares = [  # noqa: RUF012
        {"middleware": RefuseFutureTriggers, "args": [], "kwargs": {}, "name": "device-sync future-window refusal"}
    ]
    listeners = [FailFutureRuns()]  # noqa: RUF012
    external_views = [  # noqa: RUF012
        {
            "name": "Device sync status",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "category": "browse",
            "url_route": "device-sync",
        }
    ]
