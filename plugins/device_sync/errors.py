"""The tasks' error policy: which failures Airflow retries (faults) and which fail a task at once.

Retries are for faults: a refused connection, a killed backend, a statement cancelled by someone else. A
missing table, column or privilege, a mistake in the SQL, a tripped guard, a window in the future, a missing
staging table and a statement that ran into ``DEVICE_SYNC_STATEMENT_TIMEOUT_SECONDS`` fail at once
(``AirflowFailException``): waiting will not fix them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from device_sync.compat import AirflowFailException, AirflowNotFoundException
from device_sync.config import Settings

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

CONNECT_ATTEMPTS = 5  # about 15 s of backoff before the task itself fails and Airflow retries it


def permanent_errors() -> tuple[type[Exception], ...]:
    """Errors a retry cannot fix: a missing table or column, missing privileges, a mistake in the SQL."""
    import psycopg

    return (
        psycopg.errors.UndefinedTable,
        psycopg.errors.InvalidSchemaName,
        psycopg.errors.UndefinedColumn,
        psycopg.errors.UndefinedObject,
        psycopg.errors.InsufficientPrivilege,
        psycopg.errors.SyntaxError,
        psycopg.errors.DatatypeMismatch,
        psycopg.errors.UndefinedFunction,
        psycopg.errors.ProgramLimitExceeded,
    )


def refusals() -> tuple[type[Exception], ...]:
    """The package's own refusals: a tripped guard, a missing staging table, a future window, a database whose
    schema is behind this version (``device-sync-migrate``)."""
    from device_sync.guards import GuardTripped
    from device_sync.migrations import SchemaError
    from device_sync.staging import StagingMissing
    from device_sync.window import FutureWindow

    return (GuardTripped, StagingMissing, FutureWindow, SchemaError)


def is_statement_timeout(error: Exception) -> bool:
    """Whether a cancelled statement (SQLSTATE 57014) hit statement_timeout rather than another cancel.

    Both share the SQLSTATE; only the server's message tells them apart ("canceling statement due to statement
    timeout" against "... due to user request"). A server whose lc_messages is not English gives another text:
    its timeouts are then retried like any other cancel, which costs time but never data.
    """
    diag = getattr(error, "diag", None)
    message = (getattr(diag, "message_primary", None) or str(error)).lower()
    return "statement timeout" in message


@contextmanager
def connection(settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    """A connection to the IoT database under this policy: permanent errors fail the task at once."""
    import psycopg

    from device_sync import db

    try:
        conn = db.connect(settings.postgres_conn_id, connect_timeout=10, attempts=CONNECT_ATTEMPTS)
    except AirflowNotFoundException as error:
        raise AirflowFailException(
            f"The Airflow connection {settings.postgres_conn_id!r} (DEVICE_SYNC_POSTGRES_CONN_ID) does not exist:"
            f" define it (e.g. AIRFLOW_CONN_{settings.postgres_conn_id.upper()}) or fix the setting ({error})"
        ) from error
    try:
        yield conn
    except permanent_errors() as error:
        raise AirflowFailException(
            f"{type(error).__name__}: {error} (not retried: fix the database or the configuration)"
        ) from error
    except refusals() as error:
        raise AirflowFailException(str(error)) from error
    except psycopg.errors.QueryCanceled as error:
        if not is_statement_timeout(error):
            # An administrator's pg_cancel_backend, a failover, a shutdown: a fault, so Airflow retries it.
            log.warning("A statement was cancelled, not by the statement timeout; the task will be retried: %s", error)
            raise
        raise AirflowFailException(
            f"A statement ran longer than DEVICE_SYNC_STATEMENT_TIMEOUT_SECONDS={settings.statement_timeout_seconds}"
            f" and was cancelled; nothing of this step was written. Raise the timeout or look for a missing"
            f" index or a lock ({error})"
        ) from error
    finally:
        conn.close()
