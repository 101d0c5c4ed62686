"""device_sync.db.connect_arguments: psycopg 3's arguments from an Airflow connection, on every provider version."""

from __future__ import annotations

import json

import pytest

from device_sync import db


def set_connection(monkeypatch: pytest.MonkeyPatch, extra: dict[str, object]) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_DS_TEST",
        json.dumps(
            {
                "conn_type": "postgres",
                "host": "db.example",
                "port": 5433,
                "login": "sync",
                "password": "pw",
                "schema": "iot",
                "extra": extra,
            }
        ),
    )


def test_host_login_schema_and_extras_become_psycopg_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, {"sslmode": "require", "application_name": "device-sync", "cursor": "dictcursor"})
    arguments = db.connect_arguments("ds_test", connect_timeout=7)
    assert arguments == {
        "host": "db.example",
        "port": 5433,
        "user": "sync",
        "password": "pw",
        "dbname": "iot",
        "prepare_threshold": None,  # no server-side prepared statements (PgBouncer in transaction mode)
        "sslmode": "require",
        "application_name": "device-sync",
        "connect_timeout": 7,
    }  # "cursor" is the hook's own key: the steps read plain rows


def test_a_connection_may_ask_for_prepared_statements(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, {"prepare_threshold": 5})
    assert db.connect_arguments("ds_test")["prepare_threshold"] == 5
    assert "connect_timeout" not in db.connect_arguments("ds_test")
