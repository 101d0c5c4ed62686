"""Amazon MWAA's own package sets (``make test-platforms``): what a deploy uploads, installed the way MWAA installs it.

For each Airflow version MWAA offers (3.3.1, 3.2.1, 3.0.6):

1. ``scripts/deploy.py --stage dev`` (the wheel of ``make dist``) uploads to a versioned bucket of a local moto
   server, with ``DEVICE_SYNC_MWAA_AIRFLOW_VERSION`` set to that version;
2. the uploaded ``plugins.zip`` is unpacked into a plugins folder, and the uploaded ``requirements.txt`` (its wheel
   path mapped from ``/usr/local/airflow/plugins`` to that folder) is installed into MWAA's package set for that
   version by ``../shared/platforms/mwaa-env.sh``, exactly as MWAA installs it (essential constraints, the
   file's own ``--constraint``);
3. a fresh ``AIRFLOW_HOME`` whose DAGs folder holds only the uploaded DAG files and whose plugins folder is the
   unpacked ``plugins.zip``: no import errors, the plugin listed, and plain ``airflow dags test`` runs against
   real PostgreSQL: the maintenance DAG applies the migrations, a sync with inserts, deletes and renames on a
   sparse fleet, a no-change run, a dry run, and the mass-delete guard.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest

from conftest import ADMIN_URL, REPO, SOURCE_DDL, psycopg_url_to_airflow_uri
from device_sync import deploy, resources
from source_data import add_devices, add_measurements, add_parameters, add_target, execute, query, target

VERSIONS = ("3.3.1", "3.2.1", "3.0.6")
PLATFORMS = Path(os.environ.get("DEVICE_SYNC_MWAA_PLATFORMS", REPO.parent / "shared" / "platforms"))
MWAA_PLUGINS_DIR = "/usr/local/airflow/plugins"
DAG_ID = "device_parameter_sync"
# Every command is bounded: an MWAA set installs in well under a minute from a warm package cache.
INSTALL_TIMEOUT = 540  # MWAA itself cuts a requirements install off after 9 minutes
COMMAND_TIMEOUT = 300

T = datetime(2026, 11, 30, 12, tzinfo=UTC)
INSIDE = T - timedelta(hours=1)
OUTSIDE = T - timedelta(days=3)  # before every run's 24 h window


def run(args: list[str], *, env: dict[str, str], cwd: Path, timeout: float = COMMAND_TIMEOUT, ok: bool = True) -> str:
    result = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    output = f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    assert (result.returncode == 0) == ok, f"{args} exited {result.returncode}:\n{output}"
    return result.stdout


def uv() -> str:
    found = shutil.which("uv") or str(REPO / ".tools" / "bin" / "uv")
    assert Path(found).exists(), "uv is missing: `make venv` installs it into .tools/"
    return found


# --- a sparse fleet: each device type reports 4 of the fleet's 60 parameters -------------------------------

PARAMETERS = [f"p{i:02d}" for i in range(60)]
DEVICES = [f"d{i:03d}" for i in range(40)]
INACTIVE = set(DEVICES[36:])


def reported(device: str) -> list[str]:
    kind = int(device[1:]) % 5
    return [PARAMETERS[(kind * 11 + 7 * k) % 60] for k in range(4)]


def expected_target() -> dict[tuple[str, str], tuple[str, str]]:
    return {(d, p): (f"Device {d}", f"Parameter {p}") for d in DEVICES if d not in INACTIVE for p in reported(d)}


def seed_fleet(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Sources (their tables empty) of 40 devices, 4 inactive. Returns the inserts, deletes and updates one
    applied run must make on :func:`seed_target`'s drifted table."""
    add_devices(conn, *[(d, f"Device {d}", d not in INACTIVE) for d in DEVICES])
    add_parameters(conn, *[(p, f"Parameter {p}") for p in PARAMETERS])
    add_measurements(
        conn,
        *[(d, p, INSIDE) for d in DEVICES for p in reported(d)],
        *[(d, "p59", OUTSIDE) for d in DEVICES[:12]],  # reported, but before the window
    )
    return {"inserts": 30, "deletes": 20, "updates": 9}


def seed_target(conn: psycopg.Connection[Any]) -> None:
    """30 pairs missing, 12 stale rows, 8 rows of inactive devices, 9 rows with an old device name."""
    wanted = sorted(expected_target().items())
    kept = wanted[30:]  # the first 30 pairs are missing
    renamed = {pair for pair, _ in kept[:9]}
    rows = [(d, "Old name" if (d, p) in renamed else dn, p, pn) for (d, p), (dn, pn) in kept]
    rows += [(d, f"Device {d}", "p59", "Parameter p59") for d in DEVICES[:12]]  # stale: outside the window
    rows += [(d, f"Device {d}", p, f"Parameter {p}") for d in sorted(INACTIVE) for p in reported(d)[:2]]
    add_target(conn, *rows)


def history(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return query(
        conn,
        "SELECT status, dry_run, applied, inserted, deleted, updated, guard FROM device_sync.run_history "
        "ORDER BY started_at",
    )


# --- fixtures --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run(["make", "-s", "dist", f"DIST={out}"], env=dict(os.environ), cwd=REPO)
    assert len(list(out.glob("device_sync-*.whl"))) == 1
    return out


@pytest.fixture(scope="session")
def s3(moto_server: str) -> Any:
    return boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")


def deployed(version: str, dist: Path, s3: Any, where: Path) -> dict[str, Path]:
    """``scripts/deploy.py --stage dev`` to a fresh versioned bucket; the uploaded objects downloaded."""
    bucket = f"device-sync-mwaa-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    env = {
        **os.environ,
        "DEVICE_SYNC_STAGE": "dev",
        "DEVICE_SYNC_DEPLOY_BUCKET": bucket,
        "DEVICE_SYNC_MWAA_AIRFLOW_VERSION": version,
    }
    env.pop("DEVICE_SYNC_MWAA_ENVIRONMENT", None)
    run([str(REPO / ".venv" / "bin" / "python"), "scripts/deploy.py", "--stage", "dev", "--dist", str(dist)],
        env=env, cwd=REPO)  # fmt: skip
    files: dict[str, Path] = {}
    for item in s3.list_objects_v2(Bucket=bucket)["Contents"]:
        path = where / item["Key"]
        path.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, item["Key"], str(path))
        files[item["Key"]] = path
    return files


@pytest.fixture(scope="module", params=VERSIONS)
def mwaa(
    request: pytest.FixtureRequest, dist: Path, s3: Any, moto_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """One MWAA environment as MWAA builds it, with what the deploy uploaded installed; an IoT database of its own."""
    version: str = request.param
    assert (PLATFORMS / "mwaa-env.sh").is_file(), (
        f"MWAA's package data is missing at {PLATFORMS} (set DEVICE_SYNC_MWAA_PLATFORMS to the shared/platforms folder)"
    )
    home = tmp_path_factory.mktemp(f"mwaa-{version}")
    files = deployed(version, dist, s3, home / "s3")
    requirements = files["requirements.txt"].read_text()
    plugins = home / "plugins"
    with zipfile.ZipFile(files["plugins.zip"]) as archive:
        archive.extractall(plugins)
    local_requirements = home / "requirements.txt"
    local_requirements.write_text(requirements.replace(MWAA_PLUGINS_DIR, str(plugins)))
    venv = home / "venv"
    run(["bash", str(PLATFORMS / "mwaa-env.sh"), version, str(venv), str(local_requirements)],
        env={**os.environ, "UV": uv(), "UV_PYTHON_DOWNLOADS": "never"}, cwd=home, timeout=INSTALL_TIMEOUT)  # fmt: skip
    dags = home / "dags"
    dags.mkdir()
    for key, path in files.items():
        if key.startswith("dags/"):
            shutil.copy(path, dags)
    name = f"device_sync_test_mwaa_{version.replace('.', '_')}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = psycopg.conninfo.make_conninfo(ADMIN_URL, dbname=name)
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(home),
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW_CONN_DEVICE_SYNC_POSTGRES": psycopg_url_to_airflow_uri(url),
        "AIRFLOW_CONN_DEVICE_SYNC_OWNER": psycopg_url_to_airflow_uri(url),
        "AIRFLOW_CONN_AWS_DEFAULT": os.environ["AIRFLOW_CONN_AWS_DEFAULT"],
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "DEVICE_SYNC_STAGE": "dev",
    }
    run([str(venv / "bin" / "airflow"), "db", "migrate"], env=env, cwd=home)
    try:
        with psycopg.connect(url) as conn:
            yield {"version": version, "venv": venv, "env": env, "home": home, "conn": conn,
                   "requirements": requirements, "plugins": plugins}  # fmt: skip
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def airflow(mwaa: dict[str, Any], *args: str, ok: bool = True) -> str:
    return run([str(mwaa["venv"] / "bin" / "airflow"), *args], env=mwaa["env"], cwd=mwaa["home"], ok=ok)


def dags_test(mwaa: dict[str, Any], dag_id: str, when: datetime, conf: dict[str, Any] | None = None, ok: bool = True):
    args = ["dags", "test", dag_id, when.isoformat()]
    if conf is not None:
        args += ["-c", json.dumps(conf)]
    return airflow(mwaa, *args, ok=ok)


# --- the checks, in order, on each environment ----------------------------------------------------------------


def test_the_packaged_constraints_are_the_shared_copies(mwaa: dict[str, Any]) -> None:
    """What the deploy checks offline (include/mwaa/<version>/) is MWAA's own data, byte for byte."""
    version = mwaa["version"]
    for name in ("airflow_constraints.txt", "mwaa_essential_constraints.txt"):
        assert (resources.INCLUDE / "mwaa" / version / name).read_bytes() == (
            PLATFORMS / f"mwaa-{version}" / name
        ).read_bytes()
    assert deploy.known_airflow_versions() == ["3.0.6", "3.2.1", "3.3.1"]


def test_the_uploaded_requirements_install_the_wheel_under_mwaas_constraints(mwaa: dict[str, Any]) -> None:
    version = mwaa["version"]
    lines = [line for line in mwaa["requirements"].splitlines() if line.strip() and not line.startswith("#")]
    assert lines[0] == (
        f"--constraint https://raw.githubusercontent.com/apache/airflow/constraints-{version}/constraints-3.12.txt"
    )
    wheel = next(path.name for path in mwaa["plugins"].glob("device_sync-*.whl"))
    assert f"{MWAA_PLUGINS_DIR}/{wheel}" in lines
    assert not any(line.lower().startswith("apache-airflow") for line in lines)
    probe = "import airflow, device_sync; print(airflow.__version__, device_sync.__file__)"
    out = run([str(mwaa["venv"] / "bin" / "python"), "-c", probe], env=mwaa["env"], cwd=mwaa["home"])
    installed_airflow, package = out.split()[-2:]
    assert installed_airflow == version  # MWAA's pin held: nothing upgraded Airflow
    assert "site-packages" in package  # the wheel, not a checkout


def test_no_import_errors_and_the_plugin_is_listed(mwaa: dict[str, Any]) -> None:
    errors = airflow(mwaa, "dags", "list-import-errors", "--local", "-o", "json")
    assert errors.strip().splitlines()[-1] in ("[]", "No data found"), errors
    dags = json.loads(airflow(mwaa, "dags", "list", "--local", "-o", "json").strip().splitlines()[-1])
    assert {dag["dag_id"] for dag in dags} >= {DAG_ID, "device_sync_maintenance"}
    plugins = json.loads(airflow(mwaa, "plugins", "-o", "json").strip().splitlines()[-1])
    assert "device_sync" in {plugin["name"] for plugin in plugins}


# The features each MWAA version lacks (device_sync.compat.FEATURES): human approval 3.3, deadlines 3.2, per-DAG
# access 3.1.
FEATURES_OFF = {"3.3.1": 0, "3.2.1": 1, "3.0.6": 3}


def test_the_dag_says_once_which_features_are_off_and_why(mwaa: dict[str, Any]) -> None:
    dag_file = mwaa["home"] / "dags" / "device_parameter_sync.py"
    probe = (
        "import logging, runpy; logging.basicConfig(level=logging.WARNING, format='%(message)s'); "
        f"dag = runpy.run_path({str(dag_file)!r})['device_parameter_sync_dag']; "
        "print('OFF-IN-DOC', dag.doc_md.count('**off**'))"
    )
    result = subprocess.run(
        [str(mwaa["venv"] / "bin" / "python"), "-c", probe],
        env=mwaa["env"], cwd=mwaa["home"], capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    expected = FEATURES_OFF[mwaa["version"]]
    assert f"OFF-IN-DOC {expected}" in result.stdout
    output = result.stdout + result.stderr  # Airflow's own logging may take the root logger's records
    said = {line[line.index("device-sync: ") :] for line in output.splitlines() if " is off on Airflow " in line}
    assert len(said) == expected, output[-3000:]
    if expected:
        assert any("Human approval of a mass delete" in line and "fails the run at once" in line for line in said)


def test_the_maintenance_dag_applies_the_migrations(mwaa: dict[str, Any]) -> None:
    conn = mwaa["conn"]
    execute(conn, SOURCE_DDL)
    dags_test(mwaa, "device_sync_maintenance", T, {"conn_id": "device_sync_owner"})
    ((version,),) = query(conn, "SELECT max(version) FROM device_sync.schema_version")
    out = run([str(mwaa["venv"] / "bin" / "device-sync-migrate"), "--check"], env=mwaa["env"], cwd=mwaa["home"])
    assert f"current at {version}" in out or f"version {version}" in out, out


def test_a_sync_inserts_deletes_and_renames_then_a_rerun_changes_nothing(mwaa: dict[str, Any]) -> None:
    conn = mwaa["conn"]
    changes = seed_fleet(conn)
    seed_target(conn)
    execute(conn, "TRUNCATE device_sync.run_history, device_sync.change_log")

    dags_test(mwaa, DAG_ID, T)
    assert target(conn) == expected_target()
    assert history(conn) == [("success", False, True, changes["inserts"], changes["deletes"], changes["updates"], None)]

    dags_test(mwaa, DAG_ID, T + timedelta(minutes=1))
    assert target(conn) == expected_target()
    assert history(conn)[-1] == ("success", False, True, 0, 0, 0, None)


def test_a_dry_run_changes_nothing(mwaa: dict[str, Any]) -> None:
    conn = mwaa["conn"]
    before = target(conn)
    add_measurements(conn, ("d000", "p58", T + timedelta(minutes=1)))
    dags_test(mwaa, DAG_ID, T + timedelta(minutes=2), {"dry_run": True})
    assert target(conn) == before
    assert history(conn)[-1] == ("success", True, False, 1, 0, 0, None)


def test_the_mass_delete_guard_fails_the_run_and_changes_nothing(mwaa: dict[str, Any]) -> None:
    conn = mwaa["conn"]
    before = target(conn)
    execute(conn, "UPDATE iot_data.redshift_devices SET status = false WHERE device_id < 'd030'")
    out = dags_test(mwaa, DAG_ID, T + timedelta(minutes=3), ok=False)
    assert target(conn) == before, out
    status, _, applied, _, _, _, guard = history(conn)[-1]
    ((error,),) = query(conn, "SELECT error FROM device_sync.run_history ORDER BY started_at DESC LIMIT 1")
    assert (status, applied, guard) == ("failed", False, "mass_delete"), (error, out[-3000:])
