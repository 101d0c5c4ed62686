"""Running podman and podman-compose from the compose test: a clean environment, bounded commands, errors
that say what failed and show its output.

Every command gets ``CONTAINERS_CONF`` = ``tests/compose/containers.conf`` (runc with cgroupfs, no default
ulimits, no pids limit: Debian's default crun fails on this machine), which is the only machine-specific
podman setting; the user-facing ``docker-compose.yaml`` knows nothing of it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CONTAINERS_CONF = HERE / "containers.conf"
PODMAN_COMPOSE = REPO / ".tools" / "podman-compose" / "bin" / "podman-compose"
HOW_TO_GET_TOOLS = "run `make test-compose` (or scripts/ensure_compose_tools.sh as root) first"

Log = Callable[[str], None]


class CommandFailed(AssertionError):
    """A podman, podman-compose or build command failed or ran out of time; the message holds its output."""


def tail(text: str, lines: int = 60) -> str:
    kept = text.strip().splitlines()[-lines:]
    return "\n".join(kept)


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A minimal environment: nothing of the developer's shell (AIRFLOW_*, DEVICE_SYNC_*, COMPOSE_*) leaks
    into Compose's variable interpolation."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"),
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        "CONTAINERS_CONF": str(CONTAINERS_CONF),
    }
    if "TMPDIR" in os.environ:
        env["TMPDIR"] = os.environ["TMPDIR"]
    env.update(extra or {})
    return env


def run(
    command: Sequence[str],
    *,
    timeout: float,
    what: str,
    env: Mapping[str, str] | None = None,
    cwd: Path = REPO,
    check: bool = True,
    stdin: bytes | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` to its end within ``timeout`` seconds; raise :class:`CommandFailed` (with the output)
    when it times out or, with ``check``, exits non-zero."""
    started = time.monotonic()
    try:
        result = subprocess.run(
            list(command),
            input=stdin.decode() if stdin is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env) if env is not None else base_env(),
            cwd=cwd,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        output = (_text(error.stdout) + _text(error.stderr)).strip()
        raise CommandFailed(f"{what}: no result after {timeout:.0f} s: {' '.join(command)}\n{tail(output)}") from error
    if check and result.returncode != 0:
        raise CommandFailed(
            f"{what}: exit status {result.returncode} after {time.monotonic() - started:.0f} s: "
            f"{' '.join(command)}\n{tail(result.stdout + result.stderr)}"
        )
    return result


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def podman(*args: str, timeout: float = 120, what: str = "podman", check: bool = True) -> str:
    return run(["podman", *args], timeout=timeout, what=what, check=check).stdout


def free_port() -> int:
    """A TCP port free on this host right now (for a published port of the stack)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def image_exists(ref: str) -> bool:
    return run(["podman", "image", "exists", ref], timeout=60, what="podman image exists", check=False).returncode == 0


def require_tools() -> str:
    """The versions of podman, runc and podman-compose; a clear failure when one is missing."""
    missing = [tool for tool in ("podman", "runc", "debootstrap") if shutil.which(tool) is None]
    if not PODMAN_COMPOSE.exists():
        missing.append(str(PODMAN_COMPOSE.relative_to(REPO)))
    if missing:
        raise CommandFailed(f"missing for the compose test: {', '.join(missing)}: {HOW_TO_GET_TOOLS}")
    podman_version = podman("--version", what="podman --version").strip()
    runtime = podman("info", "--format", "{{.Host.OCIRuntime.Name}}", what="podman info").strip()
    if runtime != "runc":
        raise CommandFailed(f"podman uses the runtime {runtime!r}, not runc: is {CONTAINERS_CONF} read?")
    compose_version = run(
        [str(PODMAN_COMPOSE), "--version"], timeout=60, what="podman-compose --version"
    ).stdout.strip()
    compose_line = next(line for line in compose_version.splitlines() if line.startswith("podman-compose"))
    return f"{podman_version} (runc), {compose_line}"
