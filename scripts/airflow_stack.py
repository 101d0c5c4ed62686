"""A real local Airflow 3 for device-sync: api-server, scheduler, dag-processor and triggerer from .venv,
plus a moto server standing in for CloudWatch and, with the CeleryExecutor, N Celery workers.

    python scripts/airflow_stack.py start [--home DIR] [--port N] [--no-demo] [--force-drop]
                                          [--executor local|celery] [--workers N] [--broker-url URL]
                                                        # `make airflow [EXECUTOR=celery WORKERS=2 BROKER_URL=...]`
    python scripts/airflow_stack.py stop  [--home DIR]  # `make airflow-stop`

LocalExecutor by default; ``--executor celery`` adds ``--workers`` ``airflow celery worker`` processes, each
with a Celery hostname, a task-instance hostname (``[core] hostname_callable``, :mod:`stack_hostname`), a log
server port, a concurrency and a log file of its own, the machine's Redis as the broker (a database number of
its own: ``redis://127.0.0.1:6379/1`` unless --broker-url; an empty one, or one an earlier stack of ours used,
which is emptied; one holding others' keys is refused unless --use-nonempty-broker) and the metadata database as the
result backend. A PostgreSQL metadata database of its own (``<name>_airflow`` on the same server as the
data), the project's dags/ and plugins/, the pool ``device_sync_db`` (DEVICE_SYNC_DB_POOL_SLOTS slots),
Airflow's simple auth manager with two local logins (admin and viewer, passwords written to
``<home>/passwords.json``). ``start`` waits until every component is healthy (every worker answering a Celery
ping), loads the demo fleet into the data database (unless --no-demo) and prints the UI address and the
logins. Every process it starts is recorded by pid in ``<home>/pids`` and ``stop`` ends exactly those.
``start`` re-creates ``device_sync_demo`` and ``device_sync_airflow`` when it created them (their comment is
:data:`OWNER_MARK`; a database of that name that someone else made is never dropped); it refuses (and drops
neither) while another session is connected to either, unless --force-drop or DEVICE_SYNC_FORCE_DROP=1 is given, which
disconnects those sessions.
The tests import :class:`AirflowStack` to run the same stack.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from throwaway_postgres import free_port

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins"))
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
EXECUTORS = {"local": "LocalExecutor", "celery": "CeleryExecutor"}
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/1"
CELERY_APP = "airflow.providers.celery.executors.celery_executor.app"


def worker_name(number: int) -> str:
    """The component name of Celery worker ``number`` (1-based); also the first part of its hostnames."""
    return f"worker{number}"


def airflow_uri(conninfo: str) -> str:
    params = psycopg.conninfo.conninfo_to_dict(conninfo)
    password = f":{params['password']}" if params.get("password") else ""
    return (
        f"postgresql://{params.get('user', 'postgres')}{password}@{params.get('host', '127.0.0.1')}"
        f":{params.get('port', 5432)}/{params['dbname']}"
    )


FORCE_DROP_ENV = "DEVICE_SYNC_FORCE_DROP"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}
# Sessions that block a plain DROP DATABASE: every backend on it but our own and autovacuum workers (which
# DROP DATABASE cancels by itself), as PostgreSQL's CountOtherDBBackends counts them.
_OTHER_SESSIONS = """
SELECT pid, coalesce(application_name, ''), coalesce(usename, '')
FROM pg_stat_activity
WHERE datname = %s AND pid <> pg_backend_pid() AND backend_type IS DISTINCT FROM 'autovacuum worker'
ORDER BY pid
"""


# The comment every database created here carries: the stacks, the demo and the tests drop a database only when
# it has it, so a database of the same name that someone else made is never dropped.
OWNER_MARK = "device-sync: created by make demo / make airflow / its tests; they may drop and re-create it"


class DatabaseInUseError(RuntimeError):
    """A database we were asked to drop has other sessions connected, and dropping was not forced."""

    def __init__(self, name: str, sessions: list[tuple[int, str, str]], detail: str = "") -> None:
        self.name = name
        self.sessions = sessions
        count = len(sessions)
        who = ", ".join(
            f"pid {pid}" + (f" {app!r}" if app else "") + (f" as {user}" if user else "")
            for pid, app, user in sessions[:5]
        ) + (", ..." if count > 5 else "")
        if count:
            state = f"{count} other session{'s are' if count != 1 else ' is'} connected to it ({who})"
        else:
            state = "it is in use" + (f" ({detail})" if detail else "")
        super().__init__(
            f'Refusing to drop database "{name}": {state}. Stop what uses it (`make airflow-stop` stops the local '
            f"Airflow of `make airflow`; close psql and other clients) and run again, or drop it anyway, disconnecting "
            f"every session, with --force-drop or {FORCE_DROP_ENV}=1 (make demo FORCE_DROP=1, make airflow "
            f"FORCE_DROP=1)."
        )


class NotOurDatabaseError(DatabaseInUseError):
    """A database we were asked to re-create exists and was not created by device-sync: never dropped."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sessions = []
        RuntimeError.__init__(
            self,
            f'Refusing to drop database "{name}": it exists and was not created by device-sync (its comment is not '
            f"{OWNER_MARK!r}), so it may hold someone else's data. Pick another database name, or drop it yourself "
            f'if it is yours (DROP DATABASE "{name}").',
        )


def check_ours(admin: psycopg.Connection[Any], name: str) -> None:
    """Raise NotOurDatabaseError when database ``name`` exists without :data:`OWNER_MARK`."""
    row = admin.execute(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (name,)
    ).fetchone()
    if row is not None and row[0] != OWNER_MARK:
        raise NotOurDatabaseError(name)


# The key a stack leaves in its Redis database: a database holding it is one a stack of ours used before.
BROKER_MARK_KEY = "device-sync:local-stack"


class BrokerNotEmptyError(RuntimeError):
    """The Redis database asked for as the broker holds keys that no stack of ours left there."""


def claim_broker(url: str, *, use_nonempty: bool = False) -> None:
    """Make the Redis database ``url`` this stack's broker. One an earlier stack of ours used is emptied (no
    message of that stack may reach these workers); an empty one is taken; one holding others' keys is refused
    with BrokerNotEmptyError, or with ``use_nonempty`` used as it is, nothing deleted."""
    import redis

    with redis.Redis.from_url(url, socket_timeout=10) as broker:
        keys = int(broker.dbsize())
        if broker.exists(BROKER_MARK_KEY):
            broker.flushdb()
        elif keys and not use_nonempty:
            raise BrokerNotEmptyError(
                f"Refusing to use the Redis database {url} as the Celery broker: it holds {keys} keys that no "
                f"device-sync stack left there (someone else's data). Point at an empty database "
                f"(make airflow BROKER_URL=redis://127.0.0.1:6379/<n>, --broker-url), or use this one as it is, "
                f"deleting nothing, with --use-nonempty-broker (make airflow BROKER_USE_NONEMPTY=1)."
            )
        broker.set(BROKER_MARK_KEY, "a device-sync local Airflow stack uses this database as its Celery broker")


def force_drop_requested(environ: Mapping[str, str] | None = None) -> bool:
    """Whether DEVICE_SYNC_FORCE_DROP asks to drop databases even when other sessions use them."""
    value = (os.environ if environ is None else environ).get(FORCE_DROP_ENV, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{FORCE_DROP_ENV}={value!r}: use 1 (drop even if in use) or 0 (refuse if in use)")


def other_sessions(admin: psycopg.Connection[Any], name: str) -> list[tuple[int, str, str]]:
    """(pid, application_name, user) of every session, other than ``admin``, connected to database ``name``."""
    return [(int(pid), str(app), str(user)) for pid, app, user in admin.execute(_OTHER_SESSIONS, (name,)).fetchall()]


def check_droppable(admin: psycopg.Connection[Any], name: str, settle: float = 1.0) -> None:
    """Raise DatabaseInUseError if other sessions stay connected to ``name`` for ``settle`` seconds (so that
    the backends of clients that have just been stopped may finish exiting)."""
    if admin.info.dbname == name:
        raise DatabaseInUseError(name, [], "the admin URL connects to it: point it at another database, e.g. postgres")
    deadline = time.monotonic() + settle
    while sessions := other_sessions(admin, name):
        if time.monotonic() >= deadline:
            raise DatabaseInUseError(name, sessions)
        time.sleep(0.1)


def drop_database(admin_url: str, name: str, *, force: bool = False) -> None:
    """DROP DATABASE IF EXISTS ``name``, only when device-sync created it (:func:`check_ours`: NotOurDatabaseError
    otherwise, even with ``force``). Unless ``force``, refuse with DatabaseInUseError while any other session
    is connected to it: checked first, then the DROP runs without FORCE, so that a session connecting in
    between makes the server refuse too (and it is reported the same way). With ``force`` the other sessions
    are terminated (DROP DATABASE ... WITH (FORCE))."""
    statement = sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name))
    with psycopg.connect(admin_url, autocommit=True) as admin:
        check_ours(admin, name)
        if force:
            admin.execute(statement + sql.SQL(" WITH (FORCE)"))
            return
        check_droppable(admin, name)
        try:
            admin.execute(statement)
        except psycopg.errors.ObjectInUse as error:
            detail = "; ".join(filter(None, (error.diag.message_primary, error.diag.message_detail))) or str(error)
            raise DatabaseInUseError(name, other_sessions(admin, name), detail) from error


def recreate_database(admin_url: str, name: str, *, force: bool = False) -> str:
    """Drop (see :func:`drop_database`: refused while others use it, unless ``force``) and create database
    ``name``; return its libpq URL. Safe as is for a fresh, uniquely named database."""
    drop_database(admin_url, name, force=force)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        admin.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(OWNER_MARK)))
    return psycopg.conninfo.make_conninfo(admin_url, dbname=name)


@dataclass
class AirflowStack:
    """One local Airflow: its home, ports, environment and processes."""

    home: Path
    data_url: str  # libpq URL of the IoT data database
    admin_url: str  # libpq URL of a database on the same server (to create the metadata database)
    port: int = 0
    metadata_db: str = "device_sync_airflow"
    extra_env: dict[str, str] = field(default_factory=dict)
    components: tuple[str, ...] = COMPONENTS
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    start_seconds: float = 0.0
    moto_port: int = 0
    force_drop: bool = False  # drop the metadata database even while other sessions use it
    executor: str = "local"  # a key of EXECUTORS
    workers: int = 0  # Celery workers (executor "celery")
    broker_url: str = DEFAULT_BROKER_URL  # Celery broker: a Redis database of the stack's own
    worker_concurrency: int = 4
    use_nonempty_broker: bool = False  # use a Redis database that holds keys of others (never emptied then)

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor {self.executor!r}: use one of {', '.join(EXECUTORS)}")
        if self.executor == "celery" and self.workers < 1:
            raise ValueError("the CeleryExecutor needs at least one worker")
        if self.executor != "celery":
            self.workers = 0
        self.components = (*self.components, *(worker_name(n) for n in range(1, self.workers + 1)))

    @property
    def worker_names(self) -> list[str]:
        return [worker_name(n) for n in range(1, self.workers + 1)]

    def worker_hostname(self, component: str) -> str:
        """The hostname Airflow records for the task instances this worker runs (and its Celery node name)."""
        return f"{component}.{socket.gethostname()}"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def passwords(self) -> dict[str, str]:
        return dict(json.loads((self.home / "passwords.json").read_text()))

    def env(self) -> dict[str, str]:
        settings = json.loads((self.home / "settings.json").read_text())
        env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": EXECUTORS[self.executor],
                "AIRFLOW__CORE__PARALLELISM": "4",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": settings["sql_alchemy_conn"],
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(settings["port"]),
                "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{settings['port']}",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{settings['port']}/execution/",
                "AIRFLOW__API_AUTH__JWT_SECRET": settings["jwt_secret"],
                "AIRFLOW__CORE__AUTH_MANAGER": (
                    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
                ),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.home / "passwords.json"),
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
                "AIRFLOW_CONN_DEVICE_SYNC_POSTGRES": airflow_uri(self.data_url),
            }
        )
        if self.executor == "celery":
            env.update(
                {
                    "AIRFLOW__CELERY__BROKER_URL": self.broker_url,
                    "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + settings["sql_alchemy_conn"].replace("+psycopg2", ""),
                    "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.worker_concurrency),
                }
            )
        env.update(self.extra_env)
        return env

    def component_env(self, component: str, env: dict[str, str]) -> dict[str, str]:
        """A worker's own settings: the hostname its task instances record and its log server's port."""
        if component not in self.worker_names:
            return env
        private = self.workdir(component)
        return {
            **env,
            # Nothing on local disk is shared between the workers but the logs, as between hosts: a task that
            # left a file for another task to read would find it missing on the other worker.
            "TMPDIR": str(private / "tmp"),
            "HOME": str(private),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "scripts"), env.get("PYTHONPATH")])),
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "stack_hostname.hostname",
            "STACK_WORKER_HOSTNAME": self.worker_hostname(component),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        }

    def workdir(self, component: str) -> Path:
        """The working directory of a component (a worker's own, with its own temporary directory)."""
        if component not in self.worker_names:
            return self.home
        private = self.home / "workers" / component
        (private / "tmp").mkdir(parents=True, exist_ok=True)
        return private

    def command(self, component: str) -> list[str]:
        airflow = str(REPO / ".venv/bin/airflow")
        if component == "moto":  # a local CloudWatch stand-in for `make airflow`
            return [str(REPO / ".venv/bin/moto_server"), "-H", "127.0.0.1", "-p", str(self.moto_port)]
        if component in self.worker_names:
            return [
                *(airflow, "celery", "worker", "--celery-hostname", self.worker_hostname(component)),
                *("--concurrency", str(self.worker_concurrency)),
            ]
        return [airflow, component]

    def prepare(self) -> None:
        """Fresh home, metadata database, logins and settings; then `airflow db migrate`."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        metadata_url = recreate_database(self.admin_url, self.metadata_db, force=self.force_drop)
        params = psycopg.conninfo.conninfo_to_dict(metadata_url)
        password = f":{params['password']}" if params.get("password") else ""
        sql_alchemy_conn = (
            f"postgresql+psycopg2://{params.get('user', 'postgres')}{password}@{params.get('host', '127.0.0.1')}"
            f":{params.get('port', 5432)}/{self.metadata_db}"
        )
        (self.home / "passwords.json").write_text(
            json.dumps({"admin": secrets.token_urlsafe(12), "viewer": secrets.token_urlsafe(12)})
        )
        (self.home / "passwords.json").chmod(0o600)
        (self.home / "settings.json").write_text(
            json.dumps({"port": self.port, "sql_alchemy_conn": sql_alchemy_conn, "jwt_secret": secrets.token_hex(32)})
        )
        (self.home / "settings.json").chmod(0o600)
        self.airflow("db", "migrate", timeout=300)
        from device_sync import pool

        self.airflow(*pool.create_command(self.pool_slots())[1:])
        if self.executor == "celery":
            claim_broker(self.broker_url, use_nonempty=self.use_nonempty_broker)

    def pool_slots(self) -> int:
        from device_sync.config import Settings

        configured = self.env().get("DEVICE_SYNC_DB_POOL_SLOTS")
        return int(configured) if configured else int(Settings.model_fields["db_pool_slots"].default)

    def airflow(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(REPO / ".venv/bin/airflow"), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=str(self.home),
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def start(self, timeout: float = 150) -> float:
        """Start every component, wait until healthy; return the seconds it took."""
        started = time.monotonic()
        (self.home / "logs").mkdir(exist_ok=True)
        env = self.env()
        pids = {}
        for component in self.components:
            log = (self.home / "logs" / f"{component}.log").open("ab")
            self.processes[component] = subprocess.Popen(
                self.command(component),
                env=self.component_env(component, env),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(self.workdir(component)),
                start_new_session=True,
            )
            pids[component] = self.processes[component].pid
        (self.home / "pids").write_text(json.dumps(pids))
        self.wait_healthy(timeout)
        return time.monotonic() - started

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            for component, process in self.processes.items():
                if process.poll() is not None:
                    tail = (self.home / "logs" / f"{component}.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"airflow {component} exited with {process.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/api/v2/monitor/health", timeout=5) as response:
                    last = json.loads(response.read())
                wanted = {"metadatabase", "scheduler", "dag_processor"} | (
                    {"triggerer"} if "triggerer" in self.components else set()
                )
                if all(last.get(name, {}).get("status") == "healthy" for name in wanted):
                    last = self.workers_not_answering()
                    if not last:
                        return
            except (urllib.error.URLError, OSError, ValueError) as error:
                last = error
            time.sleep(1)
        raise TimeoutError(f"Airflow was not healthy after {timeout:.0f} s; last answer: {last}")

    def workers_not_answering(self) -> list[str]:
        """The Celery workers that do not answer a ping (none for the LocalExecutor)."""
        if not self.workers:
            return []
        ping = subprocess.run(
            [str(REPO / ".venv/bin/celery"), "--app", CELERY_APP, "inspect", "ping", "--timeout", "5"],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
            cwd=str(self.home),
            check=False,
        )
        return [name for name in self.worker_names if f"{self.worker_hostname(name)}: OK" not in ping.stdout]

    def stop(self, timeout: float = 60) -> None:
        pids = json.loads((self.home / "pids").read_text()) if (self.home / "pids").exists() else {}
        stop_pids(pids, timeout)
        self.processes.clear()
        (self.home / "pids").unlink(missing_ok=True)

    # --- REST helpers -----------------------------------------------------------------------------------
    def token(self, username: str = "admin") -> str:
        body = json.dumps({"username": username, "password": self.passwords[username]}).encode()
        request = urllib.request.Request(
            f"{self.base_url}/auth/token", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return str(json.loads(response.read())["access_token"])

    def request(
        self, method: str, path: str, body: Any = None, token: str | None = None, timeout: float = 30
    ) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.base_url}{path}", data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read()
                status = response.status
        except urllib.error.HTTPError as error:
            raw, status = error.read(), error.code
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def wait_for_run(self, dag_id: str, run_id: str, token: str, timeout: float = 240) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        run: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status, run = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}", token=token)
            if status == 200 and run["state"] in ("success", "failed"):
                return run
            time.sleep(2)
        raise TimeoutError(f"run {run_id} did not finish within {timeout:.0f} s: {run}")


def stop_pids(pids: dict[str, int], timeout: float) -> None:
    """SIGTERM each recorded process group, wait for it to go, then SIGKILL whatever is left."""
    for pid in pids.values():
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_group_alive(pid) for pid in pids.values()):
        time.sleep(0.5)
    for pid in pids.values():
        _signal_group(pid, signal.SIGKILL)
        _group_alive(pid)


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signum)


def _group_alive(pid: int) -> bool:
    # Reap the leader if it is our own child, so a zombie does not count as alive.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        os.killpg(pid, 0)
        return True
    except ProcessLookupError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--home", type=Path, default=REPO / ".airflow")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--no-demo", action="store_true", help="do not (re)load the demo fleet")
    parser.add_argument("--executor", choices=sorted(EXECUTORS), default="local", help="Airflow executor")
    parser.add_argument("--workers", type=int, default=2, help="Celery workers (with --executor celery)")
    parser.add_argument(
        "--broker-url",
        default=DEFAULT_BROKER_URL,
        help="Celery broker: an empty Redis database, or one a stack of ours used before (emptied at start); "
        "one holding other keys is refused (with --executor celery)",
    )
    parser.add_argument(
        "--use-nonempty-broker",
        action="store_true",
        help="use the broker's Redis database even though it holds other keys, deleting nothing",
    )
    parser.add_argument(
        "--force-drop",
        action="store_true",
        help=f"re-create device_sync_demo and device_sync_airflow even while other sessions are connected to them, "
        f"disconnecting those (also: {FORCE_DROP_ENV}=1); by default start refuses",
    )
    args = parser.parse_args()
    try:
        force_drop = args.force_drop or force_drop_requested()
    except ValueError as error:
        parser.error(str(error))
    admin_url = os.environ.get("DEVICE_SYNC_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    data_url = psycopg.conninfo.make_conninfo(admin_url, dbname="device_sync_demo")
    moto_port = free_port()
    moto_connection: dict[str, Any] = {
        "conn_type": "aws",
        "login": "local",
        "password": "local",
        "extra": {"region_name": "us-east-1", "endpoint_url": f"http://127.0.0.1:{moto_port}"},
    }
    stack = AirflowStack(
        home=args.home,
        data_url=data_url,
        admin_url=admin_url,
        port=args.port,
        components=(*COMPONENTS, "moto"),
        moto_port=moto_port,
        extra_env={"AIRFLOW_CONN_AWS_DEFAULT": json.dumps(moto_connection)},
        force_drop=force_drop,
        executor=args.executor,
        workers=args.workers,
        broker_url=args.broker_url,
        use_nonempty_broker=args.use_nonempty_broker,
    )
    if args.action == "stop":
        stack.stop()
        print("Stopped every process of the local Airflow.")
        return
    if (args.home / "pids").exists():
        stack.stop()
    demo_db = "device_sync_demo"
    try:
        if not force_drop:  # check both databases before dropping either
            with psycopg.connect(admin_url, autocommit=True) as admin:
                for name in (stack.metadata_db,) if args.no_demo else (demo_db, stack.metadata_db):
                    check_ours(admin, name)
                    check_droppable(admin, name)
        if not args.no_demo:
            from device_sync.demo import load_demo_fleet

            recreate_database(admin_url, demo_db, force=force_drop)
            with psycopg.connect(data_url) as conn:
                load_demo_fleet(conn, datetime.now(UTC).replace(minute=0, second=0, microsecond=0))
            print(f"Demo fleet loaded into database {demo_db}.")
        started = time.monotonic()
        stack.prepare()
    except (DatabaseInUseError, BrokerNotEmptyError) as error:
        raise SystemExit(str(error)) from None
    stack.start()
    passwords = stack.passwords
    print(f"Airflow is up after {time.monotonic() - started:.0f} s: {stack.base_url}")
    print(f"  logins: admin / {passwords['admin']}   viewer / {passwords['viewer']}")
    print(f"  status page: {stack.base_url}/device-sync/   health: {stack.base_url}/device-sync/health")
    print(f"  CloudWatch stand-in (moto): http://127.0.0.1:{moto_port}")
    print(
        f"  executor: {EXECUTORS[stack.executor]}"
        + (f", workers: {', '.join(stack.worker_names)}" if stack.workers else "")
    )
    print(f"  logs: {stack.home / 'logs'} (one file per component)")
    print("  stop it with: make airflow-stop")


if __name__ == "__main__":
    main()
