"""`make deploy STAGE=dev|prod`: deploy device-sync to Amazon MWAA for one stage (device_sync/deploy.py).

    python scripts/deploy.py --stage dev|prod [--dist DIR | --wheel PATH] [--dags-only] [--dry-run]
                             [--alarm-action ARN ...]

Uploads the DAG files, plugins.zip (the wheel), a requirements.txt that MWAA's constraints of the environment's
Airflow version accept, and startup.sh to DEVICE_SYNC_DEPLOY_BUCKET, updates DEVICE_SYNC_MWAA_ENVIRONMENT, sets
the Airflow pool and deploys the stage's alarms; only what changed. Where only the wheel is installed,
``device-sync-deploy`` is the same command.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins"))

from device_sync.deploy import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
