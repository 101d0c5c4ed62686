"""What the numbers were measured on: the machine, the PostgreSQL server and the code."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from common import ADMIN_URL, REPO
from pg import connect

SERVER_SETTINGS = (
    "shared_buffers",
    "work_mem",
    "maintenance_work_mem",
    "effective_cache_size",
    "max_parallel_workers_per_gather",
    "jit",
    "random_page_cost",
    "synchronous_commit",
)
MEASURED_CODE = ("plugins/device_sync/*.py", "include/sql/device_parameter_sync/*/*.sql", "dags/*.py")


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _ram_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024**2
    return 0.0


def machine_info() -> dict[str, Any]:
    with connect(ADMIN_URL) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        settings = {name: conn.execute(f"SHOW {name}").fetchone() for name in SERVER_SETTINGS}
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": _ram_gib(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgres_version": str(version[0]) if version else "unknown",
        **{name: str(row[0]) if row else None for name, row in settings.items()},
    }


def _git(*args: str) -> str:
    result = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30, check=False)
    return result.stdout.strip()


def code_identity() -> dict[str, Any]:
    """The commit, the files changed since it, and a digest of the measured code as it was on disk."""
    digest = hashlib.sha256()
    for pattern in MEASURED_CODE:
        for path in sorted(REPO.glob(pattern)):
            digest.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes())
    return {
        "git_head": _git("rev-parse", "HEAD"),
        "uncommitted_changes": _git("status", "--porcelain", "--", "plugins", "include", "dags").splitlines(),
        "measured_code_sha256": digest.hexdigest(),
    }
