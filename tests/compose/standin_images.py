"""The stand-in images of the compose test, built locally (no image registry is reachable here) and cached.

- ``device-sync-standin-base``: Debian bookworm from ``debootstrap --variant=minbase`` (Python 3.11, the venv
  module, curl, ca-certificates, dumb-init), imported with ``podman import``.
- ``device-sync-standin-airflow``: the base with requirements.txt (Airflow 3.3.2 and everything pinned) in a
  virtualenv, the user ``airflow`` (uid 50000, gid 0), ``AIRFLOW_HOME=/opt/airflow``, ``AIRFLOW_VERSION`` and an
  ``/entrypoint`` like the official image's: the ``AIRFLOW_BASE_IMAGE`` of the project's Dockerfile.
- ``device-sync-standin-postgres`` (Debian's PostgreSQL 15, an entrypoint like the official postgres image's:
  the metadata database and the IoT database), ``device-sync-standin-redis`` (Debian's redis-server: the Celery
  broker) and ``device-sync-standin-moto`` (moto[server] at the version requirements-dev.txt pins).

Each tag is a hash of the image's inputs (its folder under ``images/``, requirements.txt for Airflow, the
pinned versions, its parent's tag), so a second run finds every image in podman's store and builds nothing;
a changed input builds that image and those built on it. Older tags of the stand-ins are removed after a
build. Containers reach PyPI only with the host's CA bundle, so the builds that run pip mount it (``podman
build --volume``), with a pip cache under ``.tools/compose-cache/pip``.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from podman_cli import REPO, CommandFailed, Log, image_exists, podman, run

IMAGES = Path(__file__).resolve().parent / "images"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
PIP_CACHE = REPO / ".tools" / "compose-cache" / "pip"
LABEL = "device-sync.standin"

# The base image's recipe: bump RECIPE_VERSION when the code below changes what it builds.
RECIPE_VERSION = 1
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
BASE_PACKAGES = ("ca-certificates", "curl", "dumb-init", "python3", "python3-venv", "procps")
SOURCES = f"""Types: deb
URIs: {MIRROR}
Suites: {SUITE} {SUITE}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: {SECURITY_MIRROR}
Suites: {SUITE}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
# As in Debian's official container images: packages installed during a build start no services.
POLICY_RC_D = "#!/bin/sh\nexit 101\n"

DEBOOTSTRAP_TIMEOUT = 1200
BUILD_TIMEOUT = {"airflow": 2400, "moto": 900, "postgres": 900, "redis": 600}


@dataclass(frozen=True)
class StandinImages:
    base: str
    airflow: str
    postgres: str
    redis: str
    moto: str


def _digest(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()[:16]


def _folder_digest(folder: Path) -> list[str | bytes]:
    parts: list[str | bytes] = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        parts += [str(path.relative_to(folder)), oct(path.stat().st_mode & 0o111), path.read_bytes()]
    return parts


def pinned(requirements: Path, name: str) -> str:
    match = re.search(rf"^{re.escape(name)}==(\S+)$", requirements.read_text(encoding="utf-8"), re.MULTILINE)
    if match is None:
        raise CommandFailed(f"{requirements.name} pins no {name}")
    return match[1]


def _base(log: Log) -> str:
    recipe = json.dumps(
        {"v": RECIPE_VERSION, "suite": SUITE, "mirror": MIRROR, "packages": BASE_PACKAGES, "sources": SOURCES},
        sort_keys=True,
    )
    ref = f"localhost/device-sync-standin-base:{_digest(recipe)}"
    if image_exists(ref):
        return ref
    log(f"building {ref}: debootstrap --variant=minbase {SUITE} (about a minute)")
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="device-sync-debootstrap-", dir="/var/tmp"))
    try:
        rootfs = work / "rootfs"
        run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                SUITE,
                str(rootfs),
                MIRROR,
            ],
            timeout=DEBOOTSTRAP_TIMEOUT,
            what=f"debootstrap {SUITE}",
        )
        (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
        (rootfs / "etc/apt/sources.list.d/debian.sources").write_text(SOURCES, encoding="utf-8")
        policy = rootfs / "usr/sbin/policy-rc.d"
        policy.write_text(POLICY_RC_D, encoding="utf-8")
        policy.chmod(0o755)
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / cache).glob("*"):
                if entry.is_file():
                    entry.unlink()
        tarball = work / "rootfs.tar"
        run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], timeout=600, what="tar of the debootstrap tree")
        podman(
            "import",
            "--change",
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--change",
            "ENV LANG=C.UTF-8",
            "--change",
            'CMD ["/bin/bash"]',
            "--change",
            f"LABEL {LABEL}=base",
            str(tarball),
            ref,
            timeout=600,
            what="podman import of the debootstrap tree",
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"built {ref} in {time.monotonic() - started:.0f} s")
    return ref


def _build(
    name: str,
    parent: str,
    log: Log,
    *,
    args: dict[str, str],
    extra_files: dict[str, Path] | None = None,
    pip: bool = False,
) -> str:
    folder = IMAGES / name
    files = extra_files or {}
    inputs: list[str | bytes] = [parent, json.dumps(args, sort_keys=True), *_folder_digest(folder)]
    for target, source in sorted(files.items()):
        inputs += [target, source.read_bytes()]
    ref = f"localhost/device-sync-standin-{name}:{_digest(*inputs)}"
    if image_exists(ref):
        return ref
    log(f"building {ref}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"device-sync-standin-{name}-") as context:
        shutil.copytree(folder, context, dirs_exist_ok=True)
        for target, source in files.items():
            shutil.copy2(source, Path(context) / target)
        command = ["podman", "build", "--pull=never", "--layers", "-f", "Containerfile", "-t", ref]
        command += ["--label", f"{LABEL}={name}", "--build-arg", f"STANDIN_BASE={parent}"]
        for key, value in args.items():
            command += ["--build-arg", f"{key}={value}"]
        if pip:  # PyPI over TLS needs the host's CA bundle; the pip cache makes a rebuild cheap
            PIP_CACHE.mkdir(parents=True, exist_ok=True)
            command += ["--volume", f"{CA_BUNDLE}:{CA_BUNDLE}:ro", "--volume", f"{PIP_CACHE}:/root/.cache/pip"]
        run([*command, context], timeout=BUILD_TIMEOUT[name], what=f"podman build of the {name} stand-in")
    log(f"built {ref} in {time.monotonic() - started:.0f} s")
    return ref


def _prune(keep: set[str]) -> None:
    """Remove older tags of the stand-ins (best effort: an image a container still uses stays)."""
    listing = podman(
        "images", "--filter", f"label={LABEL}", "--format", "{{.Repository}}:{{.Tag}}", what="podman images"
    )
    ours = "localhost/device-sync-standin-"  # not the images built on them (the compose test's Airflow image)
    stale = sorted({ref for ref in listing.split() if ref.startswith(ours) and ref not in keep})
    if stale:
        run(["podman", "rmi", *stale], timeout=300, what="podman rmi of older stand-ins", check=False)


def prune_dangling() -> None:
    """Remove untagged images built on the stand-ins (earlier builds of the project's image); others stay."""
    run(
        ["podman", "image", "prune", "--force", "--filter", f"label={LABEL}"],
        timeout=300,
        what="podman image prune",
        check=False,
    )


def build_standin_images(log: Log) -> StandinImages:
    requirements = REPO / "requirements.txt"
    base = _base(log)
    images = StandinImages(
        base=base,
        airflow=_build(
            "airflow",
            base,
            log,
            args={"AIRFLOW_VERSION": pinned(requirements, "apache-airflow")},
            extra_files={"requirements.txt": requirements},
            pip=True,
        ),
        postgres=_build("postgres", base, log, args={}),
        redis=_build("redis", base, log, args={}),
        moto=_build("moto", base, log, args={"MOTO_VERSION": pinned(REPO / "requirements-dev.txt", "moto")}, pip=True),
    )
    _prune({images.base, images.airflow, images.postgres, images.redis, images.moto})
    return images
