"""The benchmark fleet: generated inside PostgreSQL, indexed, and its drifted target saved for every run."""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import psycopg
from common import ADMIN_URL, SQL_DIR, WINDOW_END, database_url, load_sql
from pg import connect
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from device_sync import migrations
from device_sync.config import Settings

TIME_INDEX = "measurements_time_idx"
COMPOSITE_INDEX = "measurements_device_parameter_time_idx"
INDEX_COLUMNS = {TIME_INDEX: ("time",), COMPOSITE_INDEX: ("device_id", "parameter_id", "time")}


@dataclass(frozen=True)
class FleetSpec:
    """The settings of bench/sql/generate_fleet.sql (see its header)."""

    devices: int
    parameters: int = 200
    per_device: int = 20
    step_minutes: int = 1
    hours: int = 24
    window_end: datetime = WINDOW_END

    def settings(self) -> dict[str, str]:
        values = asdict(self)
        values["window_end"] = self.window_end.isoformat()
        return {name: str(value) for name, value in values.items()}


def generator_digest() -> str:
    """Identifies the generator's SQL, so a reused fleet is known to come from the same generator."""
    digest = hashlib.sha256()
    for name in ("generate_fleet.sql", "drift_target.sql"):
        digest.update((SQL_DIR / name).read_bytes())
    return digest.hexdigest()[:16]


def recreate_database(name: str) -> None:
    with connect(ADMIN_URL) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def reusable(database: str, spec: FleetSpec) -> dict[str, Any] | None:
    """The bench.fleet row of ``database`` when it holds exactly this fleet from this generator, else None."""
    try:
        with connect(database_url(database)) as conn:
            present = conn.execute(
                "SELECT to_regclass('bench.fleet') IS NOT NULL AND to_regclass('bench.target_snapshot') IS NOT NULL"
            ).fetchone()
            if not present or not present[0]:
                return None
            info = conn.cursor(row_factory=dict_row).execute("SELECT * FROM bench.fleet").fetchone()
    except psycopg.OperationalError:
        return None
    if info is None or info["spec"] != spec.settings() or info["generator"] != generator_digest():
        return None
    return dict(info)


def generate(database: str, spec: FleetSpec) -> dict[str, Any]:
    """Drop and re-create ``database`` with the fleet (no index yet), VACUUM ANALYZE it, save the target."""
    recreate_database(database)
    with connect(database_url(database)) as conn:
        conn.execute("SET synchronous_commit = on")
        for name, value in spec.settings().items():
            conn.execute("SELECT set_config(%s, %s, false)", (f"device_sync_bench.{name}", value))
        started = time.perf_counter()
        conn.execute(load_sql("generate_fleet"))
        conn.commit()
        migrations.migrate(conn, Settings())  # the target table exactly as the sync creates it
        conn.execute(load_sql("drift_target"))
        generation_seconds = time.perf_counter() - started
        started = time.perf_counter()
        conn.execute("VACUUM ANALYZE iot_data.measurements")
        vacuum_seconds = time.perf_counter() - started
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM iot_data.measurements), (SELECT count(*) FROM iot_data.device_parameters),"
            " pg_relation_size('iot_data.measurements')"
        ).fetchone()
        assert counts is not None
        info: dict[str, Any] = {
            "spec": spec.settings(),
            "generator": generator_digest(),
            "measurement_rows": int(counts[0]),
            "target_rows": int(counts[1]),
            "measurements_bytes": int(counts[2]),
            "generation_seconds": generation_seconds,
            "vacuum_analyze_seconds": vacuum_seconds,
        }
        conn.execute(load_sql("bench_schema"))
        conn.execute(
            "INSERT INTO bench.fleet (spec, generator, measurement_rows, target_rows, measurements_bytes,"
            " generation_seconds, vacuum_analyze_seconds) VALUES (%(spec)s, %(generator)s, %(measurement_rows)s,"
            " %(target_rows)s, %(measurements_bytes)s, %(generation_seconds)s, %(vacuum_analyze_seconds)s)",
            {**info, "spec": Jsonb(info["spec"])},
        )
    return info


def build_index(database: str, index: str) -> dict[str, Any]:
    """(Re)build one index of iot_data.measurements with 1 GB of maintenance_work_mem, then VACUUM ANALYZE."""
    columns = sql.SQL(", ").join(sql.Identifier(column) for column in INDEX_COLUMNS[index])
    with connect(database_url(database)) as conn:
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier("iot_data", index)))
        started = time.perf_counter()
        conn.execute(sql.SQL("CREATE INDEX {} ON iot_data.measurements ({})").format(sql.Identifier(index), columns))
        build_seconds = time.perf_counter() - started
        started = time.perf_counter()
        conn.execute("VACUUM ANALYZE iot_data.measurements")
        vacuum_seconds = time.perf_counter() - started
        size = conn.execute("SELECT pg_relation_size(%s::regclass)", (f"iot_data.{index}",)).fetchone()
        assert size is not None
        info = {
            "index_name": index,
            "build_seconds": build_seconds,
            "vacuum_analyze_seconds": vacuum_seconds,
            "index_bytes": int(size[0]),
        }
        conn.execute(
            "INSERT INTO bench.index_builds (index_name, build_seconds, vacuum_analyze_seconds, index_bytes)"
            " VALUES (%(index_name)s, %(build_seconds)s, %(vacuum_analyze_seconds)s, %(index_bytes)s)"
            " ON CONFLICT (index_name) DO UPDATE SET build_seconds = excluded.build_seconds,"
            " vacuum_analyze_seconds = excluded.vacuum_analyze_seconds, index_bytes = excluded.index_bytes,"
            " built_at = now()",
            info,
        )
    return {**info, "reused": False}


def recorded_index(database: str, index: str) -> dict[str, Any] | None:
    """The recorded build of ``index`` when the index is still there (for --reuse)."""
    with connect(database_url(database)) as conn:
        present = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"iot_data.{index}",)).fetchone()
        if not present or not present[0]:
            return None
        row = (
            conn.cursor(row_factory=dict_row)
            .execute(
                "SELECT index_name, build_seconds, vacuum_analyze_seconds, index_bytes FROM bench.index_builds"
                " WHERE index_name = %s",
                (index,),
            )
            .fetchone()
        )
    return {**row, "reused": True} if row else None


def drop_index(database: str, index: str) -> None:
    with connect(database_url(database)) as conn:
        conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier("iot_data", index)))
        conn.execute("DELETE FROM bench.index_builds WHERE index_name = %s", (index,))
        conn.execute("VACUUM ANALYZE iot_data.measurements")


def restore_target(database: str) -> None:
    """The untimed reset before every run: the drifted target, an empty history, fresh statistics."""
    with connect(database_url(database)) as conn:
        conn.execute(load_sql("restore_target"))
        conn.execute("VACUUM ANALYZE iot_data.device_parameters")
        conn.execute("CHECKPOINT")


def target_checksum(database: str) -> dict[str, Any]:
    with connect(database_url(database)) as conn:
        row = conn.cursor(row_factory=dict_row).execute(load_sql("target_checksum")).fetchone()
    assert row is not None
    return dict(row)
