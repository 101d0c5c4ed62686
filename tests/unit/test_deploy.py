"""Unit tests of ``device_sync.deploy``: the requirements.txt MWAA accepts, the resolution check against MWAA's
constraints (the package's copies in include/mwaa/), the Airflow version it is written for, and the pool step's
REST API calls (a real boto3 MWAA client behind botocore's Stubber; the bodies checked by Airflow's own models).
No network, no database, no S3: what needs S3 is in tests/integration/test_deploy_integration.py."""

from __future__ import annotations

import io
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import REPO
from device_sync import __version__, deploy, pool
from device_sync.config import ConfigError, Settings, load_settings

VERSIONS = ("3.3.1", "3.2.1", "3.0.6")
WHEEL = f"device_sync-{__version__}-py3-none-any.whl"
ENVIRONMENT = "device-sync-dev"


def metadata(requires: list[str], extras: dict[str, list[str]] | None = None) -> str:
    """A wheel's METADATA with these Requires-Dist (extras' as hatchling writes them)."""
    lines = ["Metadata-Version: 2.4", "Name: device-sync", f"Version: {__version__}"]
    lines += [f"Requires-Dist: {requirement}" for requirement in requires]
    for extra, requirements in (extras or {}).items():
        lines += [f"Provides-Extra: {extra}"]
        lines += [f"Requires-Dist: {requirement}; extra == '{extra}'" for requirement in requirements]
    return "\n".join(lines) + "\n\n"


def project_metadata() -> str:
    """The METADATA the real wheel carries: pyproject.toml's dependencies and optional dependencies."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return metadata(project["dependencies"], project.get("optional-dependencies", {}))


def fake_wheel(folder: Path, text: str) -> Path:
    wheel = folder / WHEEL
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(f"device_sync-{__version__}.dist-info/METADATA", text)
        archive.writestr("device_sync/__init__.py", "")
    return wheel


def sources(wheel: Path) -> deploy.Sources:
    return deploy.Sources.of_package("dev", wheel)


def pins_tested_on(version: str) -> dict[str, str]:
    return deploy.parse_pins((REPO / "include" / "mwaa" / version / "added_pins.txt").read_text(encoding="utf-8"))


def requirement_lines(body: bytes) -> list[str]:
    return [line for line in body.decode().splitlines() if line and not line.startswith("#")]


# --- requirements.txt ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("3.3.1", []),  # psycopg, pydantic-settings and the rest are pinned by Airflow's constraints
        ("3.2.1", ["psycopg[binary]"]),  # its constraints pin no psycopg (3)
        ("3.0.6", ["psycopg[binary]", "pydantic-settings"]),
    ],
)
def test_requirements_txt_names_the_constraints_the_wheel_and_only_what_mwaa_does_not_pin(
    version: str, expected: list[str]
) -> None:
    requirements = deploy.runtime_requirements(project_metadata())
    pins = deploy.added_pins(requirements, deploy.mwaa_package_set(version))
    body = deploy.requirements_txt(version, WHEEL, pins)

    lines = requirement_lines(body)
    assert body.decode().splitlines()[0] == (
        f"--constraint https://raw.githubusercontent.com/apache/airflow/constraints-{version}/constraints-3.12.txt"
    )
    assert lines[1] == f"/usr/local/airflow/plugins/{WHEEL}"
    # Exactly these, each at the version tested inside that package set (include/mwaa/<version>/added_pins.txt).
    pinned = pins_tested_on(version)
    assert lines[2:] == [f"{name}=={pinned[canonicalize_name(Requirement(name).name)]}" for name in expected]
    assert not any(
        canonicalize_name(Requirement(line).name) == "apache-airflow" for line in lines[1:] if "/" not in line
    )


def test_the_pins_for_3_0_6_fit_its_python_dotenv() -> None:
    """pydantic-settings 2.16 needs python-dotenv>=1.2.2, which MWAA 3.0.6 pins at 1.1.1: the pin is older."""
    requirements = deploy.runtime_requirements(project_metadata())
    pins = deploy.added_pins(requirements, deploy.mwaa_package_set("3.0.6"))
    assert pins == ["psycopg[binary]==3.3.9", "pydantic-settings==2.15.0"]


def test_extra_only_and_foreign_python_dependencies_are_left_out() -> None:
    text = metadata(
        ["tenacity>=8.2", "tomli>=2; python_version < '3.11'", "exceptiongroup>=1; python_version >= '3.12'"],
        {"celery": ["celery>=5.6.3,<5.7", "redis>=5"]},
    )
    names = [r.name for r in deploy.runtime_requirements(text)]
    assert names == ["tenacity", "exceptiongroup"]  # evaluated as on MWAA's Python 3.12, outside any extra


def test_airflow_itself_never_gets_a_line_even_where_nothing_pins_it() -> None:
    package_set = deploy.MwaaPackageSet.parse("9.9.9", "croniter==1.0\n", "", "apache-airflow==3.3.2\nrich==14.0.0\n")
    requirements = [Requirement("apache-airflow>=3"), Requirement("apache-airflow-core>=3"), Requirement("rich>=1")]
    assert deploy.added_pins(requirements, package_set) == ["rich==14.0.0"]


def test_a_dependency_without_a_tested_pin_is_named_as_the_wheel_asks() -> None:
    package_set = deploy.MwaaPackageSet.parse("9.9.9", "", "")
    assert deploy.added_pins([Requirement("somepackage[x]>=1.2")], package_set) == ["somepackage[x]>=1.2"]


def test_a_version_without_data_gets_the_constraints_and_the_wheel_only(tmp_path: Path) -> None:
    planned = deploy.plan_requirements("3.9.9", sources(fake_wheel(tmp_path, project_metadata())))
    assert not planned.checked
    assert requirement_lines(planned.body) == [
        "--constraint https://raw.githubusercontent.com/apache/airflow/constraints-3.9.9/constraints-3.12.txt",
        f"/usr/local/airflow/plugins/{WHEEL}",
    ]


# --- the resolution check --------------------------------------------------------------------------------------


def test_a_wheel_asking_a_newer_airflow_than_the_environment_is_refused_naming_the_package(tmp_path: Path) -> None:
    wheel = fake_wheel(tmp_path, metadata(["apache-airflow>=3.3.2", "tenacity>=8.2"]))
    with pytest.raises(deploy.DeployError) as raised:
        deploy.plan_requirements("3.3.1", sources(wheel))
    message = str(raised.value)
    assert "apache-airflow>=3.3.2 but MWAA 3.3.1 pins apache-airflow==3.3.1" in message
    assert "tenacity" not in message  # 9.1.4 satisfies it


def test_every_conflict_is_named_with_what_the_wheel_asks_and_what_mwaa_pins(tmp_path: Path) -> None:
    wheel = fake_wheel(tmp_path, metadata(["celery>=5.6", "apache-airflow-providers-amazon>=9.20", "flask<3"]))
    with pytest.raises(deploy.DeployError) as raised:
        deploy.plan_requirements("3.0.6", sources(wheel))
    message = str(raised.value)
    assert "celery>=5.6 but MWAA 3.0.6 pins celery==5.5.2" in message
    assert (
        "apache-airflow-providers-amazon>=9.20 but MWAA 3.0.6 pins apache-airflow-providers-amazon==9.12.0" in message
    )
    assert "flask" not in message  # Flask==2.2.5 satisfies <3


def test_essential_pins_win_over_the_airflow_constraints() -> None:
    package_set = deploy.MwaaPackageSet.parse("9.9.9", "celery==5.6.3\nkombu==5.6.2\n", "celery==5.5.2\n")
    assert package_set.pins == {"celery": "5.5.2", "kombu": "5.6.2"}
    assert deploy.conflicts([Requirement("celery>=5.6")], package_set) == [
        "celery>=5.6 but MWAA 9.9.9 pins celery==5.5.2"
    ]


@pytest.mark.parametrize("version", VERSIONS)
def test_the_real_wheels_dependencies_pass_the_check_for_every_mwaa_version(version: str, tmp_path: Path) -> None:
    planned = deploy.plan_requirements(version, sources(fake_wheel(tmp_path, project_metadata())))
    assert planned.checked


# --- the Airflow version's source ------------------------------------------------------------------------------


def test_the_environments_airflow_version_wins_over_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVICE_SYNC_MWAA_AIRFLOW_VERSION", "3.0.6")
    settings = load_settings()
    assert deploy.airflow_version(settings, {"Name": ENVIRONMENT, "AirflowVersion": "3.3.1"}) == "3.3.1"
    assert deploy.airflow_version(settings, None) == "3.0.6"
    assert deploy.airflow_version(settings, {"Name": ENVIRONMENT}) == "3.0.6"


def test_without_an_environment_or_the_setting_there_is_no_version() -> None:
    with pytest.raises(deploy.DeployError, match="DEVICE_SYNC_MWAA_AIRFLOW_VERSION"):
        deploy.airflow_version(Settings(), None)


@pytest.mark.parametrize("value", ["3.3", "v3.3.1", "3.3.1rc1", "latest"])
def test_the_version_setting_is_validated(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("DEVICE_SYNC_MWAA_AIRFLOW_VERSION", value)
    with pytest.raises(ConfigError, match="DEVICE_SYNC_MWAA_AIRFLOW_VERSION"):
        load_settings()


def test_the_version_setting_is_read_from_the_stage_file_and_never_exported(tmp_path: Path) -> None:
    stage_file = tmp_path / "dev.env"
    stage_file.write_text("DEVICE_SYNC_MWAA_AIRFLOW_VERSION=3.2.1\nDEVICE_SYNC_RETRIES=3\n", encoding="utf-8")
    assert Settings(_env_file=stage_file).mwaa_airflow_version == "3.2.1"  # type: ignore[call-arg]
    startup = deploy.startup_sh("dev", stage_file).decode()
    assert "MWAA_AIRFLOW_VERSION" not in startup and "export DEVICE_SYNC_RETRIES=3" in startup


def test_the_command_refuses_without_a_version_before_any_aws_call(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 2 before the connection is even looked up: no S3 or MWAA call is made (no client exists)."""
    fake_wheel(tmp_path, project_metadata())
    monkeypatch.setenv("DEVICE_SYNC_DEPLOY_BUCKET", "device-sync-some-bucket")
    monkeypatch.setenv("DEVICE_SYNC_AWS_CONN_ID", "no_such_connection")  # looked up after the version check

    def no_client(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("no AWS client may be made")

    monkeypatch.setattr(deploy.metrics, "aws_client", no_client)
    assert deploy.main(["--stage", "dev", "--dist", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no Airflow version to write requirements.txt for" in err and "nothing was changed" in err


def test_the_package_deploys_every_dag_file_of_its_dags_folder(tmp_path: Path) -> None:
    found = sources(fake_wheel(tmp_path, project_metadata())).dag_files
    assert {path.name for path in found} == {path.name for path in (REPO / "dags").glob("*.py")}
    assert [a.key for a in deploy.dag_artifacts(sources(tmp_path / WHEEL))] == [f"dags/{p.name}" for p in found]


def test_a_wheel_of_another_version_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "device_sync-0.0.1-py3-none-any.whl"
    other.write_bytes(b"")
    with pytest.raises(deploy.DeployError, match="is not device_sync-"):
        deploy.check_wheel(other)
    with pytest.raises(deploy.DeployError, match="device-sync-deploy --wheel PATH"):
        deploy.wheel_path(tmp_path)


# --- the pool through the MWAA REST API ------------------------------------------------------------------------


@pytest.fixture
def mwaa() -> Iterator[tuple[Any, Stubber]]:
    # Explicit credentials: without them botocore would look for some (instance metadata) over the network.
    client = boto3.client("mwaa", region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def rest_error(stubber: Stubber, status: int, expected: dict[str, Any]) -> None:
    stubber.add_client_error(
        "invoke_rest_api",
        "RestApiClientException",
        "the Airflow REST API answered with an error",
        400,
        expected_params=expected,
        modeled_fields={"RestApiStatusCode": status, "RestApiResponse": {"detail": "..."}},
    )


PATCH = {"Name": ENVIRONMENT, "Method": "PATCH", "Path": "/pools/device_sync_db", "Body": deploy.pool_patch_body(6)}
POST = {"Name": ENVIRONMENT, "Method": "POST", "Path": "/pools", "Body": deploy.pool_post_body(6)}


def test_an_existing_pool_is_resized_with_one_patch(mwaa: tuple[Any, Stubber]) -> None:
    client, stubber = mwaa
    stubber.add_response("invoke_rest_api", {"RestApiStatusCode": 200, "RestApiResponse": {}}, PATCH)
    assert deploy.set_pool(client, ENVIRONMENT, 6) == "resized"


def test_a_missing_pool_patch_404_is_created_with_a_post(mwaa: tuple[Any, Stubber]) -> None:
    client, stubber = mwaa
    rest_error(stubber, 404, PATCH)
    stubber.add_response("invoke_rest_api", {"RestApiStatusCode": 201, "RestApiResponse": {}}, POST)
    assert deploy.set_pool(client, ENVIRONMENT, 6) == "created"


def test_another_rest_api_error_is_not_taken_for_a_missing_pool(mwaa: tuple[Any, Stubber]) -> None:
    client, stubber = mwaa
    rest_error(stubber, 403, PATCH)
    with pytest.raises(ClientError, match="RestApiClientException"):
        deploy.set_pool(client, ENVIRONMENT, 6)


def test_the_pool_bodies_are_what_airflows_rest_api_accepts() -> None:
    from airflow.api_fastapi.core_api.datamodels.pools import PoolBody, PoolPatchBody

    patch = PoolPatchBody.model_validate(deploy.pool_patch_body(6))
    assert (patch.slots, patch.description, patch.name) == (6, pool.DESCRIPTION, None)
    assert patch.model_fields_set == {"slots", "description"}  # PATCH changes only these
    post = PoolBody.model_validate(deploy.pool_post_body(6))
    assert (post.pool, post.slots, post.description, post.include_deferred) == (pool.NAME, 6, pool.DESCRIPTION, False)


def test_a_version_without_data_warns_that_the_check_was_skipped(tmp_path: Path) -> None:
    planned = deploy.plan_requirements("3.9.9", sources(fake_wheel(tmp_path, project_metadata())))
    out = io.StringIO()
    deploy._print_requirements_source(out, Settings(mwaa_airflow_version="3.9.9"), planned)
    assert "warning: resolution check skipped: no MWAA package set of Airflow 3.9.9" in out.getvalue()
