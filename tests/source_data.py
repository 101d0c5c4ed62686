"""Crafted source data and target rows for the integration tests (real PostgreSQL, no mocks)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from device_sync import sync
from device_sync.config import load_settings


def execute(conn: psycopg.Connection[Any], statement: str | sql.Composable, params: Any = None) -> None:
    with conn.transaction():
        conn.execute(statement, params)


def query(conn: psycopg.Connection[Any], statement: str | sql.Composable, params: Any = None) -> list[tuple[Any, ...]]:
    with conn.transaction():
        return conn.execute(statement, params).fetchall()


def insert_rows(
    conn: psycopg.Connection[Any], table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    statement = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        sql.Identifier(*table.split(".")),
        sql.SQL(", ").join(sql.Identifier(column) for column in columns),
        sql.SQL(", ").join(sql.Placeholder() for _ in columns),
    )
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(statement, list(rows))


def add_devices(conn: psycopg.Connection[Any], *rows: tuple[Any, Any, Any]) -> None:
    insert_rows(conn, "iot_data.redshift_devices", ("device_id", "device_name", "status"), rows)


def add_parameters(conn: psycopg.Connection[Any], *rows: tuple[Any, Any]) -> None:
    insert_rows(conn, "iot_data.timescale_parameters", ("parameter_id", "parameter_name"), rows)


def add_measurements(conn: psycopg.Connection[Any], *rows: tuple[Any, Any, Any]) -> None:
    insert_rows(
        conn, "iot_data.measurements", ("device_id", "parameter_id", "time", "value"), [(*r, 1.0) for r in rows]
    )


def add_target(conn: psycopg.Connection[Any], *rows: tuple[str, str, str, str]) -> None:
    insert_rows(
        conn, "iot_data.device_parameters", ("device_id", "device_name", "parameter_id", "parameter_name"), rows
    )


def target(conn: psycopg.Connection[Any]) -> dict[tuple[str, str], tuple[str, str]]:
    rows = query(conn, "SELECT device_id, parameter_id, device_name, parameter_name FROM iot_data.device_parameters")
    return {(d, p): (dn, pn) for d, p, dn, pn in rows}


SNAPSHOT = (
    "SELECT device_id, parameter_id, device_name, parameter_name, created_at, updated_at, xmin::text "
    "FROM iot_data.device_parameters"
)


def snapshot(conn: psycopg.Connection[Any]) -> dict[tuple[str, str], tuple[Any, ...]]:
    """Every target row with its timestamps and xmin: even a no-op rewrite of a row shows."""
    return {(row[0], row[1]): row[2:] for row in query(conn, SNAPSHOT)}


def checksum(conn: psycopg.Connection[Any], table: str) -> tuple[int, str]:
    """Row count and an md5 over every row *and its xmin*: any change to the table, even a no-op rewrite of a
    row, shows."""
    statement = sql.SQL(
        "SELECT count(*), md5(coalesce(string_agg(t.xmin::text || ':' || t::text, ',' ORDER BY t::text), ''))"
        " FROM {} AS t"
    ).format(sql.Identifier(*table.split(".")))
    ((count, digest),) = query(conn, statement)
    return count, digest


def one_parameter_fleet(conn: psycopg.Connection[Any], *, devices: int, reporting: int, measured_at: datetime) -> None:
    """``devices`` active devices with one parameter each, all in the target; ``reporting`` of them measured."""
    conn.execute(
        "INSERT INTO iot_data.redshift_devices SELECT 'd' || g, 'Device ' || g, true FROM generate_series(1, %s) g",
        (devices,),
    )
    conn.execute("INSERT INTO iot_data.timescale_parameters VALUES ('p', 'Param')")
    conn.execute(
        "INSERT INTO iot_data.measurements SELECT 'd' || g, 'p', %s, 1 FROM generate_series(1, %s) g",
        (measured_at - timedelta(minutes=5), reporting),
    )
    sync.ensure_schema(conn, load_settings())
    conn.execute(
        "INSERT INTO iot_data.device_parameters (device_id, device_name, parameter_id, parameter_name) "
        "SELECT 'd' || g, 'Device ' || g, 'p', 'Param' FROM generate_series(1, %s) g",
        (devices,),
    )
    conn.commit()
