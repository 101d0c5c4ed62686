"""One sync in a fresh process, like an Airflow task process: prints its peak RSS as JSON.

    python bench/task_process.py --conn-id device_sync_bench_sparse --lookback-minutes 1440

The parent (bench/run.py) sets the Airflow environment (AIRFLOW_HOME, AIRFLOW_CONN_*). The process imports
``device_sync.tasks`` (and so Airflow's task SDK) as a task process would, then runs every step of one DAG run
in this process. The peak RSS (VmHWM) is what matters: it must not grow with the number of pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins"))

from variants import run_ours  # noqa: E402

from device_sync import tasks  # noqa: E402, F401  (what a task process imports)
from device_sync.config import load_settings  # noqa: E402


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conn-id", required=True)
    parser.add_argument("--window-end", type=datetime.fromisoformat, required=True)
    parser.add_argument("--lookback-minutes", type=int, required=True)
    args = parser.parse_args()
    os.environ["DEVICE_SYNC_POSTGRES_CONN_ID"] = args.conn_id
    settings = load_settings()
    rss_after_imports = status_kb("VmRSS")
    result = run_ours(settings, args.window_end, args.lookback_minutes)
    report = {
        "rss_after_imports_kb": rss_after_imports,
        "peak_rss_kb": status_kb("VmHWM"),
        "ru_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "seconds": result.seconds,
        "observed_pairs": result.info["observed_pairs"],
        "method": result.info["method"],
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
