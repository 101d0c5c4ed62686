"""Which cancelled statement is a statement timeout (``device_sync.errors.is_statement_timeout``), from the
error's text alone: plain exception objects, no database. The real server's errors are tested in
tests/integration/test_faults_integration.py."""

from __future__ import annotations

from types import SimpleNamespace

import psycopg
import pytest

from device_sync.errors import is_statement_timeout


@pytest.mark.parametrize(
    "message",
    [
        "canceling statement due to statement timeout",
        "ERROR:  canceling statement due to statement timeout\nCONTEXT: SQL statement ...",
        "Canceling Statement Due To Statement Timeout",
    ],
)
def test_the_server_message_of_a_statement_timeout_is_a_timeout(message: str) -> None:
    assert is_statement_timeout(Exception(message))
    assert is_statement_timeout(psycopg.errors.QueryCanceled(message))


@pytest.mark.parametrize(
    "message",
    [
        "canceling statement due to user request",
        "canceling statement due to lock timeout",
        "canceling autovacuum task",
        "",
        "Abbruch der Anweisung wegen Zeitüberschreitung",  # lc_messages=de: retried like any other cancel
    ],
)
def test_other_cancels_are_not_a_timeout(message: str) -> None:
    assert not is_statement_timeout(Exception(message))
    assert not is_statement_timeout(psycopg.errors.QueryCanceled(message))


class ServerError(Exception):
    """An error with the server's diagnostics, as psycopg gives them."""

    def __init__(self, text: str, message_primary: str | None) -> None:
        super().__init__(text)
        self.diag = SimpleNamespace(message_primary=message_primary)


def test_the_primary_message_of_the_diagnostics_decides_when_there_is_one() -> None:
    assert is_statement_timeout(ServerError("something else", "canceling statement due to statement timeout"))
    assert not is_statement_timeout(
        ServerError("statement timeout in the text", "canceling statement due to user request")
    )


def test_without_a_primary_message_the_error_text_decides() -> None:
    assert is_statement_timeout(ServerError("canceling statement due to statement timeout", None))
    assert not is_statement_timeout(ServerError("canceling statement due to user request", None))
