"""One compose project of the compose test: podman-compose commands, a start in dependency order, the
containers' state and logs, a bounded wait until every service is healthy, and the health checks that podman
does not run here by itself.

What plain ``podman-compose up -d`` does with Debian bookworm's podman 4.3.1 and podman-compose 1.6.0, and
what the harness does instead (all seen on this machine):

- podman-compose turns ``depends_on`` into ``podman create --requires``. ``podman start`` of a container whose
  required container has requirements of its own fails in podman 4.3 ("generating dependency graph for
  container ...: container ... depends on container ... not found in input list"): the Airflow services
  require airflow-init, which requires postgres and redis, so they never start. (``--requires`` would also
  start the exited airflow-init again.) So the harness starts the services itself, in the order their
  ``depends_on`` conditions give, each batch with ``podman-compose up -d --no-deps --scale airflow-worker=N
  <services>`` (:meth:`ComposeStack.up_in_dependency_order`), and waits for each condition itself:
  ``service_healthy`` (the dependency's health check passed), ``service_completed_successfully`` (it exited
  with 0; a failure stops the test at once with its log), ``service_started``.
- podman-compose waits for ``condition: service_healthy`` with ``podman wait --condition=healthy``, which podman
  < 4.6 lacks, so it skips that condition ("Ignored ... condition check due to podman 4.3.1 doesn't support
  healthy!"); the harness's own wait above covers it.
- podman schedules a container's health checks with systemd timers. There is no systemd here, so podman
  logs "unable to get systemd connection to add healthchecks" and never runs them: a container stays
  ``starting`` forever. ``podman healthcheck run <container>`` does run a check and records its result
  (``healthy``/``unhealthy``, the failing streak, ``start_period``), so :class:`HealthChecker`, a background
  thread, runs it for every running container of the project that has a health check: every
  :data:`STARTING_INTERVAL` seconds until the container is healthy, then at the interval of its own health
  check (like Docker's ``start_interval``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podman_cli import PODMAN_COMPOSE, REPO, CommandFailed, Log, base_env, run, tail

STARTING_INTERVAL = 5.0  # seconds between two health checks of a container that is not healthy yet
HEALTH_CHECK_WORKERS = 3  # checks run at once (each Airflow check starts a Python that imports Airflow)
NANOSECONDS = 1_000_000_000


@dataclass(frozen=True)
class Container:
    name: str
    service: str
    status: str  # podman's State.Status: created, running, exited, ...
    exit_code: int
    health: str | None  # starting, healthy, unhealthy; None without a health check
    health_interval: float | None
    health_timeout: float
    hostname: str
    restarts: int
    last_check: str  # the output of the last health check

    @property
    def ready(self) -> bool:
        if self.health_interval is None:
            return self.status == "running"
        return self.status == "running" and self.health == "healthy"


def _seconds(nanoseconds: Any, default: float) -> float:
    return float(nanoseconds) / NANOSECONDS if nanoseconds else default


class ComposeStack:
    """``podman-compose -p <project> --env-file <env> -f docker-compose.yaml -f <override>``."""

    def __init__(
        self, project: str, files: Sequence[Path], env_file: Path, artifacts: Path, log: Log, env: Mapping[str, str]
    ) -> None:
        self.project = project
        self.files = list(files)
        self.env_file = env_file
        self.artifacts = artifacts
        self.log = log
        self.env = base_env(env)

    # --- commands --------------------------------------------------------------------------------------
    def compose(self, *args: str, timeout: float, what: str, check: bool = True) -> str:
        command = [str(PODMAN_COMPOSE), "-p", self.project, "--env-file", str(self.env_file)]
        for file in self.files:
            command += ["-f", str(file)]
        result = run([*command, *args], timeout=timeout, what=what, env=self.env, cwd=REPO, check=check)
        return result.stdout + result.stderr

    def podman(self, *args: str, timeout: float = 120, what: str = "podman", check: bool = True) -> str:
        return run(["podman", *args], timeout=timeout, what=what, env=self.env, check=check).stdout

    # --- state -----------------------------------------------------------------------------------------
    def container_names(self) -> list[str]:
        listing = self.podman(
            "ps", "-a", "--filter", f"label=io.podman.compose.project={self.project}", "--format", "{{.Names}}"
        )
        return sorted(listing.split())

    def containers(self) -> list[Container]:
        names = self.container_names()
        if not names:
            return []
        found = []
        for item in json.loads(self.podman("inspect", *names, what="podman inspect")):
            config, state = item["Config"], item["State"]
            check = config.get("Healthcheck") or {}
            has_check = bool(check.get("Test")) and check["Test"] != ["NONE"]
            health = state.get("Health") or state.get("Healthcheck") or {}
            found.append(
                Container(
                    name=item["Name"],
                    service=config["Labels"].get("com.docker.compose.service", "?"),
                    status=state["Status"],
                    exit_code=int(state.get("ExitCode") or 0),
                    health=(health.get("Status") or "starting") if has_check else None,
                    health_interval=_seconds(check.get("Interval"), 30.0) if has_check else None,
                    health_timeout=_seconds(check.get("Timeout"), 30.0),
                    hostname=config.get("Hostname", ""),
                    restarts=int(item.get("RestartCount") or 0),
                    last_check=str(((health.get("Log") or [{}])[-1]).get("Output", "")).strip(),
                )
            )
        return sorted(found, key=lambda c: c.name)

    def services(self) -> dict[str, list[Container]]:
        grouped: dict[str, list[Container]] = {}
        for container in self.containers():
            grouped.setdefault(container.service, []).append(container)
        return grouped

    def logs(self, name: str, lines: int | None = None) -> str:
        args = ["logs", *(["--tail", str(lines)] if lines else []), name]
        result = run(["podman", *args], timeout=60, what=f"podman logs {name}", env=self.env, check=False)
        return result.stdout + result.stderr

    def describe(self) -> str:
        rows = []
        for c in self.containers():
            health = f", {c.health}" if c.health else ""
            exited = f" ({c.exit_code})" if c.status == "exited" else ""
            restarts = f", restarted {c.restarts}x" if c.restarts else ""
            rows.append(f"  {c.name}: {c.status}{exited}{health}{restarts}")
        return "\n".join(rows) or "  (no containers)"

    def save_logs(self) -> Path:
        """Every container's whole log under the artifacts folder (for a failed run's post-mortem)."""
        self.artifacts.mkdir(parents=True, exist_ok=True)
        for name in self.container_names():
            (self.artifacts / f"{name}.log").write_text(self.logs(name), encoding="utf-8")
        (self.artifacts / "containers.txt").write_text(self.describe() + "\n", encoding="utf-8")
        return self.artifacts

    def failure_report(self, names: Sequence[str] | None = None, lines: int = 40) -> str:
        """The containers' states and the last log lines of ``names`` (default: every container not ready)."""
        containers = self.containers()
        chosen = [c for c in containers if (c.name in names if names is not None else not c.ready)]
        if names is None:  # airflow-init is ready when it exited with 0
            chosen = [c for c in chosen if not (c.service == "airflow-init" and c.exit_code == 0)]
        parts = [f"containers of {self.project}:\n{self.describe()}"]
        for c in chosen:
            parts.append(f"--- last {lines} log lines of {c.name} ---\n{tail(self.logs(c.name, lines * 3), lines)}")
            if c.health and c.health != "healthy" and c.last_check:
                parts.append(f"--- its last health check said ---\n{tail(c.last_check, 10)}")
        parts.append(f"(whole logs: {self.save_logs()})")
        return "\n".join(parts)

    # --- starting and waiting --------------------------------------------------------------------------
    def _condition_met(self, service: str, condition: str, services: Mapping[str, list[Container]]) -> bool:
        containers = services.get(service, [])
        if not containers:
            return False
        if condition == "service_completed_successfully":
            failed = [c for c in containers if c.status == "exited" and c.exit_code != 0]
            if failed:
                names = [c.name for c in failed]
                raise AssertionError(
                    f"{service} failed (exit status {failed[0].exit_code})\n{self.failure_report(names, 80)}"
                )
            return all(c.status == "exited" for c in containers)
        if condition == "service_healthy":
            return all(c.status == "running" and c.health == "healthy" for c in containers)
        return all(c.status in ("running", "exited") for c in containers)  # service_started

    def up_in_dependency_order(
        self, depends_on: Mapping[str, Mapping[str, str]], scale: Mapping[str, int], timeout: float
    ) -> None:
        """Start every service of ``depends_on`` (service -> {dependency: condition}) once its dependencies meet
        their conditions, in batches of ``podman-compose up -d --no-deps`` (see the module docstring)."""
        deadline = time.monotonic() + timeout
        scale_args = [arg for service, n in scale.items() for arg in ("--scale", f"{service}={n}")]
        pending = dict(depends_on)
        last_report = time.monotonic()
        while pending:
            services = self.services()
            ready = sorted(
                name
                for name, dependencies in pending.items()
                if all(self._condition_met(dep, cond, services) for dep, cond in dependencies.items())
            )
            now = time.monotonic()
            if ready:
                self.log(f"  starting {', '.join(ready)}")
                try:
                    self.compose(
                        "up",
                        "-d",
                        "--no-deps",
                        *scale_args,
                        *ready,
                        timeout=max(deadline - now, 30),
                        what=f"podman-compose up -d {' '.join(ready)}",
                    )
                except CommandFailed as error:
                    raise AssertionError(f"{error}\n{self.failure_report()}") from error
                for name in ready:
                    del pending[name]
                continue
            waiting = {name: sorted(deps) for name, deps in pending.items()}
            if now > deadline:
                raise AssertionError(
                    f"not started after {timeout:.0f} s: {waiting} (waiting for their dependencies)\n"
                    f"{self.failure_report(lines=60)}"
                )
            if now - last_report > 60:
                self.log(f"  still waiting to start: {waiting}")
                last_report = now
            time.sleep(2)

    def wait_healthy(self, expected: Mapping[str, int], timeout: float) -> float:
        """Wait until ``expected`` (service -> replicas) all run and are healthy and airflow-init has exited
        with 0; return the seconds waited. Fails at once when airflow-init fails, else after ``timeout``."""
        started = time.monotonic()
        deadline = started + timeout
        last_report = started
        while True:
            services = self.services()
            init = services.get("airflow-init", [])
            if any(c.status == "exited" and c.exit_code != 0 for c in init):
                raise AssertionError(f"airflow-init failed\n{self.failure_report([c.name for c in init], 80)}")
            waiting = []
            for service, replicas in expected.items():
                containers = services.get(service, [])
                if service == "airflow-init":
                    done = len(containers) == 1 and containers[0].status == "exited"
                else:
                    done = len(containers) == replicas and all(c.ready for c in containers)
                if not done:
                    waiting.append(service)
            if not waiting:
                return time.monotonic() - started
            now = time.monotonic()
            if now > deadline:
                raise AssertionError(
                    f"not healthy after {timeout:.0f} s: {', '.join(waiting)}\n{self.failure_report(lines=60)}"
                )
            if now - last_report > 60:
                self.log(f"  still waiting ({now - started:.0f} s) for: {', '.join(waiting)}")
                last_report = now
            time.sleep(2)


class HealthChecker(threading.Thread):
    """Runs the project's container health checks, which podman does not run by itself without systemd (see
    the module docstring): a container that is not healthy yet every :data:`STARTING_INTERVAL` seconds, a
    healthy one at its own interval, never two checks of one container at once."""

    def __init__(self, stack: ComposeStack) -> None:
        super().__init__(name=f"health-checks-{stack.project}", daemon=True)
        self.stack = stack
        self.stopped = threading.Event()
        self.checks_run = 0
        self._due: dict[str, float] = {}
        self._running: dict[str, Future[None]] = {}
        self._pool = ThreadPoolExecutor(max_workers=HEALTH_CHECK_WORKERS, thread_name_prefix="healthcheck")

    def _check(self, container: Container) -> None:
        # The check's own timeout is podman's; this bound only keeps a hung `podman` from blocking the thread.
        self.stack.podman(
            "healthcheck",
            "run",
            container.name,
            timeout=container.health_timeout + 60,
            what=f"podman healthcheck run {container.name}",
            check=False,
        )
        self.checks_run += 1

    def run(self) -> None:
        while not self.stopped.wait(1):
            try:
                containers = self.stack.containers()
            except CommandFailed:
                continue  # podman busy or the project going down: try again
            now = time.monotonic()
            for c in containers:
                if c.health_interval is None or c.status != "running":
                    continue
                running = self._running.get(c.name)
                if running is not None and not running.done():
                    continue
                if now < self._due.get(c.name, 0):
                    continue
                interval = c.health_interval if c.health == "healthy" else STARTING_INTERVAL
                self._due[c.name] = now + interval
                try:
                    self._running[c.name] = self._pool.submit(self._check, c)
                except RuntimeError:  # the interpreter is shutting down
                    return
        self._pool.shutdown(wait=False, cancel_futures=True)

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=30)
