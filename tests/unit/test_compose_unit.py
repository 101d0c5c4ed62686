"""The Docker Compose deployment, checked without a Docker engine.

``docker-compose.yaml`` is validated against the Compose Specification's JSON schema (check-jsonschema's
vendored copy, offline) and cross-checked with what it must agree with: ``deploy/README.md`` (its tables of
services, ports, mounts and variables), ``deploy/compose.env.example`` (every ``${VAR}``), the package's
settings (``Settings.model_fields``) and pool (``device_sync.pool``), ``Dockerfile`` and ``requirements.txt``
(one Airflow version), the demo fleet's SQL, the repository's files (every mounted host path) and the override
file of the compose test (``tests/compose/compose.test.yaml``). Nothing here starts a container: the stack runs
for real in ``tests/compose`` (``make test-compose``).
"""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from conftest import REPO
from device_sync import pool, resources
from device_sync.config import STAGES, Settings
from device_sync.demo import load_demo_fleet

COMPOSE_FILE = REPO / "docker-compose.yaml"
DOCKERFILE = REPO / "Dockerfile"
ENV_EXAMPLE = REPO / "deploy" / "compose.env.example"
DEPLOY_README = REPO / "deploy" / "README.md"
DEMO_WRAPPER = REPO / "deploy" / "initdb" / "10-device-sync-demo-fleet.sql"
DEMO_SQL = REPO / "include" / "sql" / "demo" / "load_demo_fleet.sql"
TEST_OVERRIDE = REPO / "tests" / "compose" / "compose.test.yaml"
CHECK_JSONSCHEMA = Path(sys.executable).with_name("check-jsonschema")

AIRFLOW_SERVICES = (
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "flower",
)
OFFICIAL_BASE_IMAGE = re.compile(r"apache/airflow:(?P<airflow>\d+\.\d+\.\d+)-python(?P<python>\d+\.\d+)")
ONE_OFF_SERVICES = {"airflow-init"}
AIRFLOW_HOME = "/opt/airflow"
EMPTY_CELL = "\N{EN DASH}"  # what deploy/README.md writes in a table cell that has nothing
# Variables Compose reads itself rather than interpolating into the file.
COMPOSE_CLI_VARIABLES = {"COMPOSE_PROFILES"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|TOKEN|PRIVATE_KEY")
# ``$$`` is an escaped dollar; ``${NAME...}`` an interpolation; anything else after a ``$`` is suspicious.
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<modifier>[^}]*)\}")


# --- helpers ---------------------------------------------------------------------------------------------
def load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def strings(node: Any) -> list[str]:
    """Every string in a YAML document: mapping keys and values, list items."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [text for key, value in node.items() for text in strings(key) + strings(value)]
    if isinstance(node, list):
        return [text for item in node for text in strings(item)]
    return []


def interpolations(compose: dict[str, Any]) -> list[re.Match[str]]:
    return [match for text in strings(compose) for match in INTERPOLATION.finditer(text.replace("$$", ""))]


def referenced(value: str) -> list[str]:
    """The names of the variables interpolated into a value."""
    return [match["name"] for match in INTERPOLATION.finditer(value.replace("$$", ""))]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(key): str(value) for key, value in env.items()}


def parse_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a Compose env file; quotes around a value are removed."""
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, separator, value = line.partition("=")
        assert separator, f"{path.name}: not a KEY=VALUE line: {line!r}"
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        assert key not in values, f"{path.name}: {key} is set twice"
        values[key] = value
    return values


def markdown_table(text: str, heading: str) -> list[dict[str, str]]:
    """The first table under ``heading`` (before the next heading), as one dict per row."""
    lines = text.splitlines()
    assert heading in lines, f"deploy/README.md has no heading {heading!r}"
    table: list[str] = []
    for line in lines[lines.index(heading) + 1 :]:
        if line.startswith("#"):
            break
        if line.startswith("|"):
            table.append(line)
        elif table:
            break
    assert len(table) > 2, f"no table under {heading!r}"

    def cells(row: str) -> list[str]:
        return [cell.strip() for cell in row.strip().strip("|").split("|")]

    header = cells(table[0])
    rows = [dict(zip(header, cells(row), strict=True)) for row in table[2:]]
    return rows


def quoted(cell: str) -> list[str]:
    """The `code` spans of a table cell."""
    return re.findall(r"`([^`]+)`", cell)


@pytest.fixture(scope="module")
def readme() -> str:
    return DEPLOY_README.read_text(encoding="utf-8")


def bind_source(volume: str) -> str | None:
    source = volume.split(":", 1)[0]
    return source if source.startswith((".", "/")) else None


def container_path(volume: str) -> str:
    return volume.split(":")[1]


# --- the Compose Specification --------------------------------------------------------------------------
def run_schema_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_compose_file_is_valid_against_the_compose_specification_schema() -> None:
    result = run_schema_check(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_rejects_an_invalid_compose_file(tmp_path: Path) -> None:
    """The check above is not vacuous: the same command fails on a file that breaks the specification."""
    broken = load_compose()
    broken["services"]["postgres"]["restart_policy"] = "always"
    path = tmp_path / "docker-compose.yaml"
    path.write_text(yaml.safe_dump(broken), encoding="utf-8")
    result = run_schema_check(path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "restart_policy" in result.stdout + result.stderr


# --- structure -------------------------------------------------------------------------------------------
def test_stack_follows_the_official_airflow_3_layout_with_the_celery_executor(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    assert set(AIRFLOW_SERVICES) | {"postgres", "redis"} <= set(services)
    common = compose["x-airflow-common"]
    commands = {"airflow-apiserver": "api-server", "airflow-scheduler": "scheduler"}
    commands |= {"airflow-dag-processor": "dag-processor", "airflow-triggerer": "triggerer"}
    commands |= {"airflow-worker": "celery worker", "flower": "celery flower"}
    for name in AIRFLOW_SERVICES:
        service = services[name]
        # Built from the anchor: same image, build, mounts and (at least) the same environment.
        for key in ("build", "image", "volumes"):
            assert service[key] == common[key], f"{name}.{key} differs from x-airflow-common"
        assert environment(common).items() <= environment(service).items(), name
        if name in commands:
            assert service["command"] == commands[name]
        if name != "airflow-init":  # like the official file: every Airflow service waits for both
            for dependency in ("postgres", "redis"):
                assert service["depends_on"][dependency] == {"condition": "service_healthy"}, (name, dependency)
    env = environment(common)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    text = "\n".join(strings(compose)).lower()
    assert "_pip_additional_requirements" not in text
    # Tasks (in the workers) reach the api-server's execution API by its service name and container port.
    url = urlsplit(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert (url.hostname, url.path) == ("airflow-apiserver", "/execution/")
    assert [port.rsplit(":", 1)[1] for port in services["airflow-apiserver"]["ports"]] == [str(url.port)]
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"].startswith("${AIRFLOW_JWT_SECRET:?")
    metadata_db = urlsplit(INTERPOLATION.sub("REF", env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]))
    postgres_env = environment(services["postgres"])
    assert (metadata_db.hostname, metadata_db.username, metadata_db.path) == (
        "postgres",
        postgres_env["POSTGRES_USER"],
        f"/{postgres_env['POSTGRES_DB']}",
    )
    assert referenced(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]) == referenced(postgres_env["POSTGRES_PASSWORD"])
    # Celery: the broker is the redis service; results go to the metadata database (same login), as in the
    # official file.
    broker = urlsplit(env["AIRFLOW__CELERY__BROKER_URL"])
    assert (broker.scheme, broker.hostname, broker.port) == ("redis", "redis", 6379)
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert "ports" not in services["redis"], "the broker has no login: it must not be published"
    backend = env["AIRFLOW__CELERY__RESULT_BACKEND"]
    assert backend.startswith("db+postgresql://")
    result_db = urlsplit(INTERPOLATION.sub("REF", backend.removeprefix("db+")))
    assert (result_db.hostname, result_db.username, result_db.path) == (
        metadata_db.hostname,
        metadata_db.username,
        metadata_db.path,
    )
    assert referenced(backend) == referenced(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    # Workers scale (`--scale airflow-worker=N`): no fixed container name; checked by a Celery ping of their own
    # node, and they wait for the api-server whose execution API their tasks call.
    worker = services["airflow-worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert "inspect ping" in worker["healthcheck"]["test"][-1] and "celery@" in worker["healthcheck"]["test"][-1]
    assert worker["depends_on"]["airflow-apiserver"] == {"condition": "service_healthy"}
    assert not [name for name, service in services.items() if "container_name" in service]
    # Flower only in its profile, on the loopback interface (it has no login).
    assert services["flower"]["profiles"] == ["flower"]
    assert all(port.startswith("127.0.0.1:") for port in services["flower"]["ports"])
    # airflow-init migrates the database and runs once, as root to prepare the shared volumes.
    init = services["airflow-init"]
    assert "airflow db migrate" in init["command"][-1]
    assert init["user"] == "0:0" and "restart" not in init


def test_airflow_init_creates_the_pool_of_the_package_with_the_configured_slots(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    """The pool the DAG's database tasks run in (device_sync.pool) is created or resized by airflow-init
    (idempotent: `airflow pools set`) with DEVICE_SYNC_DB_POOL_SLOTS, whose default is the package's."""
    env = environment(compose["x-airflow-common"])
    default = Settings.model_fields["db_pool_slots"].default
    assert env["DEVICE_SYNC_DB_POOL_SLOTS"] == f"${{DEVICE_SYNC_DB_POOL_SLOTS:-{default}}}"
    script = services["airflow-init"]["command"][-1]
    command = pool.create_command(0)
    expected = f'/entrypoint {" ".join(command[:4])} "$${{DEVICE_SYNC_DB_POOL_SLOTS}}" "{command[5]}"'
    assert expected in script.splitlines(), script
    # After the migration (the pool table must exist).
    assert script.index("airflow db migrate") < script.index("airflow pools set")


def test_depends_on_targets_exist_and_can_satisfy_their_condition(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        depends_on = service.get("depends_on") or {}
        targets = depends_on if isinstance(depends_on, dict) else {key: {} for key in depends_on}
        for target, options in targets.items():
            assert target in services, f"{name} depends on {target}, which is not a service"
            condition = (options or {}).get("condition", "service_started")
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target} to be healthy: no healthcheck"
            elif condition == "service_completed_successfully":
                assert target in ONE_OFF_SERVICES and "restart" not in services[target], (name, target)
            # A service that always starts must not need one that only starts in a profile.
            if not service.get("profiles"):
                assert not services[target].get("profiles"), f"{name} depends on {target} of a profile"


def test_every_long_running_service_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if name in ONE_OFF_SERVICES:
            continue
        check = service.get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL") and len(check["test"]) > 1, name
        assert service.get("restart") == "always", name


# --- agreement with deploy/README.md ---------------------------------------------------------------------
def test_services_ports_and_mounts_agree_with_deploy_readme(
    compose: dict[str, Any], services: dict[str, dict[str, Any]], readme: str
) -> None:
    airflow_mounts = [quoted(row["mount"])[0] for row in markdown_table(readme, "### Airflow mounts")]
    assert airflow_mounts == compose["x-airflow-common"]["volumes"]
    rows = {quoted(row["service"])[0]: row for row in markdown_table(readme, "### Services")}
    assert set(rows) == set(services)
    for name, row in rows.items():
        service = services[name]
        assert quoted(row["image"])[0] == service["image"], name
        assert quoted(row["published ports"]) == [str(port) for port in service.get("ports", [])], name
        expected = airflow_mounts if row["mounts"] == "Airflow mounts" else quoted(row["mounts"])
        assert expected == service.get("volumes", []), name
        assert quoted(row["profile"]) == service.get("profiles", []), name


def test_airflow_environment_agrees_with_deploy_readme(compose: dict[str, Any], readme: str) -> None:
    env = environment(compose["x-airflow-common"])
    rows = {
        quoted(row["variable"])[0]: row["value"]
        for row in markdown_table(readme, "### Environment of every Airflow service")
    }
    assert set(rows) == set(env)
    for name, value in env.items():
        if referenced(value):  # the README names the env-file variables the value is made of
            assert set(referenced(value)) <= set(quoted(rows[name])), name
        else:  # a fixed value is written as it is
            assert quoted(rows[name]) == [value], name


def test_env_file_variables_agree_with_compose_and_deploy_readme(compose: dict[str, Any], readme: str) -> None:
    example = parse_env_file(ENV_EXAMPLE)
    matches = interpolations(compose)
    used = {match["name"] for match in matches}
    assert used <= set(example), f"not in deploy/compose.env.example: {sorted(used - set(example))}"
    assert set(example) - used == COMPOSE_CLI_VARIABLES, "variables of the env file that compose never uses"
    # Every interpolation is required (Compose refuses to start while the variable is unset or empty) or has
    # a default, which the example file repeats.
    for match in matches:
        modifier = match["modifier"]
        assert modifier.startswith((":?", ":-")) and len(modifier) > 2, match[0]
        if modifier.startswith(":-"):
            assert example[match["name"]] == modifier[2:], f"{match['name']}: the example differs from the default"
            assert not SECRET_NAME.search(match["name"]), f"{match['name']}: a secret has no default"
    # No bare $VAR or stray $: only escaped $$ and ${...}.
    for text in strings(compose):
        assert "$" not in INTERPOLATION.sub("", text.replace("$$", "")), text
    rows = {quoted(row["variable"])[0]: row for row in markdown_table(readme, "### The env file")}
    assert set(rows) == set(example)
    for name, row in rows.items():
        secret = row["secret"] == "yes"
        assert secret == bool(SECRET_NAME.search(name)), f"{name}: secret column"
        if secret:  # nothing secret is committed: the example leaves it empty
            assert example[name] == "", f"{name} has a value in deploy/compose.env.example"
            assert row["example value"] == EMPTY_CELL, name
        else:
            assert example[name], f"{name} is empty in deploy/compose.env.example"
            if quoted(row["example value"]) and name != "AIRFLOW_CONN_AWS_DEFAULT":
                assert quoted(row["example value"]) == [example[name]], name


def test_device_sync_variables_are_settings_of_the_package(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    example = parse_env_file(ENV_EXAMPLE)
    names = {key for service in services.values() for key in environment(service)} | set(example)
    device_sync = sorted(name for name in names if name.startswith("DEVICE_SYNC_"))
    assert device_sync, "the compose stack sets no DEVICE_SYNC_* variable"
    for name in device_sync:
        assert name.removeprefix("DEVICE_SYNC_").lower() in Settings.model_fields, f"{name} is not a setting"
    assert example["DEVICE_SYNC_STAGE"] in STAGES
    assert resources.stage_file(example["DEVICE_SYNC_STAGE"]).is_file()
    # The connection ids the DAG uses are the connections the stack defines.
    env = environment(compose["x-airflow-common"])
    for setting in ("DEVICE_SYNC_POSTGRES_CONN_ID", "DEVICE_SYNC_AWS_CONN_ID"):
        assert f"AIRFLOW_CONN_{env[setting].upper()}" in env, setting


def test_dev_connections_point_at_the_bundled_services(services: dict[str, dict[str, Any]]) -> None:
    example = parse_env_file(ENV_EXAMPLE)
    assert example["COMPOSE_PROFILES"] == "dev"
    assert services["iot-db"]["profiles"] == ["dev"] and services["moto"]["profiles"] == ["dev"]
    # The IoT database: the service name and its container port.
    assert example["IOT_DB_HOST"] == "iot-db"
    assert any(port.endswith(f":{example['IOT_DB_PORT']}") for port in services["iot-db"]["ports"])
    # CloudWatch: moto, reached by its service name on its container port 5000.
    connection = json.loads(example["AIRFLOW_CONN_AWS_DEFAULT"])
    assert connection["conn_type"] == "aws"
    endpoint = urlsplit(connection["extra"]["endpoint_url"])
    assert endpoint.hostname == "moto"
    assert any(port.endswith(f":{endpoint.port}") for port in services["moto"]["ports"])
    # The moto image is the moto version the tests run against.
    moto_pin = re.search(r"^moto==(\S+)$", (REPO / "requirements-dev.txt").read_text(), re.MULTILINE)
    assert moto_pin and services["moto"]["image"] == f"motoserver/moto:{moto_pin[1]}"


# --- image, mounts, seed ---------------------------------------------------------------------------------
def test_dockerfile_pins_the_airflow_of_requirements_and_installs_them(compose: dict[str, Any]) -> None:
    dockerfile = DOCKERFILE.read_text(encoding="utf-8")
    requirements = (REPO / "requirements.txt").read_text(encoding="utf-8")
    bases = re.findall(r"^FROM\s+(\S+)", dockerfile, re.MULTILINE)
    assert bases == ["${AIRFLOW_BASE_IMAGE}"]
    # The base is a build argument whose default is the official image; compose passes the same default.
    default = re.search(r"^ARG AIRFLOW_BASE_IMAGE=(\S+)$", dockerfile, re.MULTILINE)
    assert default, "Dockerfile has no ARG AIRFLOW_BASE_IMAGE=<official image>"
    base = OFFICIAL_BASE_IMAGE.fullmatch(default[1])
    assert base, default[1]
    build_arg = compose["x-airflow-common"]["build"]["args"]["AIRFLOW_BASE_IMAGE"]
    assert build_arg == f"${{AIRFLOW_BASE_IMAGE:-{default[1]}}}"
    pinned = re.search(r"^apache-airflow==(\S+)$", requirements, re.MULTILINE)
    assert pinned and base["airflow"] == pinned[1]
    compiled_for = re.search(r"--python(?:-version)? (\d+\.\d+)", requirements)
    assert compiled_for and base["python"] == compiled_for[1]
    copied = re.search(r"^COPY\s+requirements\.txt\s+(\S+)$", dockerfile, re.MULTILINE)
    assert copied, "Dockerfile does not copy requirements.txt"
    # The image installs the wheel of `make dist` (the artifact MWAA users deploy), never copied package folders.
    dist = re.search(r"^COPY\s+dist/\s+(\S+?)/?$", dockerfile, re.MULTILINE)
    assert dist, "Dockerfile does not copy the dist/ of make dist"
    installs = re.search(r"^RUN pip install (.*)$", dockerfile, re.MULTILINE)
    assert installs
    assert f"{dist[1]}/device_sync-*.whl" in installs[1] and f"-r {copied[1]}" in installs[1]
    assert not re.search(r"^COPY\s+(?:--\S+\s+)*(plugins|include)/", dockerfile, re.MULTILINE)
    assert "dist" not in (REPO / ".dockerignore").read_text(encoding="utf-8").split()
    # The image compose builds is this Dockerfile, tagged with the same Airflow version.
    common = compose["x-airflow-common"]
    assert {key: value for key, value in common["build"].items() if key != "args"} == {
        "context": ".",
        "dockerfile": "Dockerfile",
    }
    assert set(common["build"]["args"]) == {"AIRFLOW_BASE_IMAGE"}
    assert common["image"].endswith(f":{pinned[1]}")
    # The DAG file copied into the image lands where compose mounts the working copy's dags/.
    copies = dict(re.findall(r"^COPY\s+(?:--\S+\s+)*(\w+)/\s+(\S+?)/?$", dockerfile, re.MULTILINE))
    copies.pop("dist")
    mounts = {bind_source(v): container_path(v) for v in common["volumes"] if bind_source(v)}
    assert {f"./{source}": target for source, target in copies.items()} == mounts


def test_compose_test_override_swaps_only_images_and_settings(services: dict[str, dict[str, Any]]) -> None:
    """tests/compose/compose.test.yaml, the override the compose test runs the stack with, names only services
    of docker-compose.yaml and gives each of them an image the test builds locally (no image registry is
    reachable there); besides images it sets only Airflow and device-sync settings, so what runs is the
    user-facing file."""
    override = yaml.safe_load(TEST_OVERRIDE.read_text(encoding="utf-8"))
    assert set(override) == {"services"}
    assert set(override["services"]) == set(services), "every service needs a locally built image in the test"
    for name, service in override["services"].items():
        assert set(service) <= {"image", "environment"}, f"{name}: the override changes more than images"
        names = referenced(service["image"])
        assert names and all(var.startswith("TEST_") for var in names), f"{name}: image {service['image']}"
        for key in environment(service):
            assert key.startswith(("AIRFLOW__", "DEVICE_SYNC_")), f"{name}: {key}"
            if key.startswith("DEVICE_SYNC_"):
                assert key.removeprefix("DEVICE_SYNC_").lower() in Settings.model_fields, f"{name}: {key}"


def test_mounted_host_paths_exist_and_only_dags_is_mounted_into_airflow(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    named = set(compose.get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = bind_source(volume)
            if source is None:
                assert volume.split(":", 1)[0] in named, f"{name}: volume {volume} is not declared"
            else:
                assert not source.startswith("/"), f"{name}: {source} is outside the repository"
                assert (REPO / source).exists(), f"{name}: {source} does not exist"
    mounts = {bind_source(v): container_path(v) for v in compose["x-airflow-common"]["volumes"] if bind_source(v)}
    # The package, its SQL and stage files come from the wheel installed in the image.
    assert mounts == {"./dags": f"{AIRFLOW_HOME}/dags"}


def test_demo_seed_sets_every_demo_setting_and_loads_the_mounted_fleet_sql(services: dict[str, dict[str, Any]]) -> None:
    wrapper = DEMO_WRAPPER.read_text(encoding="utf-8")
    wanted = set(re.findall(r"current_setting\('device_sync_demo\.(\w+)'\)", DEMO_SQL.read_text(encoding="utf-8")))
    settings = {
        name: value.strip("'")
        for name, value in re.findall(r"set_config\('device_sync_demo\.(\w+)',\s*(.+?),\s*false\)", wrapper)
    }
    assert set(settings) == wanted
    # The same fleet as `make demo`: the defaults of device_sync.demo.load_demo_fleet.
    defaults = {
        name: str(parameter.default)
        for name, parameter in inspect.signature(load_demo_fleet).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    assert {name: value for name, value in settings.items() if name != "window_end"} == defaults
    mounts = {container_path(v): v.split(":", 1)[0] for v in services["iot-db"]["volumes"]}
    included = re.findall(r"^\\i\s+(\S+)$", wrapper, re.MULTILINE)
    assert included and all(mounts.get(path) == "./include/sql/demo/load_demo_fleet.sql" for path in included)
    # The wrapper is mounted as one file, so the image's own init scripts (timescaledb) stay in place.
    entrypoint_dir = "/docker-entrypoint-initdb.d"
    assert entrypoint_dir not in mounts
    assert mounts[f"{entrypoint_dir}/{DEMO_WRAPPER.name}"] == f"./{DEMO_WRAPPER.relative_to(REPO)}"


def test_gitignore_keeps_the_filled_in_env_file_out_of_git() -> None:
    assert ".env" in (REPO / ".gitignore").read_text(encoding="utf-8").splitlines()


# --- no secrets ------------------------------------------------------------------------------------------
def test_compose_file_contains_no_literal_secret(services: dict[str, dict[str, Any]]) -> None:
    required_reference = re.compile(r"\$\{[A-Z][A-Z0-9_]*:\?[^}]+\}")
    for name, service in services.items():
        for key, value in environment(service).items():
            if SECRET_NAME.search(key) and not key.endswith("_FILE"):
                assert required_reference.fullmatch(value), f"{name}: {key} is not a required ${{...}} reference"
    for text in strings(load_compose()):
        for url in re.findall(r"[a-z0-9+]+://\S+", INTERPOLATION.sub("REF", text.replace("$$", ""))):
            assert urlsplit(url).password in (None, "REF"), f"a literal password in {url!r}"
        assert not re.search(r"\"(password|secret|aws_secret_access_key)\"\s*:\s*\"[^$]", text, re.IGNORECASE), text
        assert not re.search(r"AKIA[0-9A-Z]{16}|-----BEGIN", text), "an AWS key or a private key"
