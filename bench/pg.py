"""The PostgreSQL server around the benchmark: admin statements, cold caches, WAL and row-write accounting."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from common import ADMIN_URL, say

CONNECT_TIMEOUT_SECONDS = 5
RESTART_WAIT_SECONDS = 60
RESTART_COMMAND_TIMEOUT_SECONDS = 120


def connect(url: str, *, autocommit: bool = True) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT_SECONDS)


def scalar(url: str, statement: str, params: tuple[Any, ...] | None = None) -> Any:
    with connect(url) as conn:
        row = conn.execute(statement, params).fetchone()
    return row[0] if row else None


def wait_until_up(url: str, timeout_seconds: float = RESTART_WAIT_SECONDS) -> float:
    """Wait until a connection succeeds (bounded); return the seconds waited."""
    started = time.perf_counter()
    while True:
        try:
            with connect(url) as conn:
                conn.execute("SELECT 1")
            return time.perf_counter() - started
        except psycopg.OperationalError:
            if time.perf_counter() - started > timeout_seconds:
                raise
            time.sleep(0.5)


@dataclass
class ColdCache:
    """How cold runs empty the caches: a restart of the PostgreSQL cluster (shared buffers) and the kernel's
    page cache. ``reason`` says why cold runs are off when ``enabled`` is false. ``wait_budget_seconds`` is
    the time, over the whole benchmark, that cold runs may wait for other databases' sessions to end."""

    enabled: bool
    forced: bool
    cluster: str | None
    reason: str | None
    own_databases: tuple[str, ...]
    wait_budget_seconds: float = 120.0

    @classmethod
    def detect(cls, requested: bool | None, own_databases: tuple[str, ...]) -> ColdCache:
        """``requested``: True (--cold), False (--no-cold) or None (auto: on when possible)."""
        cluster = str(scalar(ADMIN_URL, "SHOW cluster_name") or "") or None
        if requested is False:
            return cls(False, False, cluster, "--no-cold given", own_databases)
        problems = []
        if os.geteuid() != 0:
            problems.append("not running as root (cannot drop the page cache)")
        if not shutil.which("pg_ctlcluster"):
            problems.append("pg_ctlcluster not found")
        if not cluster or not re.fullmatch(r"\d+/[\w-]+", cluster):
            problems.append(f"cluster_name {cluster!r} is not a pg_ctlcluster VERSION/NAME")
        if problems:
            if requested:
                raise SystemExit(f"--cold given but cold runs are impossible: {'; '.join(problems)}")
            return cls(False, False, cluster, "; ".join(problems), own_databases)
        return cls(True, bool(requested), cluster, None, own_databases)

    def other_sessions(self) -> list[str]:
        """Other databases in use, where a restart would break someone's work: those with client sessions, and
        the per-session databases of a running test suite (device_sync_test_*, which may be between two
        connections right now)."""
        with connect(ADMIN_URL) as conn:
            rows = conn.execute(
                "SELECT coalesce(datname, '?') FROM pg_stat_activity"
                " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
                "   AND coalesce(datname, '') <> ALL (%s)"
                " UNION SELECT datname FROM pg_database WHERE datname LIKE 'device\\_sync\\_test\\_%%'",
                (["postgres", *self.own_databases],),
            ).fetchall()
        return sorted(str(row[0]) for row in rows)

    def empty(self) -> tuple[bool, str | None]:
        """Restart PostgreSQL and drop the page cache. Returns (done, reason when not done).

        When other databases have client sessions (someone runs tests), wait for them within what is left of
        the wait budget; in auto mode give up then and say so, with --cold restart anyway.
        """
        if not self.enabled or self.cluster is None:
            return False, self.reason
        others = self.other_sessions()
        if others and self.wait_budget_seconds > 0:
            say(f"  cold run: waiting up to {self.wait_budget_seconds:.0f} s for sessions in {others} to end")
        while others and self.wait_budget_seconds > 0:
            time.sleep(2)
            self.wait_budget_seconds -= 2
            others = self.other_sessions()
        if others and not self.forced:
            return False, f"other databases were in use ({', '.join(others)}); PostgreSQL was not restarted"
        version, name = self.cluster.split("/")
        subprocess.run(["pg_ctlcluster", version, name, "restart"], check=True, timeout=RESTART_COMMAND_TIMEOUT_SECONDS)
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        wait_until_up(ADMIN_URL)
        return True, None


@dataclass(frozen=True)
class WriteMark:
    """A point to measure WAL and row writes from: the WAL insert position and the target's tuple counters."""

    lsn: str
    tuples_written: int


TARGET_TABLE_STATS = """
SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)
FROM pg_stat_user_tables WHERE schemaname = 'iot_data' AND relname = 'device_parameters'
"""


def write_mark(url: str) -> WriteMark:
    with connect(url) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        written = conn.execute(TARGET_TABLE_STATS).fetchone()
        lsn = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert written is not None and lsn is not None
    return WriteMark(lsn=str(lsn[0]), tuples_written=int(written[0]))


def writes_since(url: str, mark: WriteMark, database: str) -> dict[str, Any]:
    """Rows written to iot_data.device_parameters and WAL bytes since ``mark``.

    The writer's statistics reach the shared counters when its session ends or goes idle (it should have
    called pg_stat_force_next_flush() and disconnected): wait for them, bounded. WAL is cluster-wide, so the
    bytes of this database's transactions are also counted on their own with pg_walinspect (other databases
    on the server, e.g. a test suite, write WAL too).
    """
    time.sleep(0.6)
    end = write_mark(url)
    with connect(url) as conn:
        wal_bytes = conn.execute("SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)", (end.lsn, mark.lsn)).fetchone()
    assert wal_bytes is not None
    wal = wal_of_database(url, mark.lsn, end.lsn, database)
    return {
        "rows_written": end.tuples_written - mark.tuples_written,
        "wal_bytes_cluster": int(wal_bytes[0]),
        "wal_bytes_this_database": wal["bytes"] if wal else None,
        "wal_this_database": wal,
    }


WAL_OF_DATABASE = """
WITH records AS (
    SELECT xid, resource_manager, record_type, record_length, fpi_length,
           substring(block_ref FROM 'rel \\d+/(\\d+)/')::oid AS database_oid,
           substring(block_ref FROM 'rel \\d+/\\d+/(\\d+)')::oid AS filenode
    FROM pg_get_wal_records_info(%(start)s::pg_lsn, %(end)s::pg_lsn)
), this_database AS (
    SELECT oid FROM pg_database WHERE datname = %(database)s
), ours AS (
    SELECT DISTINCT xid FROM records WHERE database_oid = (SELECT oid FROM this_database) AND xid <> '0'
)
SELECT resource_manager, record_type,
       CASE WHEN filenode IS NULL THEN NULL
            ELSE coalesce(pg_filenode_relation(0, filenode)::text, 'dropped relation') END AS relation,
       count(*) AS records, sum(record_length) AS bytes, sum(fpi_length) AS fpi_bytes
FROM records
WHERE database_oid = (SELECT oid FROM this_database) OR xid IN (SELECT xid FROM ours)
GROUP BY 1, 2, 3
ORDER BY bytes DESC
"""


def _category(relation: str | None) -> str:
    if relation is None:
        return "commit and other records without a relation"
    if relation.startswith(("iot_data.device_parameters", "iot_data.idx_device_parameters")):
        return "target table and its indexes"
    if relation.startswith("pg_"):
        return "system catalogs (creating and dropping tables, ANALYZE statistics)"
    if relation == "dropped relation":
        return "tables dropped since (staging)"
    return "other tables (run history, change log, ...)"


def wal_of_database(url: str, start: str, end: str, database: str) -> dict[str, Any] | None:
    """WAL bytes (records incl. full-page images) of the transactions that touched ``database``, with a
    breakdown by category and the largest kinds of record; None when pg_walinspect is not available."""
    try:
        with connect(url) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
            deadline = time.perf_counter() + 10
            while time.perf_counter() < deadline:
                flushed = conn.execute("SELECT pg_current_wal_flush_lsn() >= %s::pg_lsn", (end,)).fetchone()
                if flushed and flushed[0]:
                    break
                time.sleep(0.2)
            rows = conn.execute(WAL_OF_DATABASE, {"start": start, "end": end, "database": database}).fetchall()
    except psycopg.Error as error:
        say(f"  pg_walinspect unavailable ({error}); reporting cluster-wide WAL only")
        return None
    categories: dict[str, int] = {}
    for _, _, relation, _, size, _ in rows:
        categories[_category(relation)] = categories.get(_category(relation), 0) + int(size)
    largest = [
        {
            "resource_manager": manager,
            "record_type": kind,
            "relation": relation,
            "records": int(records),
            "bytes": int(size),
            "fpi_bytes": int(fpi),
        }
        for manager, kind, relation, records, size, fpi in rows[:15]
    ]
    return {"bytes": sum(categories.values()), "by_category": categories, "largest": largest}
