"""What every part of the benchmark shares: paths, database URLs, the Airflow environment, progress lines."""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from airflow_stack import airflow_uri  # noqa: E402  (one libpq-URL-to-Airflow-URI helper, shared with make airflow)

BENCH = REPO / "bench"
SQL_DIR = BENCH / "sql"
PYTHON = sys.executable

ADMIN_URL = os.environ.get("DEVICE_SYNC_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
MAIN_DATABASE = "device_sync_bench"
SPARSE_DATABASE = "device_sync_bench_sparse"
# The Airflow connection id of each benchmark database (AIRFLOW_CONN_<ID upper-cased>).
CONN_IDS = {MAIN_DATABASE: "device_sync_bench", SPARSE_DATABASE: "device_sync_bench_sparse"}

WINDOW_END = datetime(2026, 11, 30, tzinfo=UTC)

_STARTED = time.perf_counter()


def say(message: str) -> None:
    """One progress line, prefixed with the seconds since the benchmark started."""
    print(f"[{time.perf_counter() - _STARTED:7.1f} s] {message}", flush=True)


def database_url(name: str) -> str:
    return psycopg.conninfo.make_conninfo(ADMIN_URL, dbname=name)


def airflow_environment(home: Path) -> dict[str, str]:
    """The environment of an Airflow task process for the benchmark: a throwaway AIRFLOW_HOME, the project's
    dags/ and plugins/, and one Airflow connection per benchmark database."""
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "DEVICE_SYNC_POSTGRES_CONN_ID": CONN_IDS[MAIN_DATABASE],
    }
    for database, conn_id in CONN_IDS.items():
        env[f"AIRFLOW_CONN_{conn_id.upper()}"] = airflow_uri(database_url(database))
    return env


@cache
def load_sql(name: str) -> str:
    """The text of ``bench/sql/<name>.sql``."""
    return (SQL_DIR / f"{name}.sql").read_text(encoding="utf-8")


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def rounded(value: Any, digits: int = 4) -> Any:
    """Floats rounded for the JSON report, recursively through dicts and lists."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, Mapping):
        return {key: rounded(item, digits) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(item, digits) for item in value]
    return value
