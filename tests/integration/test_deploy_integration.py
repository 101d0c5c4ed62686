"""``scripts/deploy.py`` (``make deploy STAGE=dev|prod``): the MWAA deploy against a real moto server over HTTP.

S3 (a versioned bucket of its own per test) and CloudWatch are moto's, reached over HTTP like AWS. moto has no
MWAA API, so the MWAA client is a real boto3 ``mwaa`` client wrapped in botocore's ``Stubber``: the one stub,
for the one API nothing here can serve. The client still validates every request against the real MWAA service
model (unknown or mistyped parameters fail), and the Stubber checks each response against it too and fails on
any call that was not expected (so "no UpdateEnvironment call" is checked, not assumed).

The last test installs what was uploaded (requirements.txt with the wheel unpacked from plugins.zip, the
startup script's exports, only the uploaded DAG file) into a throwaway virtual environment and runs the DAG
against real PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import psycopg
import pytest
from botocore.stub import ANY, Stubber
from test_wheel_integration import T, assert_three_devices_synced, run, seed_three_devices, uv

from conftest import REPO, psycopg_url_to_airflow_uri
from device_sync import __version__, metrics
from device_sync.config import Settings, load_settings

ENVIRONMENT = "device-sync-dev"
WHEEL = f"device_sync-{__version__}-py3-none-any.whl"
KEYS = ("dags/device_parameter_sync.py", "plugins.zip", "requirements.txt", "startup.sh")


def _load_script() -> ModuleType:
    # Loaded from its path under a name of its own: the repository also has a folder deploy/.
    spec = importlib.util.spec_from_file_location("deploy_script", REPO / "scripts" / "deploy.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["deploy_script"] = module
    spec.loader.exec_module(module)
    return module


script = _load_script()


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``make dist`` into a directory of its own."""
    out = tmp_path_factory.mktemp("dist")
    run(["make", "-s", "dist", f"DIST={out}"], cwd=REPO)
    assert (out / WHEEL).is_file()
    return out


@pytest.fixture
def s3(moto_server: str) -> Any:
    return boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")


@pytest.fixture
def cloudwatch(moto_server: str) -> Any:
    return boto3.client("cloudwatch", endpoint_url=moto_server, region_name="us-east-1")


def new_bucket(s3: Any, *, versioned: bool = True) -> str:
    name = f"device-sync-deploy-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    if versioned:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


@pytest.fixture
def bucket(s3: Any) -> str:
    """A versioned bucket with a unique name (the moto server is shared by the whole session)."""
    return new_bucket(s3)


def settings_of(monkeypatch: pytest.MonkeyPatch, bucket: str, *, environment: str | None = ENVIRONMENT) -> Settings:
    monkeypatch.setenv("DEVICE_SYNC_STAGE", "dev")
    monkeypatch.setenv("DEVICE_SYNC_DEPLOY_BUCKET", bucket)
    if environment:
        monkeypatch.setenv("DEVICE_SYNC_MWAA_ENVIRONMENT", environment)
    return load_settings()


def object_versions(s3: Any, bucket: str) -> dict[str, list[str]]:
    """Every version of every object, newest first."""
    found: dict[str, list[str]] = {}
    for version in s3.list_object_versions(Bucket=bucket).get("Versions", []):
        found.setdefault(version["Key"], []).append(version["VersionId"])
    return found


def latest_versions(s3: Any, bucket: str) -> dict[str, str]:
    return {v["Key"]: v["VersionId"] for v in s3.list_object_versions(Bucket=bucket)["Versions"] if v["IsLatest"]}


def environment(bucket: str, status: str = "AVAILABLE", **versions: str) -> dict[str, Any]:
    """A GetEnvironment response: the environment reads ``bucket`` and runs these object versions."""
    paths = {
        "PluginsS3Path": "plugins.zip",
        "RequirementsS3Path": "requirements.txt",
        "StartupScriptS3Path": "startup.sh",
    }
    return {
        "Environment": {
            "Name": ENVIRONMENT,
            "Status": status,
            "SourceBucketArn": f"arn:aws:s3:::{bucket}",
            "DagS3Path": "dags",
            **(paths if versions else {}),
            **versions,
        }
    }


def running(versions: dict[str, str]) -> dict[str, str]:
    """The GetEnvironment fields of an environment that runs these object versions."""
    return {
        "PluginsS3ObjectVersion": versions["plugins.zip"],
        "RequirementsS3ObjectVersion": versions["requirements.txt"],
        "StartupScriptS3ObjectVersion": versions["startup.sh"],
    }


@dataclasses.dataclass
class StubbedMwaa:
    client: Any
    stubber: Stubber
    sent: list[dict[str, Any]]  # the parameters of every UpdateEnvironment call, as validated and sent


@pytest.fixture
def mwaa() -> Iterator[StubbedMwaa]:
    """A real boto3 MWAA client behind botocore's Stubber; every queued response must be used."""
    client = boto3.client("mwaa", region_name="us-east-1")
    sent: list[dict[str, Any]] = []
    client.meta.events.register(
        "before-parameter-build.mwaa.UpdateEnvironment", lambda params, **_: sent.append(dict(params))
    )
    with Stubber(client) as stubber:
        yield StubbedMwaa(client, stubber, sent)
        stubber.assert_no_pending_responses()


def expect_update(mwaa: StubbedMwaa) -> None:
    """One UpdateEnvironment call naming every path; the versions are checked against S3 afterwards."""
    expected = {
        "Name": ENVIRONMENT,
        "DagS3Path": "dags",
        "PluginsS3Path": "plugins.zip",
        "PluginsS3ObjectVersion": ANY,
        "RequirementsS3Path": "requirements.txt",
        "RequirementsS3ObjectVersion": ANY,
        "StartupScriptS3Path": "startup.sh",
        "StartupScriptS3ObjectVersion": ANY,
    }
    arn = f"arn:aws:airflow:us-east-1:123456789012:environment/{ENVIRONMENT}"
    mwaa.stubber.add_response("update_environment", {"Arn": arn}, expected)


def first_deploy(
    settings: Settings, s3: Any, mwaa: StubbedMwaa, cloudwatch: Any, sources: Any, bucket: str
) -> dict[str, str]:
    """A deploy into an empty bucket and a fresh environment; the versions it uploaded."""
    mwaa.stubber.add_response("get_environment", environment(bucket), {"Name": ENVIRONMENT})
    expect_update(mwaa)
    script.deploy(settings, s3, mwaa.client, cloudwatch, sources=sources, out=io.StringIO())
    return latest_versions(s3, bucket)


def test_first_deploy_uploads_four_artifacts_and_points_the_environment_at_exactly_their_versions(
    monkeypatch: pytest.MonkeyPatch, s3: Any, bucket: str, mwaa: StubbedMwaa, cloudwatch: Any, dist: Path
) -> None:
    settings = settings_of(monkeypatch, bucket)
    sources = script.Sources.of_repository("dev", dist)

    versions = first_deploy(settings, s3, mwaa, cloudwatch, sources, bucket)

    assert {key: len(ids) for key, ids in object_versions(s3, bucket).items()} == dict.fromkeys(KEYS, 1)
    assert mwaa.sent == [script.environment_update(ENVIRONMENT, versions)]
    assert mwaa.sent[0]["PluginsS3ObjectVersion"] == versions["plugins.zip"]

    def body(key: str) -> bytes:
        return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())

    assert body("dags/device_parameter_sync.py") == (REPO / "dags" / "device_parameter_sync.py").read_bytes()
    with zipfile.ZipFile(io.BytesIO(body("plugins.zip"))) as archive:
        assert archive.namelist() == [WHEEL]  # at the zip's root
        assert archive.read(WHEEL) == (dist / WHEEL).read_bytes()
    requirements = body("requirements.txt").decode()
    assert requirements.startswith((REPO / "requirements.txt").read_text(encoding="utf-8").rstrip("\n"))
    assert requirements.splitlines()[-1] == f"/usr/local/airflow/plugins/{WHEEL}"
    startup = body("startup.sh").decode()
    assert "export DEVICE_SYNC_STAGE=dev\n" in startup
    assert "export DEVICE_SYNC_SCHEDULE='0 * * * *'\n" in startup  # quoted for the shell
    assert "DEPLOY_BUCKET" not in startup and "MWAA_ENVIRONMENT" not in startup
    for key in KEYS:
        head = s3.head_object(Bucket=bucket, Key=key)
        assert head["Metadata"]["sha256"] == hashlib.sha256(body(key)).hexdigest()
    alarms = cloudwatch.describe_alarms(AlarmNamePrefix="device-sync-dev-")["MetricAlarms"]
    assert {"device-sync-dev-no-successful-sync", "device-sync-dev-many-deletes"} <= {a["AlarmName"] for a in alarms}


def test_a_second_identical_deploy_uploads_nothing_and_does_not_update_the_environment(
    monkeypatch: pytest.MonkeyPatch, s3: Any, bucket: str, mwaa: StubbedMwaa, cloudwatch: Any, dist: Path
) -> None:
    settings = settings_of(monkeypatch, bucket)
    sources = script.Sources.of_repository("dev", dist)
    versions = first_deploy(settings, s3, mwaa, cloudwatch, sources, bucket)
    before = object_versions(s3, bucket)

    # The environment now runs what the first deploy uploaded; no UpdateEnvironment response is queued, so a
    # call would fail the test.
    mwaa.stubber.add_response("get_environment", environment(bucket, **running(versions)), {"Name": ENVIRONMENT})
    out = io.StringIO()
    result = script.deploy(settings, s3, mwaa.client, cloudwatch, sources=sources, out=out)

    assert result["uploaded"] == [] and result["environment_update"] is None
    assert object_versions(s3, bucket) == before
    assert len(mwaa.sent) == 1
    assert out.getvalue().count("unchanged (version") == 4
    assert f"MWAA environment {ENVIRONMENT!r} already runs these versions: not updated" in out.getvalue()


def test_a_changed_dag_file_uploads_only_the_dag_and_needs_no_environment_update(
    monkeypatch: pytest.MonkeyPatch,
    s3: Any,
    bucket: str,
    mwaa: StubbedMwaa,
    cloudwatch: Any,
    dist: Path,
    tmp_path: Path,
) -> None:
    """MWAA syncs the dags/ folder by itself; an environment update would restart every component for nothing."""
    settings = settings_of(monkeypatch, bucket)
    sources = script.Sources.of_repository("dev", dist)
    versions = first_deploy(settings, s3, mwaa, cloudwatch, sources, bucket)
    dag = tmp_path / "device_parameter_sync.py"
    dag.write_bytes(sources.dag_file.read_bytes() + b"\n# changed\n")

    mwaa.stubber.add_response("get_environment", environment(bucket, **running(versions)), {"Name": ENVIRONMENT})
    result = script.deploy(
        settings, s3, mwaa.client, cloudwatch, sources=dataclasses.replace(sources, dag_file=dag), out=io.StringIO()
    )

    assert result["uploaded"] == ["dags/device_parameter_sync.py"]
    counts = {key: len(ids) for key, ids in object_versions(s3, bucket).items()}
    assert counts == {**dict.fromkeys(KEYS, 1), "dags/device_parameter_sync.py": 2}
    assert s3.get_object(Bucket=bucket, Key="dags/device_parameter_sync.py")["Body"].read().endswith(b"# changed\n")
    assert len(mwaa.sent) == 1  # the first deploy's only


def test_a_changed_stage_setting_uploads_only_the_startup_script_and_updates_the_environment(
    monkeypatch: pytest.MonkeyPatch,
    s3: Any,
    bucket: str,
    mwaa: StubbedMwaa,
    cloudwatch: Any,
    dist: Path,
    tmp_path: Path,
) -> None:
    settings = settings_of(monkeypatch, bucket)
    sources = script.Sources.of_repository("dev", dist)
    versions = first_deploy(settings, s3, mwaa, cloudwatch, sources, bucket)
    stage_file = tmp_path / "dev.env"
    stage_file.write_text(
        sources.stage_file.read_text(encoding="utf-8").replace(
            "DEVICE_SYNC_RETRIES=3", "DEVICE_SYNC_RETRIES=5\nDEVICE_SYNC_DEPLOY_BUCKET=not-exported"
        ),
        encoding="utf-8",
    )

    mwaa.stubber.add_response("get_environment", environment(bucket, **running(versions)), {"Name": ENVIRONMENT})
    expect_update(mwaa)
    result = script.deploy(
        settings,
        s3,
        mwaa.client,
        cloudwatch,
        sources=dataclasses.replace(sources, stage_file=stage_file),
        out=io.StringIO(),
    )

    assert result["uploaded"] == ["startup.sh"]
    counts = {key: len(ids) for key, ids in object_versions(s3, bucket).items()}
    assert counts == {**dict.fromkeys(KEYS, 1), "startup.sh": 2}
    now = latest_versions(s3, bucket)
    assert now["startup.sh"] != versions["startup.sh"]
    assert mwaa.sent[-1] == script.environment_update(ENVIRONMENT, now)
    assert mwaa.sent[-1]["PluginsS3ObjectVersion"] == versions["plugins.zip"]  # unchanged objects keep theirs
    startup = s3.get_object(Bucket=bucket, Key="startup.sh")["Body"].read().decode()
    assert "export DEVICE_SYNC_RETRIES=5\n" in startup and "not-exported" not in startup


def test_an_environment_left_on_older_versions_is_updated_even_when_nothing_is_uploaded(
    monkeypatch: pytest.MonkeyPatch, s3: Any, bucket: str, mwaa: StubbedMwaa, cloudwatch: Any, dist: Path
) -> None:
    """An earlier deploy uploaded but its update failed (the environment was busy): running again completes it."""
    settings = settings_of(monkeypatch, bucket)
    sources = script.Sources.of_repository("dev", dist)
    versions = first_deploy(settings, s3, mwaa, cloudwatch, sources, bucket)
    older = {**running(versions), "StartupScriptS3ObjectVersion": "an-older-version"}

    mwaa.stubber.add_response("get_environment", environment(bucket, **older), {"Name": ENVIRONMENT})
    expect_update(mwaa)
    result = script.deploy(settings, s3, mwaa.client, cloudwatch, sources=sources, out=io.StringIO())

    assert result["uploaded"] == []
    assert mwaa.sent[-1] == script.environment_update(ENVIRONMENT, versions)


def test_dags_only_uploads_only_the_dag_file_and_touches_nothing_else(
    monkeypatch: pytest.MonkeyPatch, s3: Any, bucket: str, dist: Path
) -> None:
    settings = settings_of(monkeypatch, bucket)
    out = io.StringIO()
    # No MWAA and no CloudWatch client at all: any call to either would fail.
    result = script.deploy(
        settings, s3, None, None, sources=script.Sources.of_repository("dev", dist), dags_only=True, out=out
    )

    assert result["uploaded"] == ["dags/device_parameter_sync.py"]
    assert object_versions(s3, bucket).keys() == {"dags/device_parameter_sync.py"}
    assert "--dags-only: no environment update, no monitoring" in out.getvalue()


def test_dry_run_prints_the_plan_and_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
    s3: Any,
    bucket: str,
    mwaa: StubbedMwaa,
    cloudwatch: Any,
    dist: Path,
    tmp_path: Path,
) -> None:
    settings = settings_of(monkeypatch, bucket)
    sources = script.Sources.of_repository("dev", dist)
    versions = first_deploy(settings, s3, mwaa, cloudwatch, sources, bucket)
    before = object_versions(s3, bucket)
    stage_file = tmp_path / "dev.env"
    stage_file.write_text("DEVICE_SYNC_RETRIES=7\n", encoding="utf-8")
    changed = dataclasses.replace(sources, stage_file=stage_file)

    mwaa.stubber.add_response("get_environment", environment(bucket, **running(versions)), {"Name": ENVIRONMENT})
    out = io.StringIO()
    result = script.deploy(settings, s3, mwaa.client, cloudwatch, sources=changed, dry_run=True, out=out)

    assert object_versions(s3, bucket) == before
    assert len(mwaa.sent) == 1  # no UpdateEnvironment
    printed = out.getvalue()
    for artifact in script.build_artifacts("dev", changed):
        (line,) = [line for line in printed.splitlines() if line.strip().startswith(artifact.key)]
        assert f"{len(artifact.body)} bytes" in line and artifact.sha256 in line
        assert line.endswith("upload") == (artifact.key == "startup.sh")
    assert f"MWAA environment {ENVIRONMENT!r} would update" in printed
    assert "StartupScriptS3ObjectVersion=<new version>" in printed
    assert f"PluginsS3ObjectVersion={versions['plugins.zip']}" in printed
    assert printed.rstrip().endswith("dry run: nothing was changed")
    assert result["uploaded"] == []


def test_the_artifacts_are_deterministic(dist: Path, tmp_path: Path) -> None:
    """The same sources give the same bytes, so an unchanged deploy compares equal and uploads nothing."""
    sources = script.Sources.of_repository("prod", dist)
    first = script.build_artifacts("prod", sources)
    rebuilt = tmp_path / "dist"
    run(["make", "-s", "dist", f"DIST={rebuilt}"], cwd=REPO)
    second = script.build_artifacts("prod", dataclasses.replace(sources, wheel=rebuilt / WHEEL))
    assert [(a.key, a.sha256) for a in first] == [(a.key, a.sha256) for a in second]

    with zipfile.ZipFile(io.BytesIO(first[1].body)) as archive:
        (info,) = archive.infolist()
    assert (info.filename, info.date_time, info.external_attr >> 16) == (WHEEL, (1980, 1, 1, 0, 0, 0), 0o100644)
    startup = first[3].body.decode()
    assert startup.splitlines()[:3] == [
        "#!/bin/sh",
        "# device-sync prod: the settings of prod.env for every Airflow component (scripts/deploy.py).",
        "export DEVICE_SYNC_STAGE=prod",
    ]
    assert "export DEVICE_SYNC_RETRIES=4" in startup


@pytest.mark.parametrize(
    ("status", "source_bucket", "message"),
    [
        ("UPDATING", None, "is UPDATING, it cannot be updated now"),
        ("AVAILABLE", "someone-elses-bucket", "reads bucket 'someone-elses-bucket', not DEVICE_SYNC_DEPLOY_BUCKET"),
    ],
)
def test_an_environment_that_cannot_take_this_deploy_is_refused_before_any_upload(
    monkeypatch: pytest.MonkeyPatch,
    s3: Any,
    bucket: str,
    mwaa: StubbedMwaa,
    cloudwatch: Any,
    dist: Path,
    status: str,
    source_bucket: str | None,
    message: str,
) -> None:
    response = environment(source_bucket or bucket, status=status)
    mwaa.stubber.add_response("get_environment", response, {"Name": ENVIRONMENT})
    with pytest.raises(script.DeployError, match=message):
        script.deploy(
            settings_of(monkeypatch, bucket),
            s3,
            mwaa.client,
            cloudwatch,
            sources=script.Sources.of_repository("dev", dist),
            out=io.StringIO(),
        )
    assert object_versions(s3, bucket) == {}


def test_a_missing_environment_is_refused_before_any_upload(
    monkeypatch: pytest.MonkeyPatch, s3: Any, bucket: str, mwaa: StubbedMwaa, cloudwatch: Any, dist: Path
) -> None:
    mwaa.stubber.add_client_error(
        "get_environment", "ResourceNotFoundException", "Environment not found", 404, expected_params={"Name": "nope"}
    )
    with pytest.raises(script.DeployError, match="'nope' \\(DEVICE_SYNC_MWAA_ENVIRONMENT\\) does not exist"):
        script.deploy(
            settings_of(monkeypatch, bucket, environment="nope"),
            s3,
            mwaa.client,
            cloudwatch,
            sources=script.Sources.of_repository("dev", dist),
            out=io.StringIO(),
        )
    assert object_versions(s3, bucket) == {}


@pytest.mark.parametrize(
    "case", ["unversioned bucket", "missing bucket", "no bucket setting", "missing connection", "missing wheel"]
)
def test_bad_input_is_a_clear_error_and_changes_nothing(
    monkeypatch: pytest.MonkeyPatch, s3: Any, moto_server: str, dist: Path, tmp_path: Path, case: str
) -> None:
    bucket = new_bucket(s3, versioned=case != "unversioned bucket")
    monkeypatch.setenv("DEVICE_SYNC_STAGE", "dev")  # main() sets it; monkeypatch restores it
    monkeypatch.setenv("DEVICE_SYNC_DEPLOY_BUCKET", bucket)
    argv = ["--stage", "dev", "--dist", str(dist)]
    expected = {
        "unversioned bucket": f"bucket {bucket!r} (DEVICE_SYNC_DEPLOY_BUCKET) does not have versioning enabled",
        "missing bucket": "bucket 'device-sync-no-such-bucket' (DEVICE_SYNC_DEPLOY_BUCKET) does not exist",
        "no bucket setting": "no bucket: set DEVICE_SYNC_DEPLOY_BUCKET",
        "missing connection": "the Airflow connection 'no_such_conn' (DEVICE_SYNC_AWS_CONN_ID) does not exist",
        "missing wheel": f"{tmp_path / WHEEL} does not exist (device-sync {__version__} was not built): run make dist",
    }[case]
    if case == "missing bucket":
        monkeypatch.setenv("DEVICE_SYNC_DEPLOY_BUCKET", "device-sync-no-such-bucket")
    elif case == "no bucket setting":
        monkeypatch.delenv("DEVICE_SYNC_DEPLOY_BUCKET")
    elif case == "missing connection":
        monkeypatch.setenv("DEVICE_SYNC_AWS_CONN_ID", "no_such_conn")
    elif case == "missing wheel":
        argv = ["--stage", "dev", "--dist", str(tmp_path)]

    status, err = call_main(argv)

    assert status == 2
    assert expected in err and "nothing was changed" in err
    assert object_versions(s3, bucket) == {}


def call_main(argv: list[str]) -> tuple[int, str]:
    stderr = io.StringIO()
    saved, sys.stderr = sys.stderr, stderr
    try:
        status = script.main(argv)
    finally:
        sys.stderr = saved
    return status, stderr.getvalue()


def test_an_unknown_stage_is_refused(capsys: pytest.CaptureFixture[str], dist: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--stage", "PROD", "--dist", str(dist)])
    assert exit_info.value.code == 2
    assert "argument --stage: invalid choice: 'PROD'" in capsys.readouterr().err


def test_an_unreachable_endpoint_fails_within_the_bound_naming_the_connection(
    monkeypatch: pytest.MonkeyPatch, moto_server: str, dist: Path
) -> None:
    from airflow_stack import free_port

    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    connection = {"conn_type": "aws", "extra": {"region_name": "us-east-1", "endpoint_url": endpoint}}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(connection))
    monkeypatch.setenv("DEVICE_SYNC_STAGE", "dev")
    monkeypatch.setenv("DEVICE_SYNC_DEPLOY_BUCKET", "device-sync-unreachable")
    monkeypatch.setenv("DEVICE_SYNC_CLOUDWATCH_TIMEOUT_SECONDS", "1")

    started = time.monotonic()
    status, err = call_main(["--stage", "dev", "--dist", str(dist)])

    assert status == 1
    assert time.monotonic() - started < 20
    assert "through the Airflow connection 'aws_default' (DEVICE_SYNC_AWS_CONN_ID) failed" in err
    assert endpoint in err


def test_the_s3_and_mwaa_clients_are_bounded_like_cloudwatchs(moto_server: str) -> None:
    for service in ("s3", "mwaa"):
        client = metrics.aws_client(service, "aws_default", timeout_seconds=3)
        assert client.meta.service_model.service_name == service
        assert (client.meta.config.connect_timeout, client.meta.config.read_timeout) == (3, 3)
        assert client.meta.config.retries == {"total_max_attempts": 2, "mode": "standard"}


def deploy_command(bucket: str, dist: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEVICE_SYNC_DEPLOY_BUCKET": bucket}  # AIRFLOW_CONN_AWS_DEFAULT points at moto
    env.pop("DEVICE_SYNC_MWAA_ENVIRONMENT", None)
    return subprocess.run(
        [str(REPO / ".venv" / "bin" / "python"), "scripts/deploy.py", "--stage", "dev", "--dist", str(dist), *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_the_command_deploys_through_the_airflow_connection_and_a_second_run_uploads_nothing(
    s3: Any, bucket: str, cloudwatch: Any, dist: Path
) -> None:
    first = deploy_command(bucket, dist)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("  uploaded s3://") == 4
    assert "no MWAA environment was updated: DEVICE_SYNC_MWAA_ENVIRONMENT is not set" in first.stdout
    assert "CloudWatch: 3 alarms and dashboard 'device-sync-dev' deployed" in first.stdout
    after_first = object_versions(s3, bucket)
    assert {key: len(ids) for key, ids in after_first.items()} == dict.fromkeys(KEYS, 1)
    assert len(cloudwatch.describe_alarms(AlarmNamePrefix="device-sync-dev-")["MetricAlarms"]) == 3

    second = deploy_command(bucket, dist)
    assert second.returncode == 0, second.stderr
    assert "uploaded s3://" not in second.stdout
    assert second.stdout.count("unchanged (version") == 4
    assert object_versions(s3, bucket) == after_first

    dry = deploy_command(bucket, dist, "--dry-run", "--dags-only")
    assert dry.returncode == 0, dry.stderr
    assert "dry run: nothing was changed" in dry.stdout
    assert object_versions(s3, bucket) == after_first


def test_what_was_deployed_is_what_works(
    s3: Any,
    bucket: str,
    dist: Path,
    database_url: str,
    moto_server: str,
    conn: psycopg.Connection[Any],
    tmp_path: Path,
) -> None:
    """From the bucket only: requirements.txt with the wheel unpacked from plugins.zip installed into a fresh
    virtual environment, the startup script's exports, the DAG file alone in a DAGs folder; then a real sync."""
    result = deploy_command(bucket, dist)
    assert result.returncode == 0, result.stderr

    def download(key: str) -> bytes:
        return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())

    plugins, dags, work = tmp_path / "plugins", tmp_path / "dags", tmp_path / "work"
    for folder in (plugins, dags, work):
        folder.mkdir()
    with zipfile.ZipFile(io.BytesIO(download("plugins.zip"))) as archive:
        archive.extractall(plugins)  # what MWAA does into /usr/local/airflow/plugins
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(
        download("requirements.txt").decode().replace("/usr/local/airflow/plugins/", f"{plugins}/"), encoding="utf-8"
    )
    (dags / "device_parameter_sync.py").write_bytes(download("dags/device_parameter_sync.py"))
    startup = tmp_path / "startup.sh"
    startup.write_bytes(download("startup.sh"))

    venv = tmp_path / "venv"
    run([uv(), "venv", "--quiet", "--python", "3.11", str(venv)])
    run([uv(), "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), "-r", str(requirements)])

    # The startup script's exports, evaluated by a shell as MWAA does.
    exported = run(["bash", "-c", '. "$1" && env -0', "startup", str(startup)], env={"PATH": "/usr/bin:/bin"})
    settings = dict(item.split("=", 1) for item in exported.split("\0") if item.startswith("DEVICE_SYNC_"))
    assert settings["DEVICE_SYNC_STAGE"] == "dev"
    assert settings["DEVICE_SYNC_SCHEDULE"] == "0 * * * *"
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins),  # holds only the wheel, as on MWAA
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path}/airflow.db",
        "AIRFLOW_CONN_DEVICE_SYNC_POSTGRES": psycopg_url_to_airflow_uri(database_url),
        "AIRFLOW_CONN_AWS_DEFAULT": os.environ["AIRFLOW_CONN_AWS_DEFAULT"],
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        **settings,
    }
    seed_three_devices(conn)

    airflow = str(venv / "bin" / "airflow")
    run([airflow, "db", "migrate"], env=env, cwd=work)
    run([airflow, "dags", "test", "device_parameter_sync", T.isoformat()], env=env, cwd=work)

    assert_three_devices_synced(conn)
