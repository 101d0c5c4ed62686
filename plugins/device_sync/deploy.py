"""Deploy device-sync to Amazon MWAA for one stage (idempotent): ``device-sync-deploy --stage dev|prod``.

    device-sync-deploy --stage dev|prod [--dist DIR | --wheel PATH] [--dags-only] [--dry-run] [--alarm-action ARN ...]

It works wherever the wheel is installed (the DAG files, stage files and MWAA package sets are its package
data); in the checkout ``make deploy STAGE=dev|prod`` builds the wheel and runs it through
``scripts/deploy.py``. It uploads to the bucket ``DEVICE_SYNC_DEPLOY_BUCKET`` (which must have versioning
enabled):

``dags/<file>.py``      every DAG file of the package (MWAA syncs the ``dags`` folder by itself)
``plugins.zip``         the wheel ``device_sync-<version>-py3-none-any.whl`` at the zip's root, which MWAA unpacks
                        into ``/usr/local/airflow/plugins/``
``requirements.txt``    ``--constraint`` Airflow's constraints file of the environment's Airflow version, the
                        wheel by its path there, and pins of only those runtime dependencies of the wheel that
                        MWAA's constraints do not pin, at the versions ``make test-platforms`` installs on that
                        MWAA version (``include/mwaa/<version>/added_pins.txt``; :func:`requirements_txt`)
``startup.sh``          exports ``DEVICE_SYNC_STAGE`` and the stage file's ``DEVICE_SYNC_*`` settings

then points the MWAA environment ``DEVICE_SYNC_MWAA_ENVIRONMENT`` at exactly those object versions
(UpdateEnvironment), creates or resizes the Airflow pool ``device_sync_db`` through the environment's REST API
when the environment is AVAILABLE, and deploys the stage's CloudWatch alarms and dashboard (as
``make deploy-monitoring``). The settings may also be set in ``include/config/<stage>.env``. Without an
environment the objects are uploaded, the monitoring deployed, and no environment is updated.

The Airflow version that requirements.txt is written for is the environment's (GetEnvironment's
``AirflowVersion``) or, without an environment, ``DEVICE_SYNC_MWAA_AIRFLOW_VERSION``. For a version whose MWAA
package set the package carries (``include/mwaa/<version>/``), every dependency of the wheel is checked against
MWAA's pins before anything is uploaded (:func:`check_resolution`); a conflict stops the deploy.

Minimal: each object carries the sha256 of its content in its metadata (``x-amz-meta-sha256``); an object
whose content did not change is not uploaded again (no new version), and the environment is updated only when
the versions it should run differ from those it runs (an update restarts every MWAA component). A changed DAG
file alone needs no environment update. ``--dags-only`` uploads only the DAG files and touches nothing else.
``--dry-run`` prints the plan and the requirements.txt (reading S3 and the environment) and changes nothing.

AWS is reached through the Airflow connection ``DEVICE_SYNC_AWS_CONN_ID`` (default ``aws_default``), every
call bounded by ``DEVICE_SYNC_CLOUDWATCH_TIMEOUT_SECONDS`` (connect and read, two attempts at most).
Exit status: 0 deployed (or dry run), 2 invalid input or target (nothing changed), 1 an AWS call failed
(what was uploaded before it is reported; running again completes the deploy).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import re
import shlex
import sys
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email.parser import HeaderParser
from pathlib import Path
from typing import Any, TextIO

from dotenv import dotenv_values
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from device_sync import __version__, metrics, monitoring, pool, resources
from device_sync.config import STAGES, ConfigError, Settings, load_settings

COMMAND = "device-sync-deploy"
DAG_S3_PATH = "dags"
PLUGINS_KEY = "plugins.zip"
REQUIREMENTS_KEY = "requirements.txt"
STARTUP_KEY = "startup.sh"
SHA256_METADATA = "sha256"  # stored as x-amz-meta-sha256
# Where MWAA unpacks plugins.zip on every component (AWS knowledge center, "mwaa-install-custom-packages").
MWAA_PLUGINS_DIR = "/usr/local/airflow/plugins"
# Airflow's constraints file of a version for MWAA's Python (its Airflow 3 images run Python 3.12).
MWAA_PYTHON = "3.12"
CONSTRAINTS_URL = "https://raw.githubusercontent.com/apache/airflow/constraints-{version}/constraints-{python}.txt"
# The environment markers of a Requires-Dist are evaluated as on MWAA's images, outside any extra.
MWAA_MARKER_ENVIRONMENT = {
    "extra": "",
    "python_version": MWAA_PYTHON,
    "python_full_version": f"{MWAA_PYTHON}.0",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "os_name": "posix",
}
# MWAA installs Airflow itself: requirements.txt never names it (its essential constraints pin it anyway).
NEVER_PINNED = frozenset({"apache-airflow", "apache-airflow-core", "apache-airflow-task-sdk"})
AIRFLOW_VERSION = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+")  # matched whole
# Settings of the deploy itself, never exported to the environment.
DEPLOY_ONLY = frozenset(
    {"DEVICE_SYNC_DEPLOY_BUCKET", "DEVICE_SYNC_MWAA_ENVIRONMENT", "DEVICE_SYNC_MWAA_AIRFLOW_VERSION"}
)
_EXPORTABLE = re.compile(r"DEVICE_SYNC_[A-Z0-9_]+")  # matched whole
# MWAA accepts UpdateEnvironment only in these states; in any other one (UPDATING, CREATING, ...) we stop
# before uploading anything.
UPDATABLE_STATUSES = frozenset({"AVAILABLE", "UPDATE_FAILED"})
# The earliest time a zip entry can carry: fixed, so the same wheel always gives the same plugins.zip bytes.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
NEW_VERSION = "<new version>"  # what a dry run shows for a version S3 has not assigned yet
# In the checkout (plugins/device_sync/deploy.py), the repository; the wheel carries what is read from it here.
_CHECKOUT = Path(__file__).resolve().parents[2]


class DeployError(Exception):
    """Bad input or target (stage, bucket, wheel, connection, environment, Airflow version): nothing was changed."""


class DeployFailed(Exception):
    """The target changed under the deploy (for example versioning suspended during it)."""


# --- Package data --------------------------------------------------------------------------------------------


def _package_data(name: str, checkout: str) -> Path:
    """``include/<name>`` of the installed wheel; in the checkout, whose ``include/`` does not hold it, the
    repository's ``<checkout>`` (the wheel's build copies it there: pyproject.toml's force-include)."""
    packaged = Path(str(resources.INCLUDE / name))
    return packaged if packaged.exists() else _CHECKOUT / checkout


def dag_files() -> tuple[Path, ...]:
    """The package's DAG files: every ``*.py`` of its ``dags`` folder, by name."""
    folder = _package_data("dags", "dags")
    return tuple(sorted(folder.glob("*.py")))


# --- Sources -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Artifact:
    """One object to upload: its key, its bytes and their sha256."""

    key: str
    body: bytes
    content_type: str
    sha256: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha256", hashlib.sha256(self.body).hexdigest())


@dataclass(frozen=True)
class Sources:
    """The local files a deploy is built from."""

    dag_files: tuple[Path, ...]
    wheel: Path
    stage_file: Path

    @classmethod
    def of_package(cls, stage: str, wheel: Path) -> Sources:
        """The package's own DAG files and stage file, and ``wheel``."""
        return cls(dag_files=dag_files(), wheel=wheel, stage_file=resources.stage_file(stage))


@dataclass(frozen=True)
class Planned:
    """An artifact and what the bucket holds under its key now."""

    artifact: Artifact
    current_version: str | None
    current_sha256: str | None

    @property
    def upload(self) -> bool:
        return self.current_sha256 != self.artifact.sha256


def wheel_name() -> str:
    return f"device_sync-{__version__}-py3-none-any.whl"


def wheel_path(dist: Path) -> Path:
    """The wheel of this package's version in ``dist``; DeployError when it is not there."""
    wheel = dist / wheel_name()
    if not wheel.is_file():
        raise DeployError(
            f"{wheel} does not exist (device-sync {__version__} was not built): name the wheel with "
            f"{COMMAND} --wheel PATH, or the folder holding it with --dist DIR"
        )
    return wheel


def check_wheel(wheel: Path) -> Path:
    """``wheel`` (``--wheel``); DeployError unless it is a file named as this version's wheel (the DAG and stage
    files deployed with it are this version's)."""
    if not wheel.is_file():
        raise DeployError(f"--wheel {wheel} does not exist")
    if wheel.name != wheel_name():
        raise DeployError(
            f"--wheel {wheel} is not {wheel_name()}: this {COMMAND} (device-sync {__version__}) deploys its own "
            "version's DAG and stage files with it; run the deploy of the wheel's version"
        )
    return wheel


# --- requirements.txt and the resolution check ---------------------------------------------------------------


def constraints_url(airflow_version: str) -> str:
    return CONSTRAINTS_URL.format(version=airflow_version, python=MWAA_PYTHON)


def parse_pins(text: str) -> dict[str, str]:
    """``name==version`` lines of a requirements or constraints file, by canonical name; other lines ignored."""
    pins: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        specifiers = list(requirement.specifier)
        if len(specifiers) == 1 and specifiers[0].operator in ("==", "==="):
            pins[canonicalize_name(requirement.name)] = specifiers[0].version
    return pins


@dataclass(frozen=True)
class MwaaPackageSet:
    """What MWAA pins for one Airflow version: its Airflow constraints, and its essential constraints over them."""

    airflow_version: str
    pins: dict[str, str]  # by canonical name, from both files; an essential pin wins
    # device-sync's dependencies that those do not pin, at the versions tested inside them (added_pins.txt)
    tested: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(
        cls, airflow_version: str, airflow_constraints: str, essential_constraints: str, added: str = ""
    ) -> MwaaPackageSet:
        pins = {**parse_pins(airflow_constraints), **parse_pins(essential_constraints)}
        return cls(airflow_version, pins, parse_pins(added))


def mwaa_package_set(airflow_version: str) -> MwaaPackageSet | None:
    """The package's copy of MWAA's constraints for ``airflow_version`` (``include/mwaa/<version>/``), or None."""
    folder = resources.INCLUDE / "mwaa" / airflow_version
    constraints_file = folder / "airflow_constraints.txt"
    essential_file = folder / "mwaa_essential_constraints.txt"
    added_file = folder / "added_pins.txt"
    if not (constraints_file.is_file() and essential_file.is_file()):
        return None
    return MwaaPackageSet.parse(
        airflow_version,
        constraints_file.read_text(encoding="utf-8"),
        essential_file.read_text(encoding="utf-8"),
        added_file.read_text(encoding="utf-8") if added_file.is_file() else "",
    )


def known_airflow_versions() -> list[str]:
    """The Airflow versions whose MWAA package set the package carries."""
    folder = resources.INCLUDE / "mwaa"
    if not folder.is_dir():
        return []
    return sorted((entry.name for entry in folder.iterdir() if entry.is_dir()), key=_version_key)


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def wheel_metadata(wheel: Path) -> str:
    """The text of the wheel's ``*.dist-info/METADATA``."""
    with zipfile.ZipFile(wheel) as archive:
        names = [name for name in archive.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", name)]
        if len(names) != 1:
            raise DeployError(f"{wheel} is no wheel: it holds {len(names)} *.dist-info/METADATA files")
        return archive.read(names[0]).decode("utf-8")


def runtime_requirements(metadata: str) -> list[Requirement]:
    """The ``Requires-Dist`` of a wheel's METADATA that MWAA installs: those without a marker, or whose marker
    holds on MWAA's Python outside any extra (so no extra-only dependency)."""
    requirements = []
    for value in HeaderParser().parsestr(metadata).get_all("Requires-Dist") or []:
        requirement = Requirement(value)
        if requirement.marker is None or requirement.marker.evaluate(MWAA_MARKER_ENVIRONMENT):
            requirements.append(requirement)
    return requirements


def _named(requirement: Requirement) -> str:
    """The requirement as a requirements.txt line: name, extras, specifiers; no marker."""
    extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
    return f"{requirement.name}{extras}{requirement.specifier}"


def added_pins(requirements: Iterable[Requirement], package_set: MwaaPackageSet | None) -> list[str]:
    """The requirements.txt lines for the wheel's dependencies that MWAA's constraints do not pin: each at the
    version tested inside that package set (its ``added_pins.txt``) when it satisfies the wheel, else as the
    wheel asks. None without a package set (the constraints file and pip then decide alone) and never a line
    for Airflow itself."""
    if package_set is None:
        return []
    lines = []
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        if name in NEVER_PINNED or name in package_set.pins:
            continue
        locked = package_set.tested.get(name)
        if locked is not None and requirement.specifier.contains(locked, prereleases=True):
            extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
            lines.append(f"{requirement.name}{extras}=={locked}")
        else:
            lines.append(_named(requirement))
    return lines


def conflicts(requirements: Iterable[Requirement], package_set: MwaaPackageSet) -> list[str]:
    """One line per requirement that MWAA's pins do not satisfy: what is asked and what MWAA pins."""
    found = []
    for requirement in requirements:
        pinned = package_set.pins.get(canonicalize_name(requirement.name))
        if pinned is not None and not requirement.specifier.contains(pinned, prereleases=True):
            found.append(
                f"{_named(requirement)} but MWAA {package_set.airflow_version} pins {requirement.name}=={pinned}"
            )
    return found


def check_resolution(requirements: Sequence[Requirement], added: Sequence[str], package_set: MwaaPackageSet) -> None:
    """DeployError naming every conflict of the wheel's dependencies and of the added pins with MWAA's pins
    (which MWAA never lets a requirements.txt override: the install would fail on the environment)."""
    found = conflicts([*requirements, *(Requirement(line) for line in added)], package_set)
    if found:
        raise DeployError(
            f"the wheel cannot be installed on MWAA with Airflow {package_set.airflow_version}: "
            + "; ".join(dict.fromkeys(found))
            + " (MWAA's constraints cannot be overridden: widen the dependency in pyproject.toml and rebuild the "
            "wheel, or deploy to an environment of another Airflow version)"
        )


def requirements_txt(airflow_version: str, wheel_filename: str, pins: Sequence[str]) -> bytes:
    """MWAA's requirements.txt: Airflow's constraints of the environment's version first (MWAA then adds no
    constraints file of its own, only its essential pins), the wheel where MWAA unpacks plugins.zip, the pins."""
    lines = [
        f"--constraint {constraints_url(airflow_version)}",
        f"# device-sync {__version__} for Amazon MWAA with Airflow {airflow_version} (written by {COMMAND}): the "
        f"wheel inside plugins.zip, which MWAA unpacks into {MWAA_PLUGINS_DIR}/, then its dependencies that "
        "the constraints do not pin, at their tested versions",
        f"{MWAA_PLUGINS_DIR}/{wheel_filename}",
        *pins,
    ]
    return ("\n".join(lines) + "\n").encode()


@dataclass(frozen=True)
class Requirements:
    """The requirements.txt of a deploy and what it was made from."""

    airflow_version: str
    body: bytes
    checked: bool  # False: no MWAA package set of that version here, the check was skipped


def plan_requirements(airflow_version: str, sources: Sources) -> Requirements:
    """The requirements.txt for ``airflow_version``, after the resolution check where the package has the data;
    DeployError on a conflict."""
    requirements = runtime_requirements(wheel_metadata(sources.wheel))
    package_set = mwaa_package_set(airflow_version)
    pins = added_pins(requirements, package_set)
    if package_set is not None:
        check_resolution(requirements, pins, package_set)
    body = requirements_txt(airflow_version, sources.wheel.name, pins)
    return Requirements(airflow_version, body, checked=package_set is not None)


# --- The other artifacts: pure functions of the sources ------------------------------------------------------


def plugins_zip(wheel_filename: str, wheel_bytes: bytes) -> bytes:
    """A zip holding the wheel at its root, byte for byte the same for the same wheel.

    Fixed timestamp, permissions and creator system; stored, not deflated (a wheel is already compressed, and
    the bytes then do not depend on the zlib version).
    """
    info = zipfile.ZipInfo(wheel_filename, date_time=ZIP_EPOCH)
    info.create_system = 3  # Unix, so external_attr holds Unix permissions
    info.external_attr = 0o100644 << 16  # a regular file, rw-r--r--
    info.compress_type = zipfile.ZIP_STORED
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(info, wheel_bytes)
    return buffer.getvalue()


def startup_sh(stage: str, stage_file: Path) -> bytes:
    """A startup script exporting ``DEVICE_SYNC_STAGE`` and every ``DEVICE_SYNC_*`` setting of the stage file.

    The wheel carries the stage file too; exporting its values makes the environment's settings visible in the
    MWAA console's startup script and in every component's environment. Deploy-only settings stay out.
    """
    variables = {"DEVICE_SYNC_STAGE": stage}
    for name, value in dotenv_values(stage_file).items():
        if not name.startswith("DEVICE_SYNC_") or name in DEPLOY_ONLY or name == "DEVICE_SYNC_STAGE":
            continue
        if not _EXPORTABLE.fullmatch(name):
            raise DeployError(f"{stage_file}: {name!r} is no device-sync setting (upper-case DEVICE_SYNC_* names)")
        if value is not None:
            variables[name] = value
    lines = [
        "#!/bin/sh",
        f"# device-sync {stage}: the settings of {stage_file.name} for every Airflow component ({COMMAND}).",
        *(f"export {name}={shlex.quote(value)}" for name, value in variables.items()),
    ]
    return ("\n".join(lines) + "\n").encode()


def dag_key(dag_file: Path) -> str:
    return f"{DAG_S3_PATH}/{dag_file.name}"


def dag_artifacts(sources: Sources) -> list[Artifact]:
    if not sources.dag_files:
        raise DeployError("the package holds no DAG file (include/dags/*.py): the wheel was built without them")
    return [Artifact(dag_key(path), path.read_bytes(), "text/x-python") for path in sources.dag_files]


def build_artifacts(stage: str, sources: Sources, requirements: bytes) -> list[Artifact]:
    """The objects of a deploy, in upload order (the DAG files first)."""
    wheel_bytes = sources.wheel.read_bytes()
    return [
        *dag_artifacts(sources),
        Artifact(PLUGINS_KEY, plugins_zip(sources.wheel.name, wheel_bytes), "application/zip"),
        Artifact(REQUIREMENTS_KEY, requirements, "text/plain"),
        Artifact(STARTUP_KEY, startup_sh(stage, sources.stage_file), "text/x-shellscript"),
    ]


def environment_update(name: str, versions: dict[str, str]) -> dict[str, str]:
    """UpdateEnvironment's parameters that make the environment run exactly these object versions."""
    return {
        "Name": name,
        "DagS3Path": DAG_S3_PATH,
        "PluginsS3Path": PLUGINS_KEY,
        "PluginsS3ObjectVersion": versions[PLUGINS_KEY],
        "RequirementsS3Path": REQUIREMENTS_KEY,
        "RequirementsS3ObjectVersion": versions[REQUIREMENTS_KEY],
        "StartupScriptS3Path": STARTUP_KEY,
        "StartupScriptS3ObjectVersion": versions[STARTUP_KEY],
    }


def pool_patch_body(slots: int) -> dict[str, Any]:
    """PATCH /pools/device_sync_db (Airflow 3's PoolPatchBody): the slots and description; the rest is kept."""
    return {"slots": slots, "description": pool.DESCRIPTION}


def pool_post_body(slots: int) -> dict[str, Any]:
    """POST /pools (Airflow 3's PoolBody): the pool as ``airflow pools set`` creates it."""
    return {"name": pool.NAME, "slots": slots, "description": pool.DESCRIPTION, "include_deferred": False}


# --- AWS -----------------------------------------------------------------------------------------------------


def _error_code(error: Exception) -> str:
    return str(getattr(error, "response", {}).get("Error", {}).get("Code", ""))


def check_bucket(s3: Any, bucket: str) -> None:
    """DeployError unless the bucket exists and has versioning enabled (MWAA needs object versions)."""
    from botocore.exceptions import ClientError

    try:
        status = s3.get_bucket_versioning(Bucket=bucket).get("Status")
    except ClientError as error:
        if _error_code(error) in ("NoSuchBucket", "404"):
            raise DeployError(f"bucket {bucket!r} (DEVICE_SYNC_DEPLOY_BUCKET) does not exist") from None
        raise
    if status != "Enabled":
        raise DeployError(
            f"bucket {bucket!r} (DEVICE_SYNC_DEPLOY_BUCKET) does not have versioning enabled "
            f"(status: {status or 'never enabled'}); MWAA runs object versions: enable it "
            f"(aws s3api put-bucket-versioning --bucket {bucket} --versioning-configuration Status=Enabled)"
        )


def current_object(s3: Any, bucket: str, key: str) -> tuple[str | None, str | None]:
    """(version id, stored sha256) of the object's current version, or (None, None) when there is none."""
    from botocore.exceptions import ClientError

    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if _error_code(error) in ("404", "NoSuchKey", "NotFound"):
            return None, None
        raise
    return head.get("VersionId"), head.get("Metadata", {}).get(SHA256_METADATA)


def describe_environment(mwaa: Any, name: str, bucket: str) -> dict[str, Any]:
    """The MWAA environment; DeployError when it does not exist or reads another bucket."""
    from botocore.exceptions import ClientError

    try:
        environment: dict[str, Any] = mwaa.get_environment(Name=name)["Environment"]
    except ClientError as error:
        if _error_code(error) == "ResourceNotFoundException":
            raise DeployError(
                f"MWAA environment {name!r} (DEVICE_SYNC_MWAA_ENVIRONMENT) does not exist in {mwaa.meta.region_name}"
            ) from None
        raise
    source = str(environment.get("SourceBucketArn", "")).rsplit(":", 1)[-1]
    if source != bucket:
        raise DeployError(
            f"MWAA environment {name!r} reads bucket {source!r}, not DEVICE_SYNC_DEPLOY_BUCKET {bucket!r}"
        )
    return environment


def airflow_version(settings: Settings, environment: dict[str, Any] | None) -> str:
    """The Airflow version requirements.txt is written for: the environment's ``AirflowVersion``, else the
    setting ``DEVICE_SYNC_MWAA_AIRFLOW_VERSION``; DeployError when neither gives one."""
    if environment is not None and environment.get("AirflowVersion"):
        version = str(environment["AirflowVersion"])
        if not AIRFLOW_VERSION.fullmatch(version):
            raise DeployError(f"MWAA environment {environment.get('Name')!r} reports Airflow version {version!r}")
        return version
    if settings.mwaa_airflow_version:
        return settings.mwaa_airflow_version
    raise DeployError(
        "no Airflow version to write requirements.txt for: set DEVICE_SYNC_MWAA_ENVIRONMENT (its AirflowVersion is "
        f"used) or DEVICE_SYNC_MWAA_AIRFLOW_VERSION (for example 3.3.1), in the environment or in "
        f"include/config/{settings.stage}.env"
    )


def upload(s3: Any, bucket: str, artifact: Artifact) -> str:
    """Put the artifact with its sha256 in the metadata; the new version's id."""
    response = s3.put_object(
        Bucket=bucket,
        Key=artifact.key,
        Body=artifact.body,
        ContentType=artifact.content_type,
        Metadata={SHA256_METADATA: artifact.sha256},
    )
    version = response.get("VersionId")
    if not version:  # versioning was suspended since check_bucket
        raise DeployFailed(f"S3 returned no version for s3://{bucket}/{artifact.key}: is versioning still enabled?")
    return str(version)


def set_pool(mwaa: Any, environment_name: str, slots: int) -> str:
    """Create or resize the pool through the environment's Airflow REST API (paths relative to /api/v2):
    PATCH /pools/<name>, and POST /pools when that answers 404. "resized" or "created"."""
    from botocore.exceptions import ClientError

    try:
        mwaa.invoke_rest_api(
            Name=environment_name, Method="PATCH", Path=f"/pools/{pool.NAME}", Body=pool_patch_body(slots)
        )
        return "resized"
    except ClientError as error:
        if _error_code(error) != "RestApiClientException" or error.response.get("RestApiStatusCode") != 404:
            raise
    mwaa.invoke_rest_api(Name=environment_name, Method="POST", Path="/pools", Body=pool_post_body(slots))
    return "created"


# --- The deploy ----------------------------------------------------------------------------------------------


def deploy(
    settings: Settings,
    s3: Any,
    mwaa: Any | None,
    cloudwatch: Any | None,
    *,
    sources: Sources,
    dags_only: bool = False,
    dry_run: bool = False,
    alarm_actions: Sequence[str] = (),
    out: TextIO = sys.stdout,
) -> dict[str, Any]:
    """Deploy the stage of ``settings``; every check runs before the first change.

    ``s3``, ``mwaa`` and ``cloudwatch`` are boto3 clients (``mwaa`` may be None without an environment or with
    ``dags_only``; ``cloudwatch`` may be None with ``dags_only``). Returns what was uploaded, the versions the
    objects now have, the UpdateEnvironment parameters sent (None when none was needed or possible), the
    requirements.txt (None with ``dags_only``), what was done to the pool and the monitoring summary.
    """
    stage = settings.stage
    bucket = require_bucket(settings)
    environment_name = None if dags_only else settings.mwaa_environment
    if not dags_only:
        if not environment_name:
            airflow_version(settings, None)  # refuses before any AWS call when there is no version
        monitoring.alarm_definitions(settings, alarm_actions=alarm_actions)  # validated before anything changes

    check_bucket(s3, bucket)
    environment: dict[str, Any] | None = None
    if environment_name:
        if mwaa is None:
            raise ValueError("an MWAA client is needed to update an environment")
        environment = describe_environment(mwaa, environment_name, bucket)

    requirements: Requirements | None = None
    if dags_only:
        artifacts = dag_artifacts(sources)
    else:
        requirements = plan_requirements(airflow_version(settings, environment), sources)
        artifacts = build_artifacts(stage, sources, requirements.body)
    plan = [Planned(artifact, *current_object(s3, bucket, artifact.key)) for artifact in artifacts]
    versions = {p.artifact.key: NEW_VERSION if p.upload else str(p.current_version) for p in plan}

    update: dict[str, str] | None = None
    if environment_name and environment is not None:
        wanted = environment_update(environment_name, versions)
        if any(environment.get(key) != value for key, value in wanted.items()):
            update = wanted
            status = environment.get("Status")
            if status not in UPDATABLE_STATUSES:
                raise DeployError(
                    f"MWAA environment {environment_name!r} is {status}, it cannot be updated now: "
                    "run again once it is AVAILABLE"
                )

    label = "dry run: would deploy" if dry_run else "deploying"
    print(f"device-sync {__version__} {stage}: {label} to s3://{bucket} (versioning enabled)", file=out)
    if requirements is not None:
        _print_requirements_source(out, settings, requirements)
    for p in plan:
        action = "upload" if p.upload else f"unchanged (version {p.current_version})"
        print(f"  {p.artifact.key:<30} {len(p.artifact.body):>9} bytes  sha256 {p.artifact.sha256}  {action}", file=out)
    if dry_run:
        if requirements is not None:
            print(f"  {REQUIREMENTS_KEY} would be:", file=out)
            for line in requirements.body.decode().splitlines():
                print(f"    {line}", file=out)
        _print_environment_plan(out, settings, dags_only, update, would=True)
        if environment_name:
            print(
                f"  would set the Airflow pool {pool.NAME} to {settings.db_pool_slots} slots through the MWAA REST "
                "API (when the environment is AVAILABLE)",
                file=out,
            )
        if not dags_only:
            print(f"  would deploy the CloudWatch alarms and dashboard {monitoring.dashboard_name(settings)}", file=out)
        print("dry run: nothing was changed", file=out)
        return {
            "uploaded": [],
            "versions": versions,
            "environment_update": update,
            "requirements": requirements.body if requirements else None,
            "pool": None,
            "monitoring": None,
        }

    uploaded: list[str] = []
    for p in plan:
        if p.upload:
            try:
                versions[p.artifact.key] = upload(s3, bucket, p.artifact)
            except Exception:
                print(f"  uploaded before the failure: {', '.join(uploaded) or 'nothing'}", file=out)
                raise
            uploaded.append(p.artifact.key)
            print(f"  uploaded s3://{bucket}/{p.artifact.key} version {versions[p.artifact.key]}", file=out)

    if update is not None:
        assert mwaa is not None
        update = environment_update(update["Name"], versions)
        mwaa.update_environment(**update)
    _print_environment_plan(out, settings, dags_only, update, would=False)

    pool_action: str | None = None
    if environment_name and environment is not None:
        assert mwaa is not None
        pool_action = _pool_step(out, settings, mwaa, environment_name, environment, updated=update is not None)

    summary = None
    if not dags_only:
        summary = monitoring.deploy(cloudwatch, settings, alarm_actions=list(alarm_actions))
        print(
            f"  CloudWatch: {len(summary['alarms'])} alarms and dashboard {summary['dashboard']!r} deployed", file=out
        )
        print(
            "  next, as the owner of the IoT database's tables (idempotent, after every upgrade): "
            "device-sync-migrate --database-url URL",
            file=out,
        )
    return {
        "uploaded": uploaded,
        "versions": versions,
        "environment_update": update,
        "requirements": requirements.body if requirements else None,
        "pool": pool_action,
        "monitoring": summary,
    }


def _pool_step(
    out: TextIO, settings: Settings, mwaa: Any, name: str, environment: dict[str, Any], *, updated: bool
) -> str | None:
    """Set the pool when the environment is AVAILABLE (read again after an update, which restarts it)."""
    status = mwaa.get_environment(Name=name)["Environment"].get("Status") if updated else environment.get("Status")
    slots = settings.db_pool_slots
    if status != "AVAILABLE":
        print(
            f"  Airflow pool {pool.NAME} not set: MWAA environment {name!r} is {status} (an update restarts it); "
            f"the next {COMMAND} --stage {settings.stage} sets it once the environment is AVAILABLE, or run "
            f"{shlex.join(pool.create_command(slots))} on it",
            file=out,
        )
        return None
    action = set_pool(mwaa, name, slots)
    print(f"  Airflow pool {pool.NAME} {action}: {slots} slots (MWAA REST API)", file=out)
    return action


def _print_requirements_source(out: TextIO, settings: Settings, requirements: Requirements) -> None:
    source = (
        f"MWAA environment {settings.mwaa_environment!r}"
        if settings.mwaa_environment
        else "DEVICE_SYNC_MWAA_AIRFLOW_VERSION"
    )
    print(f"  {REQUIREMENTS_KEY} for Airflow {requirements.airflow_version} (from {source})", file=out)
    if requirements.checked:
        print(
            f"  resolution check: every dependency of the wheel agrees with MWAA {requirements.airflow_version}'s "
            "constraints",
            file=out,
        )
    else:
        print(
            f"  warning: resolution check skipped: no MWAA package set of Airflow {requirements.airflow_version} in "
            f"this package (it has {', '.join(known_airflow_versions()) or 'none'}); {REQUIREMENTS_KEY} names only "
            "the constraints and the wheel",
            file=out,
        )


def _print_environment_plan(
    out: TextIO, settings: Settings, dags_only: bool, update: dict[str, str] | None, *, would: bool
) -> None:
    if dags_only:
        print("  --dags-only: no environment update, no monitoring (MWAA picks up the DAG files by itself)", file=out)
    elif not settings.mwaa_environment:
        print(
            "  no MWAA environment was updated: DEVICE_SYNC_MWAA_ENVIRONMENT is not set (the objects are in the "
            "bucket; point an environment at them, or set it and run again)",
            file=out,
        )
    elif update is None:
        print(f"  MWAA environment {settings.mwaa_environment!r} already runs these versions: not updated", file=out)
    else:
        verb = "would update" if would else "updated"
        details = ", ".join(f"{key}={value}" for key, value in update.items() if key != "Name")
        print(f"  MWAA environment {settings.mwaa_environment!r} {verb} (UpdateEnvironment {details})", file=out)


# --- The command ---------------------------------------------------------------------------------------------


def require_bucket(settings: Settings) -> str:
    if not settings.deploy_bucket:
        raise DeployError(
            f"no bucket: set DEVICE_SYNC_DEPLOY_BUCKET in the environment or in include/config/{settings.stage}.env"
        )
    return settings.deploy_bucket


def require_connection(aws_conn_id: str) -> None:
    """DeployError when the Airflow connection does not exist (AwsBaseHook would silently use no connection)."""
    from device_sync.compat import AirflowNotFoundException, BaseHook

    try:
        BaseHook.get_connection(aws_conn_id)
    except AirflowNotFoundException:
        raise DeployError(
            f"the Airflow connection {aws_conn_id!r} (DEVICE_SYNC_AWS_CONN_ID) does not exist: define it "
            f"(e.g. AIRFLOW_CONN_{aws_conn_id.upper()}) or set DEVICE_SYNC_AWS_CONN_ID"
        ) from None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=COMMAND, description="Deploy device-sync to Amazon MWAA for a stage.")
    parser.add_argument("--stage", required=True, choices=STAGES, help="the stage to deploy")
    wheel = parser.add_mutually_exclusive_group()
    wheel.add_argument(
        "--dist", type=Path, default=Path("dist"), help=f"the folder holding {wheel_name()} (default: ./dist)"
    )
    wheel.add_argument("--wheel", type=Path, help=f"the wheel to deploy ({wheel_name()}), instead of --dist")
    parser.add_argument("--dags-only", action="store_true", help="upload only the DAG files; touch nothing else")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and requirements.txt; change nothing")
    parser.add_argument(
        "--alarm-action",
        action="append",
        default=[],
        metavar="ARN",
        help="notified by the stage's CloudWatch alarms on ALARM and OK (repeatable); without it they notify no one",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """``device-sync-deploy`` (``make deploy`` / ``python scripts/deploy.py`` in the checkout)."""
    args = parse_args(argv)
    os.environ["DEVICE_SYNC_STAGE"] = args.stage  # load_settings reads this stage's file
    from botocore.exceptions import BotoCoreError, ClientError

    aws_conn_id = "?"
    try:
        settings = load_settings()
        aws_conn_id = settings.aws_conn_id
        wheel = check_wheel(args.wheel) if args.wheel is not None else wheel_path(args.dist)
        sources = Sources.of_package(args.stage, wheel)
        require_bucket(settings)
        if not args.dags_only and not settings.mwaa_environment:
            airflow_version(settings, None)
        require_connection(aws_conn_id)
        timeout = settings.cloudwatch_timeout_seconds
        s3 = metrics.aws_client("s3", aws_conn_id, timeout_seconds=timeout)
        needs_mwaa = bool(settings.mwaa_environment) and not args.dags_only
        mwaa = metrics.aws_client("mwaa", aws_conn_id, timeout_seconds=timeout) if needs_mwaa else None
        cloudwatch = None if args.dags_only else metrics.cloudwatch_client(aws_conn_id, timeout_seconds=timeout)
        deploy(
            settings,
            s3,
            mwaa,
            cloudwatch,
            sources=sources,
            dags_only=args.dags_only,
            dry_run=args.dry_run,
            alarm_actions=args.alarm_action,
        )
    except (ConfigError, DeployError) as error:
        print(f"deploy: {error}; nothing was changed", file=sys.stderr)
        return 2
    except (BotoCoreError, ClientError, DeployFailed) as error:
        print(
            f"deploy: an AWS call through the Airflow connection {aws_conn_id!r} (DEVICE_SYNC_AWS_CONN_ID) failed: "
            f"{error}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
