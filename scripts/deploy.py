"""Deploy device-sync to Amazon MWAA for one stage (idempotent): ``make deploy STAGE=dev|prod``.

    python scripts/deploy.py --stage dev|prod [--dist DIR] [--dags-only] [--dry-run] [--alarm-action ARN ...]

Uploads four objects to the bucket ``DEVICE_SYNC_DEPLOY_BUCKET`` (which must have versioning enabled):

``dags/device_parameter_sync.py``  the DAG file (MWAA syncs the ``dags`` folder by itself)
``plugins.zip``                    the wheel ``device_sync-<version>-py3-none-any.whl`` at the zip's root, which
                                   MWAA unpacks into ``/usr/local/airflow/plugins/``
``requirements.txt``               the repository's pinned ``requirements.txt`` plus that wheel's path there
``startup.sh``                     exports ``DEVICE_SYNC_STAGE`` and the stage file's ``DEVICE_SYNC_*`` settings

then points the MWAA environment ``DEVICE_SYNC_MWAA_ENVIRONMENT`` at exactly those object versions
(UpdateEnvironment) and deploys the stage's CloudWatch alarms and dashboard (as ``make deploy-monitoring``).
Both settings may also be set in ``include/config/<stage>.env``. Without an environment the objects are
uploaded, the monitoring deployed, and no environment is updated.

Minimal: each object carries the sha256 of its content in its metadata (``x-amz-meta-sha256``); an object
whose content did not change is not uploaded again (no new version), and the environment is updated only when
the versions it should run differ from those it runs (an update restarts every MWAA component). A changed DAG
file alone needs no environment update. ``--dags-only`` uploads only the DAG file and touches nothing else.
``--dry-run`` prints the plan (reading S3 and the environment) and changes nothing.

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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins"))

from dotenv import dotenv_values  # noqa: E402

from device_sync import __version__, metrics, monitoring, resources  # noqa: E402
from device_sync.config import STAGES, ConfigError, Settings, load_settings  # noqa: E402

DAG_S3_PATH = "dags"
DAG_KEY = f"{DAG_S3_PATH}/device_parameter_sync.py"
PLUGINS_KEY = "plugins.zip"
REQUIREMENTS_KEY = "requirements.txt"
STARTUP_KEY = "startup.sh"
SHA256_METADATA = "sha256"  # stored as x-amz-meta-sha256
# Where MWAA unpacks plugins.zip on every component (AWS knowledge center, "mwaa-install-custom-packages").
MWAA_PLUGINS_DIR = "/usr/local/airflow/plugins"
# Settings of the deploy itself, never exported to the environment.
DEPLOY_ONLY = frozenset({"DEVICE_SYNC_DEPLOY_BUCKET", "DEVICE_SYNC_MWAA_ENVIRONMENT"})
_EXPORTABLE = re.compile(r"^DEVICE_SYNC_[A-Z0-9_]+$")
# MWAA accepts UpdateEnvironment only in these states; in any other one (UPDATING, CREATING, ...) we stop
# before uploading anything.
UPDATABLE_STATUSES = frozenset({"AVAILABLE", "UPDATE_FAILED"})
# The earliest time a zip entry can carry: fixed, so the same wheel always gives the same plugins.zip bytes.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
NEW_VERSION = "<new version>"  # what a dry run shows for a version S3 has not assigned yet


class DeployError(Exception):
    """Bad input or target (stage, bucket, wheel, connection, environment): nothing was changed."""


class DeployFailed(Exception):
    """The target changed under the deploy (for example versioning suspended during it)."""


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

    dag_file: Path
    wheel: Path
    requirements: Path
    stage_file: Path

    @classmethod
    def of_repository(cls, stage: str, dist: Path) -> Sources:
        return cls(
            dag_file=REPO / "dags" / "device_parameter_sync.py",
            wheel=wheel_path(dist),
            requirements=REPO / "requirements.txt",
            stage_file=resources.stage_file(stage),
        )


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
    """The wheel of the checkout's version in ``dist``; DeployError when it was not built."""
    wheel = dist / wheel_name()
    if not wheel.is_file():
        raise DeployError(f"{wheel} does not exist (device-sync {__version__} was not built): run make dist")
    return wheel


# --- The artifacts: pure functions of the sources ------------------------------------------------------------


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


def requirements_txt(pinned: str, wheel_filename: str) -> bytes:
    """The pinned requirements plus the wheel, by its path where MWAA unpacks plugins.zip."""
    return (
        pinned.rstrip("\n")
        + "\n# device-sync itself: the wheel inside plugins.zip, which MWAA unpacks into "
        + f"{MWAA_PLUGINS_DIR}/ (written by scripts/deploy.py)\n"
        + f"{MWAA_PLUGINS_DIR}/{wheel_filename}\n"
    ).encode()


def startup_sh(stage: str, stage_file: Path) -> bytes:
    """A startup script exporting ``DEVICE_SYNC_STAGE`` and every ``DEVICE_SYNC_*`` setting of the stage file.

    The wheel carries the stage file too; exporting its values makes the environment's settings visible in the
    MWAA console's startup script and in every component's environment. Deploy-only settings stay out.
    """
    variables = {"DEVICE_SYNC_STAGE": stage}
    for name, value in dotenv_values(stage_file).items():
        if not name.startswith("DEVICE_SYNC_") or name in DEPLOY_ONLY or name == "DEVICE_SYNC_STAGE":
            continue
        if not _EXPORTABLE.match(name):
            raise DeployError(f"{stage_file}: {name!r} is no device-sync setting (upper-case DEVICE_SYNC_* names)")
        if value is not None:
            variables[name] = value
    lines = [
        "#!/bin/sh",
        f"# device-sync {stage}: the settings of {stage_file.name} for every Airflow component (scripts/deploy.py).",
        *(f"export {name}={shlex.quote(value)}" for name, value in variables.items()),
    ]
    return ("\n".join(lines) + "\n").encode()


def build_artifacts(stage: str, sources: Sources) -> list[Artifact]:
    """The four objects of a deploy, in upload order (the DAG file first)."""
    wheel_bytes = sources.wheel.read_bytes()
    return [
        Artifact(DAG_KEY, sources.dag_file.read_bytes(), "text/x-python"),
        Artifact(PLUGINS_KEY, plugins_zip(sources.wheel.name, wheel_bytes), "application/zip"),
        Artifact(
            REQUIREMENTS_KEY,
            requirements_txt(sources.requirements.read_text(encoding="utf-8"), sources.wheel.name),
            "text/plain",
        ),
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
    objects now have, the UpdateEnvironment parameters sent (None when none was needed or possible) and the
    monitoring summary.
    """
    stage = settings.stage
    bucket = require_bucket(settings)
    artifacts = build_artifacts(stage, sources)
    if dags_only:
        artifacts = [artifact for artifact in artifacts if artifact.key == DAG_KEY]
    else:  # validate the alarm settings before anything changes
        monitoring.alarm_definitions(settings, alarm_actions=alarm_actions)

    check_bucket(s3, bucket)
    plan = [Planned(artifact, *current_object(s3, bucket, artifact.key)) for artifact in artifacts]
    versions = {p.artifact.key: NEW_VERSION if p.upload else str(p.current_version) for p in plan}

    environment_name = None if dags_only else settings.mwaa_environment
    update: dict[str, str] | None = None
    if environment_name:
        if mwaa is None:
            raise ValueError("an MWAA client is needed to update an environment")
        environment = describe_environment(mwaa, environment_name, bucket)
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
    for p in plan:
        action = "upload" if p.upload else f"unchanged (version {p.current_version})"
        print(f"  {p.artifact.key:<30} {len(p.artifact.body):>9} bytes  sha256 {p.artifact.sha256}  {action}", file=out)
    if dry_run:
        _print_environment_plan(out, settings, dags_only, update, would=True)
        if not dags_only:
            print(f"  would deploy the CloudWatch alarms and dashboard {monitoring.dashboard_name(settings)}", file=out)
        print("dry run: nothing was changed", file=out)
        return {"uploaded": [], "versions": versions, "environment_update": update, "monitoring": None}

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

    summary = None
    if not dags_only:
        summary = monitoring.deploy(cloudwatch, settings, alarm_actions=list(alarm_actions))
        print(
            f"  CloudWatch: {len(summary['alarms'])} alarms and dashboard {summary['dashboard']!r} deployed", file=out
        )
    return {"uploaded": uploaded, "versions": versions, "environment_update": update, "monitoring": summary}


def _print_environment_plan(
    out: TextIO, settings: Settings, dags_only: bool, update: dict[str, str] | None, *, would: bool
) -> None:
    if dags_only:
        print("  --dags-only: no environment update, no monitoring (MWAA picks up the DAG file by itself)", file=out)
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
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        BaseHook.get_connection(aws_conn_id)
    except AirflowNotFoundException:
        raise DeployError(
            f"the Airflow connection {aws_conn_id!r} (DEVICE_SYNC_AWS_CONN_ID) does not exist: define it "
            f"(e.g. AIRFLOW_CONN_{aws_conn_id.upper()}) or set DEVICE_SYNC_AWS_CONN_ID"
        ) from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="deploy.py", description="Deploy device-sync to Amazon MWAA for a stage.")
    parser.add_argument("--stage", required=True, choices=STAGES, help="the stage to deploy")
    parser.add_argument("--dist", type=Path, default=REPO / "dist", help="where make dist put the wheel")
    parser.add_argument("--dags-only", action="store_true", help="upload only the DAG file; touch nothing else")
    parser.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    parser.add_argument(
        "--alarm-action",
        action="append",
        default=[],
        metavar="ARN",
        help="as for make deploy-monitoring: notified on ALARM and OK (repeatable); without it the alarms have none",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["DEVICE_SYNC_STAGE"] = args.stage  # load_settings reads this stage's file
    from botocore.exceptions import BotoCoreError, ClientError

    aws_conn_id = "?"
    try:
        settings = load_settings()
        aws_conn_id = settings.aws_conn_id
        sources = Sources.of_repository(args.stage, args.dist)
        require_bucket(settings)
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
