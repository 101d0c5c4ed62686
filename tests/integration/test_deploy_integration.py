"""``device_sync.deploy`` (``device-sync-deploy``, ``make deploy STAGE=dev|prod``): the MWAA deploy against a
real moto server over HTTP.

S3 (a versioned bucket of its own per test) and CloudWatch are moto's, reached over HTTP like AWS. moto has no
MWAA API, so the MWAA client is a real boto3 ``mwaa`` client wrapped in botocore's ``Stubber``: the one stub,
for the one API nothing here can serve (GetEnvironment, UpdateEnvironment, and InvokeRestApi for the pool). The
client still validates every request against the real MWAA service model (unknown or mistyped parameters fail),
and the Stubber checks each request's parameters and each response against it too and fails on any call that
was not expected (so "no UpdateEnvironment call" is checked, not assumed).

The last test installs what was uploaded (requirements.txt as MWAA installs it: under MWAA 3.3.1's Airflow
constraints and essential constraints, with the wheel unpacked from plugins.zip; the startup script's exports;
only the uploaded DAG files) into a throwaway virtual environment and runs the DAG against real PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import hashlib
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
from typing import Any

import boto3
import psycopg
import pytest
from botocore.stub import ANY, Stubber
from test_wheel_integration import T, assert_three_devices_synced, run, seed_three_devices, uv

from conftest import REPO, psycopg_url_to_airflow_uri
from device_sync import __version__, metrics, pool
from device_sync import deploy as script
from device_sync.config import Settings, load_settings

ENVIRONMENT = "device-sync-dev"
AIRFLOW = "3.3.1"  # the MWAA environments' Airflow version here
CONSTRAINT = f"--constraint https://raw.githubusercontent.com/apache/airflow/constraints-{AIRFLOW}/constraints-3.12.txt"
WHEEL = f"device_sync-{__version__}-py3-none-any.whl"
DAG_KEYS = tuple(f"dags/{path.name}" for path in sorted((REPO / "dags").glob("*.py")))
DAG_KEY = "dags/device_parameter_sync.py"
KEYS = (*DAG_KEYS, "plugins.zip", "requirements.txt", "startup.sh")


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
    else:
        monkeypatch.setenv("DEVICE_SYNC_MWAA_AIRFLOW_VERSION", AIRFLOW)
    return load_settings()


def sources_of(dist: Path, stage: str = "dev") -> script.Sources:
    return script.Sources.of_package(stage, dist / WHEEL)


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
            "AirflowVersion": AIRFLOW,
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


def expect_status_after_update(mwaa: StubbedMwaa, bucket: str, status: str) -> None:
    """The GetEnvironment the pool step reads after an UpdateEnvironment (MWAA then restarts: UPDATING)."""
    mwaa.stubber.add_response("get_environment", environment(bucket, status=status), {"Name": ENVIRONMENT})


def expect_pool(mwaa: StubbedMwaa, *, exists: bool = True, slots: int = 4) -> None:
    """The pool step's REST API calls: PATCH /pools/device_sync_db, and POST /pools when it answers 404."""
    patch = {
        "Name": ENVIRONMENT,
        "Method": "PATCH",
        "Path": "/pools/device_sync_db",
        "Body": {"slots": slots, "description": pool.DESCRIPTION},
    }
    if exists:
        response = {"name": pool.NAME, "slots": slots, "description": pool.DESCRIPTION, "include_deferred": False}
        mwaa.stubber.add_response("invoke_rest_api", {"RestApiStatusCode": 200, "RestApiResponse": response}, patch)
        return
    mwaa.stubber.add_client_error(
        "invoke_rest_api",
        "RestApiClientException",
        "The Pool with name: `device_sync_db` was not found",
        400,
        expected_params=patch,
        modeled_fields={"RestApiStatusCode": 404, "RestApiResponse": {"detail": "not found"}},
    )
    post = {
        "Name": ENVIRONMENT,
        "Method": "POST",
        "Path": "/pools",
        "Body": {"name": pool.NAME, "slots": slots, "description": pool.DESCRIPTION, "include_deferred": False},
    }
    mwaa.stubber.add_response("invoke_rest_api", {"RestApiStatusCode": 201, "RestApiResponse": {}}, post)


def first_deploy(
    settings: Settings, s3: Any, mwaa: StubbedMwaa, cloudwatch: Any, sources: Any, bucket: str
) -> dict[str, str]:
    """A deploy into an empty bucket and a fresh environment (restarting after it: no pool yet); the versions
    it uploaded."""
    mwaa.stubber.add_response("get_environment", environment(bucket), {"Name": ENVIRONMENT})
    expect_update(mwaa)
    expect_status_after_update(mwaa, bucket, "UPDATING")
    script.deploy(settings, s3, mwaa.client, cloudwatch, sources=sources, out=io.StringIO())
    return latest_versions(s3, bucket)


def test_first_deploy_uploads_four_artifacts_and_points_the_environment_at_exactly_their_versions(
    monkeypatch: pytest.MonkeyPatch, s3: Any, bucket: str, mwaa: StubbedMwaa, cloudwatch: Any, dist: Path
) -> None:
    settings = settings_of(monkeypatch, bucket)
    sources = sources_of(dist)

    mwaa.stubber.add_response("get_environment", environment(bucket), {"Name": ENVIRONMENT})
    expect_update(mwaa)
    expect_status_after_update(mwaa, bucket, "UPDATING")  # no InvokeRestApi response queued: a call would fail
    out = io.StringIO()
    result = script.deploy(settings, s3, mwaa.client, cloudwatch, sources=sources, out=out)
    versions = latest_versions(s3, bucket)

    assert {key: len(ids) for key, ids in object_versions(s3, bucket).items()} == dict.fromkeys(KEYS, 1)
    assert mwaa.sent == [script.environment_update(ENVIRONMENT, versions)]
    assert mwaa.sent[0]["PluginsS3ObjectVersion"] == versions["plugins.zip"]
    assert result["pool"] is None
    printed = out.getvalue()
    assert f"Airflow pool device_sync_db not set: MWAA environment {ENVIRONMENT!r} is UPDATING" in printed
    assert "airflow pools set device_sync_db 4 " in printed and "device-sync-deploy --stage dev" in printed
    assert f"requirements.txt for Airflow {AIRFLOW} (from MWAA environment {ENVIRONMENT!r})" in printed
    assert "device-sync-migrate" in printed and "make " not in printed

    def body(key: str) -> bytes:
        return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())

    for key in DAG_KEYS:  # every DAG file of the package
        assert body(key) == (REPO / key).read_bytes()
    with zipfile.ZipFile(io.BytesIO(body("plugins.zip"))) as archive:
        assert archive.namelist() == [WHEEL]  # at the zip's root
        assert archive.read(WHEEL) == (dist / WHEEL).read_bytes()
    requirements = body("requirements.txt").decode()
    # MWAA 3.3.1's constraints pin every dependency of the wheel: the constraints and the wheel, nothing else.
    lines = [line for line in requirements.splitlines() if not line.startswith("#")]
    assert lines == [CONSTRAINT, f"/usr/local/airflow/plugins/{WHEEL}"]
    assert requirements == result["requirements"].decode()
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
    sources = sources_of(dist)
    versions = first_deploy(settings, s3, mwaa, cloudwatch, sources, bucket)
    before = object_versions(s3, bucket)

    # The environment now runs what the first deploy uploaded; no UpdateEnvironment response is queued, so a
    # call would fail the test.
    mwaa.stubber.add_response("get_environment", environment(bucket, **running(versions)), {"Name": ENVIRONMENT})
    expect_pool(mwaa)  # AVAILABLE and not updated: the pool is set now (PATCH, idempotent)
    out = io.StringIO()
    result = script.deploy(settings, s3, mwaa.client, cloudwatch, sources=sources, out=out)

    assert result["uploaded"] == [] and result["environment_update"] is None
    assert object_versions(s3, bucket) == before
    assert len(mwaa.sent) == 1
    assert out.getvalue().count("unchanged (version") == len(KEYS)
    assert f"MWAA environment {ENVIRONMENT!r} already runs these versions: not updated" in out.getvalue()
    assert result["pool"] == "resized"
    assert "Airflow pool device_sync_db resized: 4 slots (MWAA REST API)" in out.getvalue()


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
    sources = sources_of(dist)
    versions = first_deploy(settings, s3, mwaa, cloudwatch, sources, bucket)
    dag = tmp_path / "device_parameter_sync.py"
    dag.write_bytes((REPO / DAG_KEY).read_bytes() + b"\n# changed\n")
    dag_files = tuple(dag if path.name == dag.name else path for path in sources.dag_files)

    mwaa.stubber.add_response("get_environment", environment(bucket, **running(versions)), {"Name": ENVIRONMENT})
    expect_pool(mwaa, exists=False, slots=9)  # PATCH answers 404: POST /pools creates it
    monkeypatch.setenv("DEVICE_SYNC_DB_POOL_SLOTS", "9")
    out = io.StringIO()
    result = script.deploy(
        load_settings(), s3, mwaa.client, cloudwatch, sources=dataclasses.replace(sources, dag_files=dag_files), out=out
    )

    assert result["uploaded"] == [DAG_KEY]
    counts = {key: len(ids) for key, ids in object_versions(s3, bucket).items()}
    assert counts == {**dict.fromkeys(KEYS, 1), DAG_KEY: 2}
    assert s3.get_object(Bucket=bucket, Key=DAG_KEY)["Body"].read().endswith(b"# changed\n")
    assert len(mwaa.sent) == 1  # the first deploy's only
    assert result["pool"] == "created" and "Airflow pool device_sync_db created: 9 slots" in out.getvalue()


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
    sources = sources_of(dist)
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
    expect_status_after_update(mwaa, bucket, "UPDATING")
    result = script.deploy(
        settings,
        s3,
        mwaa.client,
        cloudwatch,
        sources=dataclasses.replace(sources, stage_file=stage_file),
        out=io.StringIO(),
    )

    assert result["uploaded"] == ["startup.sh"] and result["pool"] is None
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
    sources = sources_of(dist)
    versions = first_deploy(settings, s3, mwaa, cloudwatch, sources, bucket)
    older = {**running(versions), "StartupScriptS3ObjectVersion": "an-older-version"}

    mwaa.stubber.add_response("get_environment", environment(bucket, **older), {"Name": ENVIRONMENT})
    expect_update(mwaa)
    expect_status_after_update(mwaa, bucket, "AVAILABLE")  # read again after the update: AVAILABLE, the pool is set
    expect_pool(mwaa)
    result = script.deploy(settings, s3, mwaa.client, cloudwatch, sources=sources, out=io.StringIO())

    assert result["uploaded"] == []
    assert mwaa.sent[-1] == script.environment_update(ENVIRONMENT, versions)
    assert result["pool"] == "resized"


def test_dags_only_uploads_only_the_dag_file_and_touches_nothing_else(
    monkeypatch: pytest.MonkeyPatch, s3: Any, bucket: str, dist: Path
) -> None:
    settings = settings_of(monkeypatch, bucket)
    out = io.StringIO()
    # No MWAA and no CloudWatch client at all: any call to either would fail.
    result = script.deploy(settings, s3, None, None, sources=sources_of(dist), dags_only=True, out=out)

    assert result["uploaded"] == list(DAG_KEYS)
    assert object_versions(s3, bucket).keys() == set(DAG_KEYS)
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
    sources = sources_of(dist)
    versions = first_deploy(settings, s3, mwaa, cloudwatch, sources, bucket)
    before = object_versions(s3, bucket)
    stage_file = tmp_path / "dev.env"
    stage_file.write_text("DEVICE_SYNC_RETRIES=7\n", encoding="utf-8")
    changed = dataclasses.replace(sources, stage_file=stage_file)

    mwaa.stubber.add_response("get_environment", environment(bucket, **running(versions)), {"Name": ENVIRONMENT})
    out = io.StringIO()
    result = script.deploy(settings, s3, mwaa.client, cloudwatch, sources=changed, dry_run=True, out=out)

    assert object_versions(s3, bucket) == before
    assert len(mwaa.sent) == 1  # no UpdateEnvironment, and no InvokeRestApi (none queued)
    printed = out.getvalue()
    requirements = script.plan_requirements(AIRFLOW, changed).body
    assert "  requirements.txt would be:\n" + "".join(
        f"    {line}\n" for line in requirements.decode().splitlines()
    ) in (printed)
    assert f"    {CONSTRAINT}\n" in printed
    assert "would set the Airflow pool device_sync_db to 4 slots through the MWAA REST API" in printed
    for artifact in script.build_artifacts("dev", changed, requirements):
        (line,) = [
            line for line in printed.splitlines() if line.strip().startswith(f"{artifact.key} ") and "sha256" in line
        ]
        assert f"{len(artifact.body)} bytes" in line and artifact.sha256 in line
        assert line.endswith("upload") == (artifact.key == "startup.sh")
    assert f"MWAA environment {ENVIRONMENT!r} would update" in printed
    assert "StartupScriptS3ObjectVersion=<new version>" in printed
    assert f"PluginsS3ObjectVersion={versions['plugins.zip']}" in printed
    assert printed.rstrip().endswith("dry run: nothing was changed")
    assert result["uploaded"] == []


def test_the_artifacts_are_deterministic(dist: Path, tmp_path: Path) -> None:
    """The same sources give the same bytes, so an unchanged deploy compares equal and uploads nothing."""
    sources = sources_of(dist, "prod")
    first = script.build_artifacts("prod", sources, script.plan_requirements(AIRFLOW, sources).body)
    rebuilt = tmp_path / "dist"
    run(["make", "-s", "dist", f"DIST={rebuilt}"], cwd=REPO)
    again = dataclasses.replace(sources, wheel=rebuilt / WHEEL)
    second = script.build_artifacts("prod", again, script.plan_requirements(AIRFLOW, again).body)
    assert [(a.key, a.sha256) for a in first] == [(a.key, a.sha256) for a in second]
    by_key = {a.key: a for a in first}

    with zipfile.ZipFile(io.BytesIO(by_key["plugins.zip"].body)) as archive:
        (info,) = archive.infolist()
    assert (info.filename, info.date_time, info.external_attr >> 16) == (WHEEL, (1980, 1, 1, 0, 0, 0), 0o100644)
    startup = by_key["startup.sh"].body.decode()
    assert startup.splitlines()[:3] == [
        "#!/bin/sh",
        "# device-sync prod: the settings of prod.env for every Airflow component (device-sync-deploy).",
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
            sources=sources_of(dist),
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
            sources=sources_of(dist),
            out=io.StringIO(),
        )
    assert object_versions(s3, bucket) == {}


@pytest.mark.parametrize(
    "case",
    [
        "unversioned bucket",
        "missing bucket",
        "no bucket setting",
        "missing connection",
        "missing wheel",
        "no airflow version",
        "wheel with a conflict",
    ],
)
def test_bad_input_is_a_clear_error_and_changes_nothing(
    monkeypatch: pytest.MonkeyPatch, s3: Any, moto_server: str, dist: Path, tmp_path: Path, case: str
) -> None:
    bucket = new_bucket(s3, versioned=case != "unversioned bucket")
    monkeypatch.setenv("DEVICE_SYNC_STAGE", "dev")  # main() sets it; monkeypatch restores it
    monkeypatch.setenv("DEVICE_SYNC_DEPLOY_BUCKET", bucket)
    monkeypatch.setenv("DEVICE_SYNC_MWAA_AIRFLOW_VERSION", AIRFLOW)
    argv = ["--stage", "dev", "--dist", str(dist)]
    expected = {
        "unversioned bucket": f"bucket {bucket!r} (DEVICE_SYNC_DEPLOY_BUCKET) does not have versioning enabled",
        "missing bucket": "bucket 'device-sync-no-such-bucket' (DEVICE_SYNC_DEPLOY_BUCKET) does not exist",
        "no bucket setting": "no bucket: set DEVICE_SYNC_DEPLOY_BUCKET",
        "missing connection": "the Airflow connection 'no_such_conn' (DEVICE_SYNC_AWS_CONN_ID) does not exist",
        "missing wheel": f"{tmp_path / WHEEL} does not exist (device-sync {__version__} was not built): name the "
        "wheel with device-sync-deploy --wheel PATH",
        "no airflow version": "no Airflow version to write requirements.txt for: set DEVICE_SYNC_MWAA_ENVIRONMENT",
        "wheel with a conflict": f"pins apache-airflow=={AIRFLOW}",
    }[case]
    if case == "missing bucket":
        monkeypatch.setenv("DEVICE_SYNC_DEPLOY_BUCKET", "device-sync-no-such-bucket")
    elif case == "no bucket setting":
        monkeypatch.delenv("DEVICE_SYNC_DEPLOY_BUCKET")
    elif case == "missing connection":
        monkeypatch.setenv("DEVICE_SYNC_AWS_CONN_ID", "no_such_conn")
    elif case == "missing wheel":
        argv = ["--stage", "dev", "--dist", str(tmp_path)]
    elif case == "no airflow version":
        monkeypatch.delenv("DEVICE_SYNC_MWAA_AIRFLOW_VERSION")
    elif case == "wheel with a conflict":  # the real wheel with its Airflow requirement raised past 3.3.1
        argv = ["--stage", "dev", "--wheel", str(wheel_asking(dist / WHEEL, tmp_path, "apache-airflow>=3.3.2"))]

    status, err = call_main(argv)

    assert status == 2
    assert expected in err and "nothing was changed" in err
    assert object_versions(s3, bucket) == {}


def wheel_asking(wheel: Path, folder: Path, requirement: str) -> Path:
    """A copy of ``wheel`` whose METADATA's apache-airflow Requires-Dist is ``requirement``."""
    copy = folder / wheel.name
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(copy, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith(".dist-info/METADATA"):
                lines = data.decode().splitlines(keepends=True)
                data = "".join(
                    f"Requires-Dist: {requirement}\n" if line.startswith("Requires-Dist: apache-airflow<") else line
                    for line in lines
                ).encode()
                assert f"Requires-Dist: {requirement}\n".encode() in data
            target.writestr(info, data)
    return copy


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
    monkeypatch.setenv("DEVICE_SYNC_MWAA_AIRFLOW_VERSION", AIRFLOW)
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
    env["DEVICE_SYNC_MWAA_AIRFLOW_VERSION"] = AIRFLOW
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
    assert first.stdout.count("  uploaded s3://") == len(KEYS)
    assert "no MWAA environment was updated: DEVICE_SYNC_MWAA_ENVIRONMENT is not set" in first.stdout
    assert "CloudWatch: 3 alarms and dashboard 'device-sync-dev' deployed" in first.stdout
    after_first = object_versions(s3, bucket)
    assert {key: len(ids) for key, ids in after_first.items()} == dict.fromkeys(KEYS, 1)
    assert len(cloudwatch.describe_alarms(AlarmNamePrefix="device-sync-dev-")["MetricAlarms"]) == 3

    second = deploy_command(bucket, dist)
    assert second.returncode == 0, second.stderr
    assert "uploaded s3://" not in second.stdout
    assert second.stdout.count("unchanged (version") == len(KEYS)
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
    """From the bucket only: requirements.txt installed as MWAA installs it (under MWAA 3.3.1's essential
    constraints, its --constraint URL read from the package's copy of that file, which this machine cannot
    fetch) with the wheel unpacked from plugins.zip, into a fresh virtual environment; the startup script's
    exports; the uploaded DAG files alone in a DAGs folder; then a real sync."""
    result = deploy_command(bucket, dist)
    assert result.returncode == 0, result.stderr

    def download(key: str) -> bytes:
        return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())

    plugins, dags, work = tmp_path / "plugins", tmp_path / "dags", tmp_path / "work"
    for folder in (plugins, dags, work):
        folder.mkdir()
    with zipfile.ZipFile(io.BytesIO(download("plugins.zip"))) as archive:
        archive.extractall(plugins)  # what MWAA does into /usr/local/airflow/plugins
    mwaa_set = REPO / "include" / "mwaa" / AIRFLOW
    uploaded = download("requirements.txt").decode()
    assert uploaded.startswith(CONSTRAINT + "\n")
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(
        uploaded.replace(CONSTRAINT, f"--constraint {mwaa_set / 'airflow_constraints.txt'}").replace(
            "/usr/local/airflow/plugins/", f"{plugins}/"
        ),
        encoding="utf-8",
    )
    for key in DAG_KEYS:
        (tmp_path / key).write_bytes(download(key))
    startup = tmp_path / "startup.sh"
    startup.write_bytes(download("startup.sh"))

    venv = tmp_path / "venv"
    python = str(venv / "bin" / "python")
    run([uv(), "venv", "--quiet", "--python", "3.11", str(venv)])
    essential = str(mwaa_set / "mwaa_essential_constraints.txt")
    run([uv(), "pip", "install", "--quiet", "--python", python, "-c", essential, "-r", str(requirements)], timeout=900)
    installed = run([python, "-c", "import airflow, device_sync; print(airflow.__version__, device_sync.__version__)"])
    assert installed.split() == [AIRFLOW, __version__]

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
