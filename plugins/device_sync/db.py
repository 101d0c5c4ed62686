"""The one database helper: connections, transactions and the SQL files of ``include/sql``.

Every statement runs inside a transaction that sets its own ``statement_timeout`` with ``SET LOCAL``
semantics, so nothing depends on session state (safe behind PgBouncer in transaction pooling mode).
SQL text comes from files; identifiers are composed with :mod:`psycopg.sql` and values are always bound
parameters.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from copy import deepcopy
from functools import cache
from typing import Any

import psycopg
import tenacity
from psycopg import sql

from device_sync import resources

log = logging.getLogger(__name__)


# The SQL files of the DAG by role, under include/sql/device_parameter_sync/: the one place their folders are named.
STEPS_SQL = "device_parameter_sync/steps/"  # what the tasks run, one file per statement
HISTORY_SQL = "device_parameter_sync/history/"  # the run history and change log writes
API_SQL = "device_parameter_sync/api/"  # the operations endpoints' reads
NOTIFICATIONS_SQL = "device_parameter_sync/notifications/"  # what the failure and recovery messages read
MIGRATIONS_SQL = "migrations/"  # the package's tables, one numbered file per schema version


@cache
def load_sql(name: str) -> str:
    """Return the text of ``include/sql/<name>`` (package data: see :mod:`device_sync.resources`)."""
    return resources.sql_text(name)


def compose(name: str, identifiers: Mapping[str, sql.Composable]) -> sql.Composed:
    """The SQL file ``name`` with its ``{placeholders}`` replaced by quoted identifiers."""
    return sql.SQL(load_sql(name)).format(**identifiers)  # type: ignore[arg-type]


def connect(conn_id: str, connect_timeout: int | None = None, attempts: int = 1) -> psycopg.Connection[Any]:
    """Open a psycopg 3 connection from the Airflow connection ``conn_id`` (extras are honoured).

    With ``attempts`` > 1 a refused or failed connection is retried with exponential backoff (1, 2, 4 … s,
    at most 30 s apart), each failure logged, so a database restart does not cost a whole task retry.
    """
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(attempts),
        wait=tenacity.wait_exponential(multiplier=1, min=1, max=30),
        retry=tenacity.retry_if_exception_type(psycopg.OperationalError),
        before_sleep=lambda state: log.warning(
            "Connecting to PostgreSQL (connection %s) failed, attempt %d of %d, retrying in %.0f s: %s",
            conn_id,
            state.attempt_number,
            attempts,
            state.next_action.sleep if state.next_action else 0,
            state.outcome.exception() if state.outcome else "?",
        ),
        reraise=True,
    )
    for attempt in retrying:
        with attempt:
            return _connect_once(conn_id, connect_timeout)
    raise AssertionError("unreachable")  # pragma: no cover


def _connect_once(conn_id: str, connect_timeout: int | None) -> psycopg.Connection[Any]:
    return psycopg.connect(**connect_arguments(conn_id, connect_timeout))


def connect_arguments(conn_id: str, connect_timeout: int | None = None) -> dict[str, Any]:
    """``psycopg.connect``'s arguments for the Airflow connection ``conn_id``, as the postgres provider's hook
    builds them: host, port, login, password, schema (the database), the extras but the hook's own keys (and
    ``cursor``: the steps read plain rows), and an RDS IAM token when the extra ``iam`` is set.

    Built here rather than taken from ``PostgresHook.get_conn()``: the hook returns a psycopg 3 connection only
    from provider 6.3 on with SQLAlchemy 2, and Airflow 3.0.6 (Amazon MWAA) runs provider 6.2.3 with SQLAlchemy
    1.4, where it returns psycopg2's. One way in for every supported Airflow.
    """
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    hook = PostgresHook(postgres_conn_id=conn_id)
    connection = deepcopy(hook.connection)
    extra = connection.extra_dejson
    if extra.get("iam", False):
        connection.login, connection.password, connection.port = hook.get_iam_token(connection)
    arguments: dict[str, Any] = {
        "host": connection.host,
        "port": connection.port,
        "user": connection.login,
        "password": connection.password,
        "dbname": connection.schema,
        # No server-side prepared statements (psycopg prepares a query run 5 times): they are session state,
        # which PgBouncer in transaction pooling mode (before 1.21) does not carry between server connections.
        "prepare_threshold": None,
    }
    ignored = {*hook.ignored_extra_options, "cursor"}
    arguments.update({key: value for key, value in extra.items() if key not in ignored})
    if connect_timeout is not None:
        arguments["connect_timeout"] = connect_timeout
    return arguments


@contextmanager
def transaction(conn: psycopg.Connection[Any], statement_timeout_seconds: int) -> Iterator[psycopg.Cursor[Any]]:
    """One transaction with a transaction-scoped statement timeout; commits on success, rolls back on error."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "SELECT set_config('statement_timeout', %s, true)",
            (f"{int(statement_timeout_seconds * 1000)}ms",),
        )
        yield cur


def run(cur: psycopg.Cursor[Any], statement: sql.Composable | str, params: Mapping[str, Any] | None = None) -> int:
    """Execute one statement; return its row count."""
    cur.execute(statement, params)  # type: ignore[arg-type]
    return cur.rowcount


def fetch_one_dict(
    cur: psycopg.Cursor[Any], statement: sql.Composable | str, params: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Execute a statement that returns exactly one row; return it as a dict of column name to value."""
    cur.execute(statement, params)  # type: ignore[arg-type]
    row = cur.fetchone()
    if row is None or cur.description is None:
        raise RuntimeError("expected one row, got none")
    return {column.name: value for column, value in zip(cur.description, row, strict=True)}


def fetch_all_dicts(
    cur: psycopg.Cursor[Any], statement: sql.Composable | str, params: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Execute a statement that returns a few rows (a bounded sample); return them as dicts."""
    cur.execute(statement, params)  # type: ignore[arg-type]
    if cur.description is None:
        return []
    names = [column.name for column in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
