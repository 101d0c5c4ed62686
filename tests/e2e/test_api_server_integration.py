"""The operators' HTTP surface against a real ``airflow api-server`` (with scheduler and dag-processor) and
real PostgreSQL: the plugin's health, runs, changes and status page, its authentication, and manual
triggers through Airflow's REST API with the DAG's params."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from stack_helpers import set_paused

from conftest import ADMIN_URL
from device_sync import api, sync
from device_sync.config import load_settings
from device_sync.demo import load_demo_fleet
from device_sync.history import mark_run_failed
from device_sync.staging import StagingTables
from device_sync.window import Window

DAG_ID = "device_parameter_sync"


@pytest.fixture(scope="module")
def stack(airflow_stack: Any) -> Any:
    return airflow_stack


@pytest.fixture(scope="module")
def admin_token(stack: Any) -> str:
    return str(stack.token("admin"))


@pytest.fixture
def data(stack: Any) -> Iterator[psycopg.Connection[Any]]:
    """The stack's IoT database with a fresh demo fleet ending at the current minute, and no history."""
    with psycopg.connect(stack.data_url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS device_sync CASCADE")
        load_demo_fleet(
            conn, datetime.now(UTC).replace(second=0, microsecond=0), devices=40, parameters=20, per_device=5
        )
        yield conn


def run_sync(conn: psycopg.Connection[Any], run_id: str) -> dict[str, Any]:
    settings = load_settings()
    staging = StagingTables.for_run(settings.staging_schema, DAG_ID, run_id)
    window = Window.ending_at(datetime.now(UTC), settings.lookback_minutes)
    return sync.sync_once(conn, settings, staging, window, run_id=run_id)


# --- health ----------------------------------------------------------------------------------------------


def health(stack: Any) -> tuple[int, Any]:
    """GET /health once the api-server's cached answer (HEALTH_CACHE_SECONDS) has expired."""
    time.sleep(api.HEALTH_CACHE_SECONDS + 0.5)
    return stack.request("GET", "/device-sync/health")


def test_health_is_503_before_any_sync(stack: Any, data: psycopg.Connection[Any]) -> None:
    status, body = health(stack)
    assert status == 503
    assert body["status"] == "unhealthy"
    assert "no sync has run yet" in body["reason"]


def test_health_is_200_after_a_successful_sync(stack: Any, data: psycopg.Connection[Any]) -> None:
    run_sync(data, "healthy-run")
    status, body = health(stack)
    assert status == 200, body
    assert body["status"] == "healthy"
    assert 0 <= body["age_seconds"] < 120
    assert body["missed_runs"] <= 1 and body["missed_runs_limit"] == 3  # three hourly fire times by default
    assert body["window_end"] > body["window_start"]
    assert set(body) == {
        "status",
        "checked_at",
        "last_run_finished_at",
        "last_successful_sync",
        "age_seconds",
        "window_start",
        "window_end",
        "missed_runs",
        "missed_runs_limit",
    }


def test_health_is_503_when_the_last_applied_sync_is_stale(stack: Any, data: psycopg.Connection[Any]) -> None:
    run_sync(data, "old-run")
    data.execute("UPDATE device_sync.run_history SET started_at = now() - interval '4 hours', "
                 "finished_at = now() - interval '4 hours'")  # fmt: skip
    status, body = health(stack)
    assert status == 503
    assert body["reason"] == "stale: 3 scheduled runs since the last applied sync"
    assert body["age_seconds"] > 3 * 3600 and body["missed_runs"] == 3


def test_health_is_503_when_the_last_run_failed(stack: Any, data: psycopg.Connection[Any]) -> None:
    run_sync(data, "good-run")
    settings = load_settings()
    mark_run_failed(
        data,
        settings,
        {"run_id": "bad-run", "dag_id": DAG_ID, "error": "apply_changes: boom"},
    )
    status, body = health(stack)
    assert status == 503
    assert body["reason"] == "last run failed in apply_changes"  # the error itself is behind /runs
    assert "boom" not in str(body) and "bad-run" not in str(body)
    assert "last_successful_sync" in body


def test_health_is_503_when_the_database_refuses_connections(
    stack: Any, data: psycopg.Connection[Any], admin_token: str
) -> None:
    run_sync(data, "good-run")
    name = psycopg.conninfo.conninfo_to_dict(stack.data_url)["dbname"]
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            time.sleep(api.HEALTH_CACHE_SECONDS + 0.5)  # no cached answer from before
            started = time.monotonic()
            status, body = stack.request("GET", "/device-sync/health")
            elapsed = time.monotonic() - started
            history = [stack.request("GET", path, token=admin_token) for path in ("/device-sync/runs", "/device-sync/")]
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    assert status == 503
    assert body["reason"].startswith("database unreachable")
    assert "password" not in str(body).lower() and "postgresql://" not in str(body)
    assert elapsed < 10
    # the authenticated routes: 503 with a short reason, not 500, and not the driver's message
    assert history == [(503, {"detail": "database unavailable"})] * 2


# --- authentication ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/device-sync/docs", "/device-sync/redoc", "/device-sync/openapi.json"])
def test_plugin_api_docs_are_not_served_anonymously(stack: Any, path: str) -> None:
    status, body = stack.request("GET", path)
    assert status in (401, 403, 404), body
    assert "swagger" not in str(body).lower() and "openapi" not in str(body).lower() and "/runs" not in str(body)


@pytest.mark.parametrize("path", ["/device-sync/runs", "/device-sync/changes?device_id=x", "/device-sync/"])
def test_history_endpoints_refuse_anonymous_and_bad_tokens(stack: Any, path: str) -> None:
    status, _ = stack.request("GET", path)
    assert status in (401, 403)
    status, _ = stack.request("GET", path, token="not-a-token")
    assert status in (401, 403)


def test_a_viewer_may_read_the_history(stack: Any, data: psycopg.Connection[Any]) -> None:
    run_sync(data, "viewer-run")
    status, body = stack.request("GET", "/device-sync/runs", token=stack.token("viewer"))
    assert status == 200
    assert body["runs"][0]["run_id"] == "viewer-run"


# --- runs, changes, status page ----------------------------------------------------------------------------


def test_runs_are_paginated_newest_first(stack: Any, data: psycopg.Connection[Any], admin_token: str) -> None:
    first = run_sync(data, "run-1")
    run_sync(data, "run-2")
    status, body = stack.request("GET", "/device-sync/runs?limit=1", token=admin_token)
    assert status == 200
    assert (body["total"], body["limit"], body["offset"]) == (2, 1, 0)
    assert [run["run_id"] for run in body["runs"]] == ["run-2"]
    status, body = stack.request("GET", "/device-sync/runs?limit=1&offset=1", token=admin_token)
    older = body["runs"][0]
    assert older["run_id"] == "run-1"
    assert (older["inserted"], older["deleted"], older["updated"]) == (
        first["inserted"],
        first["deleted"],
        first["updated"],
    )
    assert older["status"] == "success" and older["applied"] is True
    status, body = stack.request("GET", "/device-sync/runs?offset=10", token=admin_token)
    assert (status, body["runs"], body["total"], body["has_more"]) == (200, [], 2, False)  # past the end
    status, _ = stack.request("GET", "/device-sync/runs?limit=0", token=admin_token)
    assert status == 422


def test_changes_answer_when_a_parameter_disappeared_from_a_device(
    stack: Any, data: psycopg.Connection[Any], admin_token: str
) -> None:
    deleted = data.execute(
        "SELECT device_id, parameter_id FROM iot_data.device_parameters dp WHERE NOT EXISTS ("
        " SELECT 1 FROM iot_data.measurements m WHERE m.device_id = dp.device_id AND m.parameter_id = dp.parameter_id"
        " AND m.time > now() - interval '24 hours') AND device_id IN ("
        " SELECT device_id FROM iot_data.redshift_devices WHERE status AND device_name IS NOT NULL) LIMIT 1"
    ).fetchone()
    assert deleted is not None
    run_sync(data, "run-with-deletes")
    device_id, parameter_id = deleted
    status, body = stack.request(
        "GET", f"/device-sync/changes?device_id={device_id}&parameter_id={parameter_id}", token=admin_token
    )
    assert status == 200
    assert (len(body["changes"]), body["has_more"], body["next_offset"]) == (1, False, None)
    change = body["changes"][0]
    assert (change["operation"], change["run_id"]) == ("delete", "run-with-deletes")
    assert change["old_parameter_name"] and change["new_parameter_name"] is None
    status, body = stack.request("GET", "/device-sync/changes?run_id=run-with-deletes&limit=5", token=admin_token)
    assert status == 200 and len(body["changes"]) == 5 and (body["has_more"], body["next_offset"]) == (True, 5)


def test_status_page_shows_runs_and_a_chart(stack: Any, data: psycopg.Connection[Any], admin_token: str) -> None:
    run_sync(data, "page-run-1")
    run_sync(data, "page-run-2")
    status, page = stack.request("GET", "/device-sync/", token=admin_token)
    assert status == 200
    assert "<svg" in page and 'id="changes-chart"' in page and "polyline" in page
    assert "page-run-1" in page and "page-run-2" in page


def test_plugin_is_linked_from_the_airflow_ui_navigation(stack: Any, admin_token: str) -> None:
    status, body = stack.request("GET", "/api/v2/plugins", token=admin_token)
    assert status == 200
    plugin = next(p for p in body["plugins"] if p["name"] == "device_sync")
    assert plugin["fastapi_apps"][0]["url_prefix"] == "/device-sync"
    assert plugin["external_views"][0]["destination"] == "nav"
    assert plugin["external_views"][0]["href"] == "/device-sync/"


# --- manual triggers through the REST API ------------------------------------------------------------------


def trigger(stack: Any, token: str, conf: dict[str, Any]) -> tuple[int, Any]:
    return stack.request("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": conf}, token=token)


@pytest.fixture(scope="module")
def unpaused(stack: Any, admin_token: str) -> None:
    """Unpause the DAG, then let the scheduled run that unpausing starts (catchup off: the latest fire
    time) finish, so that it cannot overlap the tests' own runs."""
    set_paused(stack, admin_token, False)
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        _, body = stack.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?run_type=scheduled", token=admin_token)
        runs = body.get("dag_runs", [])
        if runs and all(run["state"] in ("success", "failed") for run in runs):
            return
        time.sleep(2)
    raise TimeoutError(f"the scheduled run started by unpausing did not finish: {runs}")


def test_rest_trigger_with_dry_run_records_the_delta_and_changes_nothing(
    stack: Any, data: psycopg.Connection[Any], admin_token: str, unpaused: None
) -> None:
    before = data.execute("SELECT count(*), max(xmin::text::bigint) FROM iot_data.device_parameters").fetchone()
    status, run = trigger(stack, admin_token, {"dry_run": True})
    assert status == 200, run
    finished = stack.wait_for_run(DAG_ID, run["dag_run_id"], admin_token)
    assert finished["state"] == "success"
    after = data.execute("SELECT count(*), max(xmin::text::bigint) FROM iot_data.device_parameters").fetchone()
    assert after == before
    history = data.execute(
        "SELECT dry_run, applied, status, inserted + deleted + updated FROM device_sync.run_history WHERE run_id = %s",
        (run["dag_run_id"],),
    ).fetchone()
    assert history is not None
    assert history[:3] == (True, False, "success")
    assert history[3] > 0  # the would-be changes are recorded
    assert data.execute("SELECT count(*) FROM device_sync.change_log").fetchone() == (0,)


def test_rest_trigger_limited_to_devices_changes_only_those(
    stack: Any, data: psycopg.Connection[Any], admin_token: str, unpaused: None
) -> None:
    before = set(data.execute("SELECT * FROM iot_data.device_parameters"))
    status, run = trigger(stack, admin_token, {"device_ids": ["dev-00011", "dev-00013"], "lookback_minutes": 1440})
    assert status == 200, run
    assert stack.wait_for_run(DAG_ID, run["dag_run_id"], admin_token)["state"] == "success"
    after = set(data.execute("SELECT * FROM iot_data.device_parameters"))
    changed_devices = {row[0] for row in before ^ after}
    assert changed_devices == {"dev-00011", "dev-00013"}  # a new device, and a renamed one


@pytest.mark.parametrize(
    ("conf", "field"),
    [
        ({"lookback_minutes": 0}, "lookback_minutes"),
        ({"lookback_minutes": "sixty"}, "lookback_minutes"),
        ({"dry_run": "yes"}, "dry_run"),
        ({"device_ids": []}, "device_ids"),
        ({"device_ids": [""]}, "device_ids"),
    ],
)
def test_rest_trigger_rejects_invalid_params_naming_the_field(
    stack: Any, admin_token: str, conf: dict[str, Any], field: str
) -> None:
    status, body = trigger(stack, admin_token, conf)
    assert status == 400
    assert field in str(body)


def test_rest_trigger_needs_a_token(stack: Any) -> None:
    status, _ = stack.request("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None})
    assert status in (401, 403)


def test_history_shows_a_failed_run_with_its_error(
    stack: Any, data: psycopg.Connection[Any], admin_token: str, unpaused: None
) -> None:
    data.execute("ALTER TABLE iot_data.timescale_parameters RENAME TO timescale_parameters_gone")
    status, run = trigger(stack, admin_token, {})
    assert status == 200, run
    finished = stack.wait_for_run(DAG_ID, run["dag_run_id"], admin_token)
    assert finished["state"] == "failed"
    status, body = stack.request("GET", "/device-sync/runs?limit=1", token=admin_token)
    latest = body["runs"][0]
    assert latest["run_id"] == run["dag_run_id"]
    assert latest["status"] == "failed"
    assert "resolve_parameter_names" in latest["error"] and "timescale_parameters" in latest["error"]
    status, body = health(stack)
    assert (status, body["reason"]) == (503, "last run failed in resolve_parameter_names")
    assert "timescale_parameters" not in str(body)


def test_clearing_compute_delta_of_a_finished_run_reruns_its_setups_and_succeeds(
    stack: Any, data: psycopg.Connection[Any], admin_token: str, unpaused: None
) -> None:
    """The steps that create the staging tables are setups of cleanup_staging: clearing a later task of a
    finished run (its staging dropped) clears them too, so the run succeeds again instead of failing on a
    missing table."""
    status, run = trigger(stack, admin_token, {})
    assert status == 200, run
    run_id = run["dag_run_id"]
    assert stack.wait_for_run(DAG_ID, run_id, admin_token)["state"] == "success"

    status, cleared = stack.request(
        "POST",
        f"/api/v2/dags/{DAG_ID}/clearTaskInstances",
        {"dag_run_id": run_id, "task_ids": ["compute_delta"], "dry_run": False, "only_failed": False},
        token=admin_token,
    )
    assert status == 200, cleared
    assert {ti["task_id"] for ti in cleared["task_instances"]} >= {
        "discover_active_devices",
        "aggregate_recent_measurements",
        "resolve_parameter_names",
        "compute_delta",
        "cleanup_staging",
    }

    assert stack.wait_for_run(DAG_ID, run_id, admin_token)["state"] == "success"
    status, body = stack.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances", token=admin_token)
    assert status == 200, body
    tries = {ti["task_id"]: (ti["state"], ti["try_number"]) for ti in body["task_instances"]}
    for task_id in ("discover_active_devices", "resolve_parameter_names", "compute_delta", "cleanup_staging"):
        assert tries[task_id] == ("success", 2), (task_id, tries)
    assert tries["plan_aggregation_shards"] == ("success", 1)  # the run's shard plan is kept
    staging = data.execute(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'device_sync' AND starts_with(tablename, 'stage_')"
    ).fetchone()
    assert staging == (0,)
