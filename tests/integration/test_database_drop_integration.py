"""`make demo` and `make airflow` re-create databases of fixed names: only databases they created (marked with
OWNER_MARK), never one someone else made under that name; and they refuse while another session is connected
to one (saying which database, how many sessions and how to proceed) unless told to force it
(--force-drop / DEVICE_SYNC_FORCE_DROP=1). Real PostgreSQL: every database here has a unique name.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from airflow_stack import (  # scripts/ is on sys.path: conftest puts it there
    FORCE_DROP_ENV,
    OWNER_MARK,
    AirflowStack,
    DatabaseInUseError,
    NotOurDatabaseError,
    drop_database,
    force_drop_requested,
    recreate_database,
)
from psycopg import sql

from conftest import ADMIN_URL, REPO


def url_of(name: str) -> str:
    return psycopg.conninfo.make_conninfo(ADMIN_URL, dbname=name)


def exists(name: str) -> bool:
    with psycopg.connect(ADMIN_URL) as admin:
        return admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def has_marker(name: str) -> bool:
    with psycopg.connect(url_of(name)) as conn:
        return conn.execute("SELECT to_regclass('public.marker') IS NOT NULL").fetchone() == (True,)


@pytest.fixture
def scratch_db() -> Iterator[str]:
    """A uniquely named database as an earlier `make demo` left it (with OWNER_MARK), holding a table ``marker``
    (to tell whether it was re-created)."""
    name = f"device_sync_test_drop_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        admin.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(OWNER_MARK)))
    with psycopg.connect(url_of(name), autocommit=True) as conn:
        conn.execute("CREATE TABLE marker (id int); INSERT INTO marker VALUES (1)")
    yield name
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def held(scratch_db: str) -> Iterator[psycopg.Connection[Any]]:
    """Another session, connected to the scratch database for the whole test."""
    with psycopg.connect(url_of(scratch_db), autocommit=True, application_name="held-by-test") as conn:
        yield conn


def assert_refusal_message(message: str, name: str, held: psycopg.Connection[Any]) -> None:
    assert f'Refusing to drop database "{name}"' in message
    assert "1 other session is connected to it" in message
    assert f"pid {held.info.backend_pid} 'held-by-test'" in message
    assert "--force-drop" in message
    assert f"{FORCE_DROP_ENV}=1" in message
    assert "make demo FORCE_DROP=1" in message


def test_recreate_refuses_while_another_session_is_connected(scratch_db: str, held: psycopg.Connection[Any]) -> None:
    with pytest.raises(DatabaseInUseError) as raised:
        recreate_database(ADMIN_URL, scratch_db)
    assert_refusal_message(str(raised.value), scratch_db, held)
    assert raised.value.name == scratch_db
    assert [pid for pid, _, _ in raised.value.sessions] == [held.info.backend_pid]
    assert held.execute("SELECT count(*) FROM marker").fetchone() == (1,)  # still connected, data untouched
    assert has_marker(scratch_db)


def test_force_drop_disconnects_the_other_session_and_recreates(scratch_db: str, held: psycopg.Connection[Any]) -> None:
    url = recreate_database(ADMIN_URL, scratch_db, force=True)
    assert psycopg.conninfo.conninfo_to_dict(url)["dbname"] == scratch_db
    with pytest.raises(psycopg.OperationalError):
        held.execute("SELECT 1")
    assert exists(scratch_db)
    assert not has_marker(scratch_db)  # a fresh, empty database


def test_recreate_without_other_sessions_needs_no_force(scratch_db: str) -> None:
    recreate_database(ADMIN_URL, scratch_db)
    assert exists(scratch_db)
    assert not has_marker(scratch_db)


@pytest.mark.parametrize("force", [False, True])
def test_a_database_device_sync_did_not_create_is_never_dropped(scratch_db: str, force: bool) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:  # someone else's database of the same name
        admin.execute(sql.SQL("COMMENT ON DATABASE {} IS NULL").format(sql.Identifier(scratch_db)))
    with pytest.raises(NotOurDatabaseError, match=f'Refusing to drop database "{scratch_db}": it exists and was not'):
        recreate_database(ADMIN_URL, scratch_db, force=force)
    assert has_marker(scratch_db)


def test_the_demo_refuses_a_database_it_did_not_create(scratch_db: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("COMMENT ON DATABASE {} IS 'payroll'").format(sql.Identifier(scratch_db)))
    result = demo_cli("--database", scratch_db, **{FORCE_DROP_ENV: "1"})
    assert result.returncode != 0
    assert "was not created by device-sync" in result.stderr
    assert has_marker(scratch_db)


def test_recreate_of_a_fresh_unique_name_as_the_tests_call_it() -> None:
    name = f"device_sync_test_drop_{uuid.uuid4().hex[:10]}"
    try:
        url = recreate_database(ADMIN_URL, name)
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == (name,)
    finally:
        drop_database(ADMIN_URL, name)
    assert not exists(name)


def test_server_side_refusal_is_reported_the_same_way(scratch_db: str) -> None:
    """No session shows in pg_stat_activity, yet the plain DROP DATABASE fails as 'in use' (here because of a
    disabled logical replication subscription, just as it would for a session connecting after the check):
    the error is turned into the same DatabaseInUseError, and the database survives."""
    with psycopg.connect(url_of(scratch_db), autocommit=True) as conn:
        conn.execute(
            "CREATE SUBSCRIPTION drop_test_sub CONNECTION 'dbname=nowhere' PUBLICATION p "
            "WITH (connect = false, enabled = false)"
        )
    try:
        with pytest.raises(DatabaseInUseError) as raised:
            drop_database(ADMIN_URL, scratch_db)
        message = str(raised.value)
        assert f'Refusing to drop database "{scratch_db}": it is in use' in message
        assert "subscription" in message
        assert "--force-drop" in message
        assert has_marker(scratch_db)
    finally:
        with psycopg.connect(url_of(scratch_db), autocommit=True) as conn:
            conn.execute("ALTER SUBSCRIPTION drop_test_sub SET (slot_name = NONE)")
            conn.execute("DROP SUBSCRIPTION drop_test_sub")


def test_airflow_stack_refuses_to_recreate_its_metadata_database_in_use(
    scratch_db: str, held: psycopg.Connection[Any]
) -> None:
    stack = AirflowStack(
        home=Path(tempfile.mkdtemp(prefix="device-sync-drop-")),
        data_url=url_of(scratch_db),
        admin_url=ADMIN_URL,
        metadata_db=scratch_db,
    )
    with pytest.raises(DatabaseInUseError) as raised:
        stack.prepare()  # refuses before anything is written to the database or Airflow is run
    assert_refusal_message(str(raised.value), scratch_db, held)
    assert not (stack.home / "settings.json").exists()
    assert held.execute("SELECT count(*) FROM marker").fetchone() == (1,)


def demo_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {key: value for key, value in os.environ.items() if not key.startswith("DEVICE_SYNC_")}
    environ.update({"DEVICE_SYNC_DATABASE_URL": ADMIN_URL, **env})
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py"), *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_demo_cli_refuses_while_another_session_is_connected(scratch_db: str, held: psycopg.Connection[Any]) -> None:
    result = demo_cli("--database", scratch_db)
    assert result.returncode == 1, result.stdout + result.stderr
    assert_refusal_message(result.stderr, scratch_db, held)
    assert "Demo fleet" not in result.stdout
    assert held.execute("SELECT count(*) FROM marker").fetchone() == (1,)


def test_demo_cli_rejects_an_unclear_force_drop_value(scratch_db: str, held: psycopg.Connection[Any]) -> None:
    result = demo_cli("--database", scratch_db, **{FORCE_DROP_ENV: "maybe"})
    assert result.returncode == 2
    assert f"{FORCE_DROP_ENV}='maybe'" in result.stderr
    assert held.execute("SELECT count(*) FROM marker").fetchone() == (1,)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, False), ("", False), ("0", False), ("no", False), ("1", True), ("true", True), (" YES ", True)],
)
def test_force_drop_environment_variable(value: str | None, expected: bool) -> None:
    assert force_drop_requested({} if value is None else {FORCE_DROP_ENV: value}) is expected


# --- the Celery broker: a Redis database of someone else's is never emptied -----------------------------------


@pytest.fixture
def redis_db() -> Iterator[str]:
    """One of the test Redis databases (conftest), emptied at the end."""
    import redis

    from conftest import TEST_REDIS_DATABASES, TEST_REDIS_URL

    url = f"{TEST_REDIS_URL}/{TEST_REDIS_DATABASES[uuid.uuid4().int % len(TEST_REDIS_DATABASES)]}"
    yield url
    with redis.Redis.from_url(url, socket_timeout=10) as broker:
        broker.flushdb()


def test_a_redis_database_holding_others_keys_is_refused_and_kept(redis_db: str) -> None:
    import redis
    from airflow_stack import BrokerNotEmptyError, claim_broker

    with redis.Redis.from_url(redis_db, socket_timeout=10) as broker:
        broker.flushdb()
        broker.set("someone:else", "precious")
        with pytest.raises(BrokerNotEmptyError, match="holds 1 keys that no device-sync stack left there"):
            claim_broker(redis_db)
        assert broker.get("someone:else") == b"precious"

        claim_broker(redis_db, use_nonempty=True)  # told to use it: used as it is, nothing deleted
        assert broker.get("someone:else") == b"precious"


def test_a_redis_database_an_earlier_stack_used_is_emptied_and_an_empty_one_taken(redis_db: str) -> None:
    import redis
    from airflow_stack import BROKER_MARK_KEY, claim_broker

    with redis.Redis.from_url(redis_db, socket_timeout=10) as broker:
        broker.flushdb()
        claim_broker(redis_db)  # empty: taken
        broker.set("celery", "a message of the earlier stack")
        claim_broker(redis_db)  # ours: emptied of the earlier stack's messages
        assert broker.keys("*") == [BROKER_MARK_KEY.encode()]
