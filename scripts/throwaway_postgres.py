"""A throwaway PostgreSQL cluster from the machine's PostgreSQL binaries: a fresh data directory, a free
loopback port, trust authentication, any extra server settings (``shared_preload_libraries=timescaledb``,
say); stopped and deleted afterwards. Used by ``make demo`` when no server is reachable, and by the
TimescaleDB tests and benchmark, which need a server with the extension preloaded (the machine's own server
is never restarted or reconfigured).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

START_TIMEOUT_SECONDS = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def postgres_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if not found:
        raise SystemExit(f"No PostgreSQL found: set DEVICE_SYNC_DATABASE_URL or install PostgreSQL ({name} missing).")
    return found


@contextmanager
def throwaway_cluster(settings: Mapping[str, str] | None = None, prefix: str = "device-sync-pg-") -> Iterator[str]:
    """A temporary PostgreSQL cluster on a free port, run as the postgres user when we are root; its admin URL.
    ``settings`` are extra server settings (``-c name=value``)."""
    data = Path(tempfile.mkdtemp(prefix=prefix))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(data, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    subprocess.run(
        [*as_user, postgres_bin("initdb"), "-D", str(data / "db"), "-A", "trust", "-U", "postgres"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    pg_ctl = postgres_bin("pg_ctl")
    options = [f"-c {name}={value}" for name, value in (settings or {}).items()]
    started = subprocess.run(
        [
            *as_user,
            pg_ctl,
            "-D",
            str(data / "db"),
            "-l",
            str(data / "log"),
            "-w",
            "-t",
            str(START_TIMEOUT_SECONDS),
            "-o",
            " ".join([f"-p {port} -k {data} -c listen_addresses=127.0.0.1", *options]),
            "start",
        ],
        check=False,
        stdout=subprocess.DEVNULL,
    )
    if started.returncode != 0:
        log = (data / "log").read_text(errors="replace")[-2000:] if (data / "log").exists() else ""
        shutil.rmtree(data, ignore_errors=True)
        raise RuntimeError(f"the throwaway PostgreSQL server did not start:\n{log}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, pg_ctl, "-D", str(data / "db"), "-m", "fast", "stop"], check=False, stdout=subprocess.DEVNULL
        )
        shutil.rmtree(data, ignore_errors=True)
