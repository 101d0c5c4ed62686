"""The installable distribution, as a platform team uses it: ``make dist``, the wheel installed (not the source
tree) into a throwaway virtual environment with the pinned runtime requirements, and only the DAG file in a
DAGs folder of its own, run from a fresh directory with plain ``airflow`` commands against real PostgreSQL.

Also: the package finds its SQL and stage files through one lookup (``device_sync.resources``) in both layouts,
and the plugin is registered once when the wheel is installed and the checkout's plugins folder is present too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conftest import REPO, psycopg_url_to_airflow_uri
from device_sync import __version__, resources
from source_data import add_devices, add_measurements, add_parameters, target

T = datetime(2026, 11, 30, 12, tzinfo=UTC)
INSIDE = T - timedelta(hours=1)


def seed_three_devices(conn: psycopg.Connection[Any]) -> None:
    """Two active devices with three measured pairs and an inactive one (committed: a subprocess syncs)."""
    add_devices(conn, ("d1", "Device 1", True), ("d2", "Device 2", True), ("d3", "Off", False))
    add_parameters(conn, ("p1", "Temp"), ("p2", "Volt"))
    add_measurements(conn, ("d1", "p1", INSIDE), ("d1", "p2", INSIDE), ("d2", "p1", INSIDE), ("d3", "p1", INSIDE))
    conn.commit()


def assert_three_devices_synced(conn: psycopg.Connection[Any]) -> None:
    """What one applied run over :func:`seed_three_devices` leaves: the active devices' three pairs."""
    assert target(conn) == {
        ("d1", "p1"): ("Device 1", "Temp"),
        ("d1", "p2"): ("Device 1", "Volt"),
        ("d2", "p1"): ("Device 2", "Temp"),
    }
    with conn.transaction():
        rows = conn.execute("SELECT status, applied, inserted FROM device_sync.run_history").fetchall()
    assert rows == [("success", True, 3)]


def uv() -> str:
    found = shutil.which("uv") or str(REPO / ".tools" / "bin" / "uv")
    assert Path(found).exists(), "uv is missing: `make venv` installs it into .tools/"
    return found


def run(args: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300) -> str:
    result = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, (
        f"{args} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``make dist`` into a directory of its own: exactly one wheel, named from the package's version."""
    out = tmp_path_factory.mktemp("dist")
    run(["make", "-s", "dist", f"DIST={out}"], cwd=REPO)
    wheels = sorted(out.glob("*.whl"))
    assert [w.name for w in wheels] == [f"device_sync-{__version__}-py3-none-any.whl"]
    return wheels[0]


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway virtual environment with requirements.txt and the wheel (uv, from the package registry)."""
    venv = tmp_path_factory.mktemp("venv") / "venv"
    run([uv(), "venv", "--quiet", "--python", "3.11", str(venv)])
    run([uv(), "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), "-r",
         str(REPO / "requirements.txt"), str(wheel)])  # fmt: skip
    return venv


@pytest.fixture
def bare_airflow(
    installed: Path, database_url: str, moto_server: str, tmp_path: Path
) -> Iterator[tuple[Path, dict[str, str]]]:
    """A fresh working directory, a DAGs folder holding only the DAG file, an empty plugins folder, and an
    environment that knows nothing of this repository (no PYTHONPATH, no plugins/, no include/)."""
    work = tmp_path / "work"
    dags = tmp_path / "dags"
    for folder in (work, dags, tmp_path / "plugins"):
        folder.mkdir()
    shutil.copy(REPO / "dags" / "device_parameter_sync.py", dags)
    env = {
        "PATH": f"{installed / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(tmp_path / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path}/airflow.db",
        "AIRFLOW_CONN_DEVICE_SYNC_POSTGRES": psycopg_url_to_airflow_uri(database_url),
        "AIRFLOW_CONN_AWS_DEFAULT": os.environ["AIRFLOW_CONN_AWS_DEFAULT"],
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    run([str(installed / "bin" / "airflow"), "db", "migrate"], env=env, cwd=work)
    yield work, env


def airflow(venv: Path, *args: str, env: dict[str, str], cwd: Path) -> str:
    return run([str(venv / "bin" / "airflow"), *args], env=env, cwd=cwd)


def test_the_wheel_carries_the_package_its_sql_stage_files_and_the_plugin_entry_point(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = archive.read(f"device_sync-{__version__}.dist-info/entry_points.txt").decode()
    sql_files = {p.relative_to(REPO / "include").as_posix() for p in (REPO / "include" / "sql").rglob("*.sql")}
    assert {f"device_sync/include/{name}" for name in sql_files} <= names
    assert {"device_sync/include/config/dev.env", "device_sync/include/config/prod.env"} <= names
    assert {"device_sync/__init__.py", "device_sync/plugin.py", "device_sync/resources.py"} <= names
    assert not any(name.startswith(("plugins/", "include/", "dags/", "tests/")) for name in names)
    assert "[airflow.plugins]\ndevice_sync = device_sync.plugin:DeviceSyncPlugin" in entry_points


def test_make_dist_is_reproducible(wheel: Path, tmp_path: Path) -> None:
    """The same sources give the same bytes (a deploy can then skip what did not change)."""
    run(["make", "-s", "dist", f"DIST={tmp_path}"], cwd=REPO)
    assert (tmp_path / wheel.name).read_bytes() == wheel.read_bytes()


def test_in_the_checkout_the_package_data_is_the_top_level_include_folder() -> None:
    assert resources.stage_file("dev").resolve() == REPO / "include" / "config" / "dev.env"
    expected = (REPO / "include" / "sql" / "device_parameter_sync" / "steps" / "changes.sql").read_text(
        encoding="utf-8"
    )
    assert resources.sql_text("device_parameter_sync/steps/changes.sql") == expected


def test_installed_the_package_data_comes_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    probe = (
        "import device_sync, json; from device_sync import resources, db; "
        "print(json.dumps([device_sync.__file__, str(resources.stage_file('prod')), "
        "db.load_sql('device_parameter_sync/steps/changes.sql')]))"
    )
    out = run([str(installed / "bin" / "python"), "-c", probe], env={"PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    package, stage_file, changes = json.loads(out)
    site = str(installed / "lib")
    assert package.startswith(site) and stage_file.startswith(site)
    assert Path(stage_file).read_text(encoding="utf-8") == (REPO / "include/config/prod.env").read_text(
        encoding="utf-8"
    )
    assert changes == (REPO / "include/sql/device_parameter_sync/steps/changes.sql").read_text(encoding="utf-8")


def test_a_bare_dags_folder_with_the_wheel_installed_syncs_and_lists_the_plugin(
    installed: Path, bare_airflow: tuple[Path, dict[str, str]], conn: psycopg.Connection[Any]
) -> None:
    work, env = bare_airflow
    seed_three_devices(conn)

    plugins = json.loads(airflow(installed, "plugins", "-o", "json", env=env, cwd=work))
    ((plugin,),) = [[p for p in plugins if p["name"] == "device_sync"]]
    assert "device-sync==" in plugin["source"] and "EntryPoint" in plugin["source"]
    assert plugin["fastapi_apps"][0]["url_prefix"] == "/device-sync"
    # --local: parse the DAGs folder here and now (without it the command reads the dag-processor's records).
    errors = airflow(installed, "dags", "list-import-errors", "--local", "-o", "json", env=env, cwd=work)
    assert errors.strip().splitlines()[-1] in ("[]", "No data found"), errors
    dags = airflow(installed, "dags", "list", "--local", "-o", "json", env=env, cwd=work)
    assert "device_parameter_sync" in {dag["dag_id"] for dag in json.loads(dags.strip().splitlines()[-1])}

    airflow(installed, "dags", "test", "device_parameter_sync", T.isoformat(), env=env, cwd=work)

    assert_three_devices_synced(conn)


def test_wheel_and_checkout_plugins_folder_together_register_the_plugin_once(installed: Path, tmp_path: Path) -> None:
    probe = (
        "import json; from airflow import plugins_manager as pm; plugins, errors = pm._get_plugins(); "
        "print(json.dumps([[p.name for p in plugins], errors]))"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    out = run([str(installed / "bin" / "python"), "-c", probe], env=env, cwd=tmp_path)
    names, errors = json.loads(out.strip().splitlines()[-1])
    assert names.count("device_sync") == 1
    assert errors == {}


def test_the_deploy_console_script_works_where_only_the_wheel_is_installed(
    installed: Path, wheel: Path, moto_server: str, tmp_path: Path
) -> None:
    """``device-sync-deploy --dry-run`` from the wheel's virtual environment, in a directory that knows nothing of
    the checkout: its DAG files, stage file and MWAA constraints are the wheel's package data."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    bucket = f"device-sync-wheel-{os.getpid()}-{tmp_path.name[-8:].lower().replace('_', '-')}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    env = {
        "PATH": f"{installed / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW_CONN_AWS_DEFAULT": os.environ["AIRFLOW_CONN_AWS_DEFAULT"],
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "DEVICE_SYNC_DEPLOY_BUCKET": bucket,
        "DEVICE_SYNC_MWAA_AIRFLOW_VERSION": "3.0.6",
    }
    command = [str(installed / "bin" / "device-sync-deploy"), "--stage", "dev", "--wheel", str(wheel), "--dry-run"]
    out = run(command, env=env, cwd=tmp_path)

    assert "dry run: nothing was changed" in out
    for dag in sorted((REPO / "dags").glob("*.py")):
        assert f"dags/{dag.name}" in out
    assert (
        "    --constraint https://raw.githubusercontent.com/apache/airflow/constraints-3.0.6/constraints-3.12.txt\n"
        in out
    )
    assert f"    /usr/local/airflow/plugins/{wheel.name}\n" in out
    assert "resolution check: every dependency of the wheel agrees with MWAA 3.0.6's constraints" in out
    assert "    psycopg[binary]==" in out and "    pydantic-settings==" in out
    assert s3.list_object_versions(Bucket=bucket).get("Versions", []) == []
    assert "--database-url" in run([str(installed / "bin" / "device-sync-migrate"), "--help"], env=env, cwd=tmp_path)
