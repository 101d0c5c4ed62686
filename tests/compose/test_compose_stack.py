"""docker-compose.yaml run for real: the CeleryExecutor stack with two workers runs the DAG once.

What runs: podman 4.3 (Debian bookworm) with runc and podman-compose 1.6.0 (PyPI, in ``.tools/podman-compose``;
``scripts/ensure_compose_tools.sh`` installs them), the user-facing ``docker-compose.yaml`` plus the override
``tests/compose/compose.test.yaml``, a unique project name and free published ports per run, the env file
made from ``deploy/compose.env.example`` with fresh secrets, and the profiles ``dev`` and ``flower``.

What stands in for what (no image registry is reachable here; see ``standin_images.py``): the official Airflow
image is a locally built Debian bookworm image with requirements.txt installed and an ``/entrypoint`` like
the official one, on which the project's own ``Dockerfile`` builds the real image (``AIRFLOW_BASE_IMAGE``);
postgres and redis are Debian's PostgreSQL 15 and redis-server; ``iot-db`` is that plain PostgreSQL 15, not
TimescaleDB, seeded by the project's own ``deploy/initdb`` script with the demo fleet (the script then leaves
the measurements a plain table and says so); moto is moto[server] at the pinned version, reached by boto3
over HTTP. How health checks and ``depends_on`` conditions are handled under podman without systemd:
``compose_stack.py``.

The flow: build (``make dist``, the stand-ins, cached by a hash of their inputs, then the project's image with
``podman-compose build``), ``up -d --scale airflow-worker=2``, wait until every service is healthy, trigger
``device_parameter_sync`` through the REST API (token from ``POST /auth/token``) for the hour the demo fleet
ends at, unpause it, wait for the run, then check: the run succeeded; every task instance that ran, ran on one
of the two worker containers (its ``hostname`` is the worker's), and both workers were used; the
Airflow pool ``device_sync_db`` has the slots of ``DEVICE_SYNC_DB_POOL_SLOTS``; ``iot_data.device_parameters``
holds exactly the rows a plain-Python model of the sync's rules derives from the seeded sources; the metrics
reached moto; ``/device-sync/health`` answers 200. ``down -v`` always runs at the end, and what it leaves is
removed. Every wait is bounded; a failure prints the containers' states and the failing ones' last log
lines (whole logs of the latest run in ``tests/artifacts/compose/<project>/``). The phases' durations are
printed.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
import yaml
from compose_stack import ComposeStack, HealthChecker
from podman_cli import REPO, CommandFailed, Log, base_env, free_port, require_tools, run
from standin_images import StandinImages, build_standin_images, prune_dangling

from device_sync import metrics
from device_sync.config import load_settings

pytestmark = pytest.mark.timeout(3600)  # the sum of the phases' bounds below; each phase fails sooner

DAG_ID = "device_parameter_sync"
POOL = "device_sync_db"
POOL_SLOTS = 3  # not the default 4: proves DEVICE_SYNC_DB_POOL_SLOTS reaches airflow-init
WORKERS = 2
SHARDS = 4  # DEVICE_SYNC_AGGREGATION_SHARDS of tests/compose/compose.test.yaml
PROFILES = "dev,flower"
COMPOSE_FILE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / "deploy" / "compose.env.example"
OVERRIDE = Path(__file__).resolve().parent / "compose.test.yaml"
ARTIFACTS = REPO / "tests" / "artifacts" / "compose"
AIRFLOW_TEST_IMAGE = "localhost/device-sync-airflow-compose-test:3.3.2"  # never the user's device-sync-airflow
EXPECTED_SERVICES = {
    "postgres": 1,
    "redis": 1,
    "iot-db": 1,
    "moto": 1,
    "airflow-init": 1,
    "airflow-apiserver": 1,
    "airflow-scheduler": 1,
    "airflow-dag-processor": 1,
    "airflow-triggerer": 1,
    "airflow-worker": WORKERS,
    "flower": 1,
}
# Bounds of the phases, in seconds.
DIST_TIMEOUT = 300
PROJECT_BUILD_TIMEOUT = 900
UP_TIMEOUT = 900  # every service started (after its dependencies met their conditions)
HEALTHY_TIMEOUT = 600
DAG_PARSED_TIMEOUT = 300
RUN_TIMEOUT = 900
HEALTH_ENDPOINT_TIMEOUT = 120
DOWN_TIMEOUT = 300


# --- the running stack -----------------------------------------------------------------------------------
@dataclass
class Running:
    compose: ComposeStack
    env: dict[str, str]
    api: str
    iot_url: str
    moto_url: str
    flower_url: str
    log: Log
    timings: dict[str, float] = field(default_factory=dict)

    def request(
        self, method: str, path: str, body: Any = None, token: str | None = None, base: str | None = None
    ) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{base or self.api}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
                status = response.status
        except urllib.error.HTTPError as error:
            raw, status = error.read(), error.code
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")


def env_file_values(images: StandinImages, ports: dict[str, int]) -> dict[str, str]:
    """deploy/compose.env.example with fresh secrets, this run's ports and images, and the test's settings."""
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip().strip("'\"")
    values |= {
        "COMPOSE_PROFILES": PROFILES,
        "AIRFLOW_DB_PASSWORD": secrets.token_hex(24),
        "AIRFLOW_FERNET_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        "AIRFLOW_JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW_ADMIN_PASSWORD": secrets.token_hex(12),
        "IOT_DB_PASSWORD": secrets.token_hex(24),
        "AIRFLOW_BASE_IMAGE": images.airflow,
        "DEVICE_SYNC_DB_POOL_SLOTS": str(POOL_SLOTS),
        "AIRFLOW_API_PUBLISHED_PORT": str(ports["api"]),
        "IOT_DB_PUBLISHED_PORT": str(ports["iot-db"]),
        "MOTO_PUBLISHED_PORT": str(ports["moto"]),
        "FLOWER_PUBLISHED_PORT": str(ports["flower"]),
        "TEST_POSTGRES_IMAGE": images.postgres,
        "TEST_REDIS_IMAGE": images.redis,
        "TEST_MOTO_IMAGE": images.moto,
        "TEST_AIRFLOW_IMAGE": AIRFLOW_TEST_IMAGE,
    }
    empty = sorted(key for key, value in values.items() if not value)
    assert not empty, f"no value for {empty}"
    return values


def dependency_graph(profiles: set[str]) -> dict[str, dict[str, str]]:
    """Service -> {dependency: condition} of every service docker-compose.yaml starts with ``profiles`` (the
    override file changes no ``depends_on``)."""
    services = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))["services"]
    graph = {}
    for name, service in services.items():
        if service.get("profiles") and not set(service["profiles"]) & profiles:
            continue
        depends_on = service.get("depends_on") or {}
        if isinstance(depends_on, list):
            depends_on = {dependency: {} for dependency in depends_on}
        graph[name] = {dep: (options or {}).get("condition", "service_started") for dep, options in depends_on.items()}
    return graph


def write_env_file(path: Path, values: dict[str, str]) -> None:
    lines = [
        f"{key}='{value}'" if any(c in value for c in ' {"') else f"{key}={value}" for key, value in values.items()
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path.chmod(0o600)


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest) -> Iterator[Running]:
    # Progress goes straight to the terminal (past pytest's capture): the phases take minutes.
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    started = time.monotonic()

    def log(message: str) -> None:
        line = f"[compose {time.monotonic() - started:5.0f} s] {message}"
        if reporter is None or capture is None:
            print(line, flush=True)
            return
        with capture.global_and_fixture_disabled():
            if message.startswith("timings:"):  # after the test's progress dot
                reporter.write("\n")
            reporter.write_line(line)

    log(f"tools: {require_tools()}")
    timings: dict[str, float] = {}
    phase = time.monotonic()
    # The developer's environment (uv's TLS settings, for the pinned build backend), plus podman's config.
    run(["make", "dist"], timeout=DIST_TIMEOUT, what="make dist", env=base_env(dict(os.environ)))
    step = time.monotonic()
    images = build_standin_images(log)
    log(f"stand-in images ready after {time.monotonic() - step:.0f} s")

    project = f"dscompose{uuid.uuid4().hex[:10]}"
    for earlier in ARTIFACTS.glob("dscompose*"):  # keep the logs of the latest run only
        shutil.rmtree(earlier, ignore_errors=True)
    ports = {name: free_port() for name in ("api", "iot-db", "moto", "flower")}
    values = env_file_values(images, ports)
    workdir = Path(tempfile.mkdtemp(prefix=f"{project}-"))
    env_file = workdir / "compose.env"
    write_env_file(env_file, values)
    compose = ComposeStack(project, [COMPOSE_FILE, OVERRIDE], env_file, ARTIFACTS / project, log, env={})
    running = Running(
        compose=compose,
        env=values,
        api=f"http://127.0.0.1:{ports['api']}",
        iot_url=(
            f"postgresql://{values['IOT_DB_USER']}:{values['IOT_DB_PASSWORD']}@127.0.0.1:{ports['iot-db']}/"
            f"{values['IOT_DB_NAME']}"
        ),
        moto_url=f"http://127.0.0.1:{ports['moto']}",
        flower_url=f"http://127.0.0.1:{ports['flower']}",
        log=log,
        timings=timings,
    )
    checker = HealthChecker(compose)
    try:
        step = time.monotonic()
        compose.compose("build", "airflow-init", timeout=PROJECT_BUILD_TIMEOUT, what="podman-compose build")
        prune_dangling()
        log(f"the project's image built from Dockerfile in {time.monotonic() - step:.0f} s")
        timings["build"] = time.monotonic() - phase
        log(f"build: {timings['build']:.0f} s (make dist, stand-in images, the project's Dockerfile)")

        checker.start()
        phase = time.monotonic()
        log(f"up: project {project}, {WORKERS} workers, profiles {PROFILES}, api-server on {running.api}")
        graph = dependency_graph(set(PROFILES.split(",")))
        assert set(graph) == set(EXPECTED_SERVICES), sorted(graph)
        compose.up_in_dependency_order(graph, {"airflow-worker": WORKERS}, timeout=UP_TIMEOUT)
        log(f"  every service started after {time.monotonic() - phase:.0f} s; waiting until all are healthy")
        compose.wait_healthy(EXPECTED_SERVICES, timeout=HEALTHY_TIMEOUT)
        timings["up until healthy"] = time.monotonic() - phase
        log(f"up until healthy: {timings['up until healthy']:.0f} s ({checker.checks_run} health checks run)")
        yield running
    finally:
        if checker.is_alive():
            checker.stop()
        try:
            compose.save_logs()
        except CommandFailed as error:
            log(f"could not save the logs: {error}")
        phase = time.monotonic()
        try:
            down(compose)
        finally:
            timings["down"] = time.monotonic() - phase
            shutil.rmtree(workdir, ignore_errors=True)
            summary = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timings.items())
            log(f"timings: {summary}; logs of this run: {compose.artifacts}")


def down(compose: ComposeStack) -> None:
    """``down -v --remove-orphans`` (orphans: the scaled workers beyond the first, which podman-compose's down
    only finds by the project label), then anything still there of the project is removed and reported."""
    try:
        compose.compose("down", "-v", "--remove-orphans", timeout=DOWN_TIMEOUT, what="podman-compose down -v")
    finally:
        label = f"label=io.podman.compose.project={compose.project}"
        left = {
            "containers": compose.container_names(),
            "volumes": compose.podman("volume", "ls", "--filter", label, "--format", "{{.Name}}").split(),
            "networks": [
                name
                for name in compose.podman("network", "ls", "--format", "{{.Name}}").split()
                if name.startswith(f"{compose.project}_")
            ],
            "pods": compose.podman(
                "pod", "ls", "--filter", f"name=pod_{compose.project}", "--format", "{{.Name}}"
            ).split(),
        }
        if left["containers"]:
            compose.podman("rm", "-f", "-t", "5", *left["containers"], timeout=120, check=False)
        for kind, command in (("pods", "pod"), ("volumes", "volume"), ("networks", "network")):
            if left[kind]:
                compose.podman(command, "rm", "-f", *left[kind], timeout=120, check=False)
        leftovers = {kind: names for kind, names in left.items() if names}
        assert not leftovers, f"podman-compose down -v left {leftovers} (removed now)"


# --- the expected table ----------------------------------------------------------------------------------
Row = tuple[str, str, str, str]


def blank(name: str | None) -> bool:
    return name is None or name.strip() == ""


def expected_rows(conn: psycopg.Connection[Any], start: datetime, end: datetime) -> tuple[set[Row], set[Row]]:
    """(the target before the run, the target the run must leave), from the sync's rules written in plain
    Python (the rules of tests/integration/test_sync_property.py's model): a device is active when its row has
    status TRUE; the pairs observed are the distinct (device, parameter) measured in ``[start, end)`` by an
    active device; an observed pair is desired, with the source names, when the device's name is not blank and
    the parameter is known with a name that is not blank, else it is skipped and its old row (if any) stays as
    it is; every other row goes. The demo fleet has one row per device and per parameter id (asserted), so no
    tie-breaking between names is needed."""
    devices = conn.execute("SELECT device_id, device_name, status FROM iot_data.redshift_devices").fetchall()
    parameters = conn.execute("SELECT parameter_id, parameter_name FROM iot_data.timescale_parameters").fetchall()
    assert len({d[0] for d in devices}) == len(devices) and len({p[0] for p in parameters}) == len(parameters)
    active = {device_id: name for device_id, name, status in devices if device_id and status is True}
    names = {parameter_id: name for parameter_id, name in parameters if parameter_id is not None}
    measured = conn.execute(
        'SELECT DISTINCT device_id, parameter_id FROM iot_data.measurements WHERE "time" >= %s AND "time" < %s',
        (start, end),
    ).fetchall()
    observed = {(d, p) for d, p in measured if d in active and p is not None}
    desired = {
        (d, p): (str(active[d]), str(names[p]))
        for d, p in observed
        if not blank(active[d]) and p in names and not blank(names[p])
    }
    before: set[Row] = set(
        conn.execute("SELECT device_id, device_name, parameter_id, parameter_name FROM iot_data.device_parameters")
    )
    kept = {row for row in before if (row[0], row[2]) in observed - desired.keys()}
    after = {(d, device_name, p, parameter_name) for (d, p), (device_name, parameter_name) in desired.items()}
    return before, after | kept


# --- the test --------------------------------------------------------------------------------------------
def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 3) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} (after {timeout:.0f} s)")
        time.sleep(interval)


def worker_hostnames(stack: Running) -> dict[str, str]:
    """The hostname each worker container's Airflow records on a task instance, by container name."""
    found = {}
    for container in stack.compose.services()["airflow-worker"]:
        out = stack.compose.podman(
            "exec",
            container.name,
            "python",
            "-c",
            "from airflow.utils.net import get_hostname; print(get_hostname())",
            timeout=120,
            what=f"the hostname of {container.name}",
        )
        found[container.name] = out.strip().splitlines()[-1]
    return found


def test_the_dag_runs_on_the_celery_workers_of_the_compose_stack(stack: Running) -> None:
    status, body = stack.request(
        "POST", "/auth/token", {"username": "admin", "password": stack.env["AIRFLOW_ADMIN_PASSWORD"]}
    )
    assert status == 201, (status, body)
    token = body["access_token"]

    def dag_visible() -> bool:
        status, _ = stack.request("GET", f"/api/v2/dags/{DAG_ID}", token=token)
        if status != 200:
            _, errors = stack.request("GET", "/api/v2/importErrors", token=token)
            assert not (errors or {}).get("import_errors"), f"import errors: {errors}"
        return status == 200

    wait_for(dag_visible, DAG_PARSED_TIMEOUT, f"the api-server never listed {DAG_ID}")
    status, pool = stack.request("GET", f"/api/v2/pools/{POOL}", token=token)
    assert status == 200 and pool["slots"] == POOL_SLOTS, (status, pool)

    settings = load_settings()  # the dev stage file, as in the containers (DEVICE_SYNC_STAGE=dev)
    with psycopg.connect(stack.iot_url, autocommit=True, connect_timeout=10) as conn:
        newest = conn.execute('SELECT max("time") FROM iot_data.measurements').fetchone()
        assert newest is not None and newest[0] is not None, "iot-db holds no measurements: the seed did not run"
        # The demo fleet's day ends at the hour it was seeded (its last measurement is 5 minutes before).
        window_end = newest[0].astimezone(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        before, expected = expected_rows(conn, window_end - timedelta(minutes=settings.lookback_minutes), window_end)
    stack.log(f"demo fleet up to {window_end.isoformat()}: {len(before)} rows before, {len(expected)} expected")

    # Triggered while paused, then unpaused. The override file keeps the scheduler from adding a scheduled run
    # for the latest fire time, so this is the only run.
    phase = time.monotonic()
    status, triggered = stack.request(
        "POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": window_end.isoformat(), "conf": {}}, token=token
    )
    assert status == 200, (status, triggered)
    run_id = triggered["dag_run_id"]
    status, body = stack.request("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False}, token=token)
    assert status == 200, (status, body)

    def finished() -> str | None:
        _, body = stack.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}", token=token)
        state = body.get("state") if isinstance(body, dict) else None
        return state if state in ("success", "failed") else None

    def task_instances() -> list[dict[str, Any]]:
        _, body = stack.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances?limit=100", token=token)
        return list(body["task_instances"])

    try:
        state = wait_for(finished, RUN_TIMEOUT, f"the run {run_id} did not finish", interval=5)
    except AssertionError as error:
        states = {f"{ti['task_id']}[{ti['map_index']}]": ti["state"] for ti in task_instances()}
        raise AssertionError(f"{error}: task instances {states}\n{stack.compose.failure_report(lines=60)}") from error
    finally:
        stack.request("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": True}, token=token)
    stack.timings["DAG run"] = time.monotonic() - phase
    stack.log(f"DAG run {run_id}: {state} after {stack.timings['DAG run']:.0f} s")

    _, runs = stack.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns", token=token)
    assert [r["dag_run_id"] for r in runs["dag_runs"]] == [run_id], runs  # no scheduled run beside it
    tis = task_instances()
    summary = {f"{ti['task_id']}[{ti['map_index']}]": (ti["state"], ti["hostname"], ti["pool"]) for ti in tis}
    workers = worker_hostnames(stack)
    stack.log(f"workers: {workers}")
    stack.log("task instances: " + "; ".join(f"{key} {value}" for key, value in sorted(summary.items())))
    if state != "success":
        names = [name for name in stack.compose.container_names() if "worker" in name or "scheduler" in name]
        raise AssertionError(f"run {state}: {summary}\n{stack.compose.failure_report(names, 80)}")

    # Every task instance ran on a worker container (the watcher is skipped: it never ran anywhere).
    ran = [ti for ti in tis if ti["state"] != "skipped"]
    assert {ti["state"] for ti in ran} == {"success"}, summary
    assert sum(ti["task_id"] == "aggregate_recent_measurements" for ti in ran) == SHARDS, summary
    assert {ti["task_id"] for ti in tis if ti["state"] == "skipped"} == {"fail_if_sync_failed"}, summary
    hostnames = {ti["hostname"] for ti in ran}
    assert hostnames <= set(workers.values()), f"task instances ran on {hostnames}, workers are {workers}"
    used = sorted(name for name, hostname in workers.items() if hostname in hostnames)
    stack.log(f"task instances ran on {len(used)} of {WORKERS} workers: {used}")
    assert len(used) == WORKERS, f"only {used} of the workers {sorted(workers)} ran tasks: {summary}"
    assert {ti["pool"] for ti in ran if ti["task_id"] == "aggregate_recent_measurements"} == {POOL}, summary

    with psycopg.connect(stack.iot_url, autocommit=True, connect_timeout=10) as conn:
        after = set(
            conn.execute("SELECT device_id, device_name, parameter_id, parameter_name FROM iot_data.device_parameters")
        )
        history = conn.execute(
            f"SELECT status, applied, inserted, deleted, updated FROM {settings.staging_schema}.run_history "
            "WHERE run_id = %s",
            (run_id,),
        ).fetchone()
    assert history is not None and history[:2] == ("success", True), history
    inserted, deleted, updated = history[2:]
    assert (inserted + updated, deleted + updated) == (len(after - before), len(before - after)), history
    assert after == expected, (
        f"{len(after - expected)} rows too many, {len(expected - after)} missing: "
        f"{sorted(after - expected)[:5]} / {sorted(expected - after)[:5]}"
    )
    stack.log(
        f"iot_data.device_parameters: {len(before)} -> {len(after)} rows, as expected "
        f"({len(after - before)} new or renamed, {len(before - after)} gone or renamed)"
    )

    cloudwatch = boto3.client(
        "cloudwatch",
        endpoint_url=stack.moto_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    now = datetime.now(UTC)
    sent = metrics.read_back(
        cloudwatch,
        namespace=settings.cloudwatch_namespace,
        stage="dev",
        since=now - timedelta(hours=2),
        until=now + timedelta(hours=1),
    )
    assert sent.get("SyncSuccess") == 1, sent
    assert (sent["RowsInserted"], sent["RowsDeleted"], sent["RowsUpdated"]) == (inserted, deleted, updated), sent

    def healthy() -> tuple[int, Any] | None:
        answer = stack.request("GET", "/device-sync/health")
        return answer if answer[0] == 200 else None

    status, health = wait_for(healthy, HEALTH_ENDPOINT_TIMEOUT, "/device-sync/health never answered 200")
    assert health["status"] == "healthy", health
    flower_status, _ = stack.request("GET", "/", base=stack.flower_url)
    assert flower_status == 200
