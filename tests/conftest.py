"""Shared fixtures: a real PostgreSQL database per test session, a real Airflow, a real moto server.

The tests live in six folders, each marked by its name (``pytest -m unit`` works as well as ``pytest tests/unit``):

- ``tests/unit``: pure logic; no database, no Airflow stack, no network (``make test-unit``);
- ``tests/integration``: real PostgreSQL, ``dag.test()``, moto, the plugin's API in-process, PgBouncer, the wheel;
- ``tests/e2e``: a real Airflow stack (api-server, scheduler, ..., Celery workers) and a real browser;
- ``tests/compose``: docker-compose.yaml run for real with podman (``make test-compose``; not in ``make test``);
- ``tests/timescaledb``: TimescaleDB hypertables on a throwaway server (``make test-timescaledb``; not in
  ``make test``);
- ``tests/platforms``: Amazon MWAA's package sets, the deploy's requirements.txt installed as MWAA installs it
  (``make test-platforms``; not in ``make test``).

The suite never skips database tests: if PostgreSQL is unreachable and any selected test is not a unit test,
the run stops before the first test with a message saying how to get it. A unit-only run never connects.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

REPO = Path(__file__).resolve().parents[1]
ADMIN_URL = os.environ.get("DEVICE_SYNC_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

# Airflow reads its configuration when first imported: point it at a throwaway home before any test
# module imports it. The metadata database is SQLite inside that home (dag.test() runs in-process).
_AIRFLOW_HOME = tempfile.mkdtemp(prefix="device-sync-airflow-")
os.environ.update(
    {
        "AIRFLOW_HOME": _AIRFLOW_HOME,
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_AIRFLOW_HOME}/airflow.db",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    }
)
for _name in list(os.environ):
    if _name.startswith("DEVICE_SYNC_") and _name != "DEVICE_SYNC_TEST_ADMIN_URL":
        del os.environ[_name]
sys.path.insert(0, str(REPO / "plugins"))
sys.path.insert(0, str(REPO / "scripts"))
from airflow_stack import airflow_uri, free_port  # noqa: E402  (shared with make demo / make airflow)
from throwaway_postgres import postgres_bin, throwaway_cluster  # noqa: E402

psycopg_url_to_airflow_uri = airflow_uri

HOW_TO_GET_POSTGRES = (
    "PostgreSQL is required for the device-sync tests and is not reachable at {url} ({error}).\n"
    "Start the machine's server with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n"
    "or point DEVICE_SYNC_TEST_ADMIN_URL at a server where you may create databases."
)


TESTS = Path(__file__).resolve().parent
# The folders under tests/, and the marker of every test in each.
KINDS = ("unit", "integration", "e2e", "compose", "timescaledb", "platforms")


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test by its folder; a test module outside those folders is a mistake."""
    for item in items:
        path = Path(item.path).resolve()
        if not path.is_relative_to(TESTS):
            continue
        kind = path.relative_to(TESTS).parts[0]
        if kind not in KINDS:
            raise pytest.UsageError(f"{path}: a test module belongs in one of the folders tests/{{{','.join(KINDS)}}}")
        item.add_marker(getattr(pytest.mark, kind))


def pytest_collection_finish(session: pytest.Session) -> None:
    """PostgreSQL must be reachable when any selected test is not a unit test (checked once, before any test)."""
    if session.config.option.collectonly or all(item.get_closest_marker("unit") for item in session.items):
        return
    try:
        psycopg.connect(ADMIN_URL, connect_timeout=5).close()
    except psycopg.Error as error:
        pytest.exit(HOW_TO_GET_POSTGRES.format(url=ADMIN_URL, error=str(error).strip()), returncode=3)


@pytest.fixture(autouse=True)
def _unit_tests_stay_offline(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A unit test opens no network connection and no database session (psycopg's libpq does not go through
    Python's sockets: its connect is refused on its own)."""
    if request.node.get_closest_marker("unit") is None:
        return

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a unit test may not open a connection: it belongs in tests/integration")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(psycopg, "connect", refuse)
    monkeypatch.setattr(psycopg.Connection, "connect", classmethod(refuse))


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A database of its own for this test session, dropped at the end."""
    name = f"device_sync_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = psycopg.conninfo.make_conninfo(ADMIN_URL, dbname=name)
    os.environ["AIRFLOW_CONN_DEVICE_SYNC_POSTGRES"] = psycopg_url_to_airflow_uri(url)
    yield url
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


SOURCE_DDL = """
DROP SCHEMA IF EXISTS iot_data CASCADE;
DROP SCHEMA IF EXISTS device_sync CASCADE;
CREATE SCHEMA iot_data;
CREATE TABLE iot_data.redshift_devices (device_id TEXT, device_name TEXT, status BOOLEAN);
CREATE TABLE iot_data.timescale_parameters (parameter_id TEXT, parameter_name TEXT);
CREATE TABLE iot_data.measurements (device_id TEXT, parameter_id TEXT, "time" TIMESTAMPTZ, value DOUBLE PRECISION);
"""


def reset_sources(conn: psycopg.Connection[Any]) -> None:
    """Empty source tables (text ids) and no target table: every test starts from the same blank state."""
    with conn.transaction():
        conn.execute(SOURCE_DDL)


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection to the session's database, with fresh empty sources."""
    with psycopg.connect(database_url) as connection:
        reset_sources(connection)
        yield connection


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """Airflow's metadata database, migrated once per session, with the tasks' pool."""
    from airflow.models.pool import Pool
    from airflow.utils.db import resetdb

    from device_sync import pool

    resetdb()
    Pool.create_or_update_pool(pool.NAME, slots=4, description=pool.DESCRIPTION, include_deferred=False)


@pytest.fixture
def client(airflow_db: None) -> Iterator[Any]:
    """The plugin's HTTP app in-process (FastAPI's TestClient on ``device_sync.api.app``)."""
    from fastapi.testclient import TestClient

    from device_sync import api

    with TestClient(api.app) as test_client:
        yield test_client


@pytest.fixture
def logged_in() -> Iterator[None]:
    """Stands in for Airflow's login check of the plugin's app only (the stack tests use real tokens)."""
    from device_sync import api

    api.app.dependency_overrides[api.require_dag_read] = lambda: None
    yield
    api.app.dependency_overrides.pop(api.require_dag_read, None)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A moto server on a free loopback port; the ``aws_default`` connection points at it."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(
        {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    )
    os.environ["AIRFLOW_CONN_AWS_DEFAULT"] = json.dumps(
        {"conn_type": "aws", "extra": {"region_name": "us-east-1", "endpoint_url": endpoint}}
    )
    yield endpoint
    server.stop()


# The machine's Redis; a Celery stack of the tests takes a database number of its own and empties it after.
TEST_REDIS_URL = os.environ.get("DEVICE_SYNC_TEST_REDIS_URL", "redis://127.0.0.1:6379")
TEST_REDIS_DATABASES = range(8, 16)  # `make airflow` uses 1


@contextmanager
def running_airflow_stack(
    components: tuple[str, ...] = ("api-server", "scheduler", "dag-processor"),
    *,
    workers: int = 0,
    worker_concurrency: int = 4,
    **extra_env: str,
) -> Iterator[Any]:
    """A real Airflow on a free loopback port, with a PostgreSQL metadata database and an IoT data database
    of its own: the LocalExecutor, or with ``workers`` the CeleryExecutor with that many workers on a Redis
    database of its own. Every process stopped, both databases dropped and the Redis database emptied at the end.
    """
    import redis
    from airflow_stack import AirflowStack, recreate_database

    suffix = uuid.uuid4().hex[:8]
    data_db = f"device_sync_test_stack_data_{suffix}"
    broker_url = f"{TEST_REDIS_URL}/{TEST_REDIS_DATABASES[uuid.uuid4().int % len(TEST_REDIS_DATABASES)]}"
    stack = AirflowStack(
        home=Path(tempfile.mkdtemp(prefix="device-sync-stack-")),
        data_url=recreate_database(ADMIN_URL, data_db),
        admin_url=ADMIN_URL,
        metadata_db=f"device_sync_test_stack_meta_{suffix}",
        components=components,
        extra_env={"AIRFLOW_CONN_AWS_DEFAULT": os.environ["AIRFLOW_CONN_AWS_DEFAULT"], **extra_env},
        executor="celery" if workers else "local",
        workers=workers,
        worker_concurrency=worker_concurrency,
        broker_url=broker_url,
    )
    try:
        stack.prepare()
        stack.start_seconds = stack.start(timeout=180)
        yield stack
    finally:
        stack.stop()
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            for name in (stack.metadata_db, data_db):
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if workers:
            with redis.Redis.from_url(broker_url, socket_timeout=10) as broker:
                broker.flushdb()


@pytest.fixture(scope="module")
def airflow_stack(moto_server: str) -> Iterator[Any]:
    """The stack with the default (hourly) schedule, for one test module."""
    with running_airflow_stack() as stack:
        yield stack


def run_dag_test(logical_date: Any, prepare: Any = None, **env: str) -> Any:
    """Run device_parameter_sync with dag.test() for ``logical_date``, with ``env`` set only for that run.

    ``prepare`` may adjust the parsed DAG before the run (dag.test() runs exactly that object's tasks)."""
    from airflow.dag_processing.dagbag import DagBag

    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        bag = DagBag(dag_folder=str(REPO / "dags"))
        assert bag.import_errors == {}
        dag = bag.dags["device_parameter_sync"]
        if prepare is not None:
            prepare(dag)
        return dag.test(logical_date=logical_date)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class Worker(threading.Thread):
    """Runs ``target`` in a thread and keeps its result or its exception for the test thread."""

    def __init__(self, target: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self._call = target
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self._call()
        except BaseException as error:  # reported to the test thread
            self.error = error


# --- TimescaleDB (tests/timescaledb, `make test-timescaledb`) -------------------------------------------------
# A throwaway server from the machine's PostgreSQL binaries with TimescaleDB preloaded (the machine's own server
# is never restarted), on a free port, deleted at the end.
TIMESCALEDB_SETTINGS = {"shared_preload_libraries": "timescaledb", "timescaledb.telemetry_level": "off"}


def timescaledb_installed() -> bool:
    sharedir = subprocess.run(
        [postgres_bin("pg_config"), "--sharedir"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()
    return (Path(sharedir) / "extension" / "timescaledb.control").exists()


@pytest.fixture(scope="session")
def timescaledb_server() -> Iterator[str]:
    """The admin URL of a server with TimescaleDB preloaded."""
    if not timescaledb_installed():
        pytest.fail(
            "TimescaleDB is not installed for this machine's PostgreSQL: run `make test-timescaledb`, which builds "
            "it (scripts/ensure_timescaledb.sh)",
            pytrace=False,
        )
    with throwaway_cluster(TIMESCALEDB_SETTINGS, prefix="device-sync-timescaledb-") as url:
        yield url


@pytest.fixture(scope="session")
def timescaledb_url(timescaledb_server: str) -> Iterator[str]:
    """A database of its own with the extension created, for this test session."""
    name = f"device_sync_test_ts_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(timescaledb_server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = psycopg.conninfo.make_conninfo(timescaledb_server, dbname=name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    yield url


@pytest.fixture
def ts_conn(timescaledb_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(timescaledb_url) as connection:
        reset_sources(connection)
        yield connection
