"""`make migrate`: bring device-sync's own tables to this checkout's schema version (include/sql/migrations/).

Run it as the admin (the owner of iot_data and of the staging schema), with the DAG's DEVICE_SYNC_* environment:

    python scripts/migrate.py                      # the DAG's Airflow connection (DEVICE_SYNC_POSTGRES_CONN_ID)
    python scripts/migrate.py --database-url postgresql://admin@db.example:5432/iot
    python scripts/migrate.py --check              # report only; exit 1 when migrations are missing

It prints what it applied, or "already current at N"; running it again applies nothing. Where only the wheel is
installed, ``python -m device_sync.migrations`` is the same command.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins"))

from device_sync.migrations import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
