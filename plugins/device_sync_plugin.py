"""The checkout's way in for device-sync's Airflow plugin (:mod:`device_sync.plugin`).

Installed from the wheel, the plugin registers through the distribution's ``airflow.plugins`` entry point and
needs no plugins folder. When this file sits in a plugins folder as well (the repository's layout), it exposes
the plugin only if no installed distribution registers it, so Airflow never sees it twice.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from device_sync.plugin import NAME

if not entry_points(group="airflow.plugins", name=NAME):
    from device_sync.plugin import DeviceSyncPlugin  # noqa: F401  (Airflow finds the class in this module)
