"""Parse the DAG file the way Airflow's DAG processor does, in a fresh process: prints the seconds as JSON.

Airflow itself is imported first (the DAG processor has it loaded already); then DagBag parses
dags/device_parameter_sync.py, which imports device_sync and reads its settings. The parent (bench/run.py)
sets AIRFLOW_HOME, AIRFLOW__CORE__DAGS_FOLDER and AIRFLOW__CORE__PLUGINS_FOLDER.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DAG_FILE = REPO / "dags" / "device_parameter_sync.py"


def main() -> None:
    started = time.perf_counter()
    import airflow  # noqa: F401  (Airflow's own import, excluded from the parse time)
    from airflow.dag_processing.dagbag import DagBag

    airflow_import_seconds = time.perf_counter() - started
    plugins = str(REPO / "plugins")
    if plugins not in sys.path:  # Airflow puts the plugins folder on sys.path; make sure, whatever the config
        sys.path.append(plugins)
    started = time.perf_counter()
    bag = DagBag(dag_folder=str(DAG_FILE))
    parse_seconds = time.perf_counter() - started
    stats = list(getattr(bag, "dagbag_stats", []))  # one file: DAG_FILE
    report = {
        "airflow_import_seconds": airflow_import_seconds,
        "parse_seconds": parse_seconds,
        "dagbag_stats_seconds": stats[0].duration.total_seconds() if stats else None,
        "dags": sorted(bag.dag_ids),
        "tasks": sum(len(dag.tasks) for dag in bag.dags.values()),
        "import_errors": {str(path): str(error) for path, error in bag.import_errors.items()},
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
