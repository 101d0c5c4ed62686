"""DAG integrity: the file imports cleanly, the task graph is the design card's chain, and the run
settings an operator relies on (retries, timeouts, one active run, tags, docs, timetable) hold."""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk import CronTriggerTimetable

from conftest import REPO
from device_sync import maintenance

DAG_ID = "device_parameter_sync"
PLAN = "plan_aggregation_shards"
CHAIN = [
    PLAN,
    "discover_active_devices",
    "aggregate_recent_measurements",
    "resolve_parameter_names",
    "compute_delta",
    "approve_mass_delete",
    "apply_changes",
    "publish_metrics",
]


def load_dagbag() -> DagBag:
    return DagBag(dag_folder=str(REPO / "dags"))


@pytest.fixture(scope="module")
def dag() -> Any:
    bag = load_dagbag()
    assert bag.import_errors == {}
    return bag.dags[DAG_ID]


def test_dag_file_imports_without_errors() -> None:
    bag = load_dagbag()
    assert bag.import_errors == {}
    assert sorted(bag.dags) == [DAG_ID, maintenance.DAG_ID]


def test_the_maintenance_dag_is_off_by_default() -> None:
    """Manual only, paused when it first appears, no retries, and no connection unless the admin names one."""
    dag = load_dagbag().dags[maintenance.DAG_ID]
    assert type(dag.timetable).__name__ == "NullTimetable"  # schedule=None: manual runs only
    assert dag.is_paused_upon_creation is True
    assert [task.task_id for task in dag.tasks] == [maintenance.TASK_ID]
    assert dag.get_task(maintenance.TASK_ID).retries == 0
    assert dag.params["conn_id"] is None
    assert "device-sync-migrate" in (dag.doc_md or "")


WATCHER = "fail_if_sync_failed"
PUBLISH = "publish_metrics"


SETUPS = {"discover_active_devices", "aggregate_recent_measurements", "resolve_parameter_names"}
ANNOUNCE = "announce_change"
TARGET_URI = "postgres://iot-db:5432/iot/iot_data/device_parameters"


def test_the_table_is_the_outlet_asset_and_the_sources_are_inlets(dag: Any) -> None:
    """Only announce_change has the outlet, after apply_changes: it is skipped when nothing changed."""
    assert dag.get_task(ANNOUNCE).upstream_task_ids == {"apply_changes"}
    outlets = {task.task_id: [asset.uri for asset in task.outlets] for task in dag.tasks if task.outlets}
    assert outlets == {ANNOUNCE: [TARGET_URI]}
    inlets = {task.task_id: [asset.uri for asset in task.inlets] for task in dag.tasks if task.inlets}
    assert inlets == {
        "discover_active_devices": ["postgres://iot-db:5432/iot/iot_data/redshift_devices"],
        "aggregate_recent_measurements": ["postgres://iot-db:5432/iot/iot_data/measurements"],
        "resolve_parameter_names": ["postgres://iot-db:5432/iot/iot_data/timescale_parameters"],
    }


def test_a_run_has_a_deadline_alert_one_schedule_interval_after_it_was_queued(dag: Any) -> None:
    """Airflow's DeadlineAlert on the run's queued time; its callback sends the deadline SNS message."""
    from airflow.sdk.definitions.deadline import DagRunQueuedAtDeadline

    [alert] = dag.deadline
    assert isinstance(alert.reference, DagRunQueuedAtDeadline)
    assert alert.interval == timedelta(hours=1)  # the default schedule is hourly
    assert alert.callback.path == "device_sync.notifications.run_missed_deadline"


def test_deadline_minutes_sets_the_deadline_and_a_test_run_keeps_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """DEVICE_SYNC_DEADLINE_MINUTES overrides the interval; dag.test() leaves it out only while it runs."""
    monkeypatch.setenv("DEVICE_SYNC_DEADLINE_MINUTES", "7")
    dag = load_dagbag().dags[DAG_ID]
    assert [alert.interval for alert in dag.deadline] == [timedelta(minutes=7)]
    seen_during_test = []
    monkeypatch.setattr(
        "airflow.sdk.definitions.dag.DAG.test", lambda self, **kwargs: seen_during_test.append(self.deadline)
    )
    dag.test(logical_date=None)
    assert seen_during_test == [None]
    assert [alert.interval for alert in dag.deadline] == [timedelta(minutes=7)]


def test_a_tripped_mass_delete_guard_asks_a_human_with_airflows_approval_operator(dag: Any) -> None:
    """approve_mass_delete sits between compute_delta and apply_changes: an ApprovalOperator whose unanswered
    question is a Reject after DEVICE_SYNC_APPROVAL_TIMEOUT_MINUTES, in the database pool."""
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    approval = dag.get_task("approve_mass_delete")
    assert isinstance(approval, ApprovalOperator)
    assert approval.upstream_task_ids == {"compute_delta"}
    assert dag.get_task("apply_changes").upstream_task_ids == {"approve_mass_delete"}
    assert approval.defaults == ["Reject"]
    assert approval.response_timeout == timedelta(minutes=60)
    assert approval.pool == "device_sync_db"


def test_approval_timeout_minutes_sets_the_questions_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVICE_SYNC_APPROVAL_TIMEOUT_MINUTES", "5")
    dag = load_dagbag().dags[DAG_ID]
    assert dag.get_task("approve_mass_delete").response_timeout == timedelta(minutes=5)


def test_task_graph_is_the_design_cards_chain(dag: Any) -> None:
    assert sorted(dag.task_ids) == sorted([*CHAIN, "cleanup_staging", WATCHER, ANNOUNCE])
    for upstream, downstream in itertools.pairwise(CHAIN):
        assert upstream in dag.get_task(downstream).upstream_task_ids, downstream
    # The shards and resolve_parameter_names take this run's shard count from the plan; the teardown has its
    # setups as direct upstreams.
    assert dag.get_task("aggregate_recent_measurements").upstream_task_ids == {PLAN, "discover_active_devices"}
    assert dag.get_task("resolve_parameter_names").upstream_task_ids == {PLAN, "aggregate_recent_measurements"}
    assert dag.get_task("cleanup_staging").upstream_task_ids == {"apply_changes", *SETUPS}


def test_the_steps_that_create_staging_tables_are_setups_of_the_cleanup(dag: Any) -> None:
    """Clearing a later task of a finished run (compute_delta, apply_changes) re-runs these first."""
    assert {task.task_id for task in dag.tasks if task.is_setup} == SETUPS
    assert [task.task_id for task in dag.tasks if task.is_teardown] == ["cleanup_staging"]


def test_metrics_and_cleanup_always_run_and_a_watcher_keeps_failures_visible(dag: Any) -> None:
    assert dag.get_task("publish_metrics").trigger_rule == "all_done"
    assert dag.get_task("cleanup_staging").is_teardown
    watcher = dag.get_task(WATCHER)
    assert watcher.trigger_rule == "one_failed"
    assert watcher.retries == 0
    # A failed setup leaves compute_delta upstream_failed, which one_failed counts (setups themselves may only
    # be followed by all_success tasks).
    assert watcher.upstream_task_ids == {
        PLAN,
        "compute_delta",
        "approve_mass_delete",
        "apply_changes",
        "publish_metrics",
    }
    assert watcher.downstream_task_ids == set()


def test_every_task_retries_with_backoff_and_has_a_timeout(dag: Any) -> None:
    for task in dag.tasks:
        if task.task_id in (WATCHER, PUBLISH):
            continue
        assert task.retries >= 2, task.task_id
        assert task.retry_exponential_backoff, task.task_id
        assert task.max_retry_delay is not None, task.task_id
        assert task.execution_timeout == timedelta(minutes=60), task.task_id


def test_publish_metrics_is_not_retried_by_airflow_but_bounded_by_its_client(dag: Any) -> None:
    """A CloudWatch outage must not hold the run (and its staging tables, and the next run) for minutes of
    task retries: the client's own two attempts within DEVICE_SYNC_CLOUDWATCH_TIMEOUT_SECONDS are the retry."""
    publish = dag.get_task(PUBLISH)
    assert publish.retries == 0
    assert publish.execution_timeout == timedelta(minutes=60)


def test_steps_mark_the_run_failed_only_once_they_have_failed_for_good(dag: Any) -> None:
    for task_id in ("discover_active_devices", "aggregate_recent_measurements", "resolve_parameter_names",
                    "compute_delta", "approve_mass_delete", "apply_changes"):  # fmt: skip
        task = dag.get_task(task_id)
        assert task.on_failure_callback, task_id
        assert not task.on_retry_callback, task_id


def test_one_active_run_tags_owner_and_docs(dag: Any) -> None:
    assert dag.max_active_runs == 1
    assert dag.catchup is False
    assert {"device-sync", "dev"} <= set(dag.tags)
    assert dag.owner == "iot-data-platform"
    assert "[window_end - lookback, window_end)" in dag.doc_md
    assert "When a task fails" in dag.doc_md
    # What the operator sees of the Airflow-native operations (issue 15): the Asset, SNS, deadline, approval.
    for line in ("announce_change", "run missed its deadline", "recovered", "### Approving a mass delete"):
        assert line in dag.doc_md, line
    for task_id in CHAIN:
        assert dag.get_task(task_id).doc_md, task_id


def test_timetable_is_cron_trigger_with_the_lookback_as_data_interval(dag: Any) -> None:
    timetable = dag.timetable
    assert isinstance(timetable, CronTriggerTimetable)
    assert timetable.expression == "0 * * * *"
    assert timetable.interval == timedelta(minutes=1440)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DEVICE_SYNC_STAGE", "staging"),
        ("DEVICE_SYNC_SCHEDULE", "not a cron"),
        ("DEVICE_SYNC_LOOKBACK_MINUTES", "0"),
        ("DEVICE_SYNC_MEASUREMENTS_TABLE", "iot_data.m; DROP TABLE x"),
    ],
)
def test_invalid_configuration_is_an_import_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    errors = load_dagbag().import_errors
    assert len(errors) == 1
    assert variable in next(iter(errors.values()))


def test_environment_changes_schedule_lookback_and_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVICE_SYNC_SCHEDULE", "*/15 * * * *")
    monkeypatch.setenv("DEVICE_SYNC_LOOKBACK_MINUTES", "90")
    monkeypatch.setenv("DEVICE_SYNC_STAGE", "prod")
    monkeypatch.setenv("DEVICE_SYNC_RETRIES", "5")
    dag = load_dagbag().dags[DAG_ID]
    assert dag.timetable.expression == "*/15 * * * *"
    assert dag.timetable.interval == timedelta(minutes=90)
    assert "prod" in dag.tags
    assert all(task.retries == 5 for task in dag.tasks if task.task_id not in (WATCHER, PUBLISH))


def test_parsing_touches_no_database_or_network(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[Any] = []

    def refuse(self: socket.socket, address: Any) -> None:
        attempts.append(address)
        raise OSError("network access during DAG parsing")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    bag = load_dagbag()
    assert bag.import_errors == {}
    assert attempts == []


def airflow_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REPO / ".venv/bin/airflow"), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=180,
        cwd="/",
        check=False,
    )


def test_bad_configuration_shows_in_airflow_dags_list_import_errors(airflow_db: None) -> None:
    assert airflow_cli("dags", "reserialize", DEVICE_SYNC_LOOKBACK_MINUTES="-5").returncode == 0
    listed = airflow_cli("dags", "list-import-errors", "-o", "json")
    errors = json.loads(listed.stdout.strip().splitlines()[-1])
    assert len(errors) == 1
    assert "DEVICE_SYNC_LOOKBACK_MINUTES" in errors[0]["error"]
    assert "greater than or equal to 1" in errors[0]["error"]

    assert airflow_cli("dags", "reserialize").returncode == 0
    listed = airflow_cli("dags", "list-import-errors", "-o", "json")
    assert json.loads(listed.stdout.strip().splitlines()[-1]) == []


def test_trigger_form_params_have_types_bounds_and_descriptions(dag: Any) -> None:
    params = dag.params
    assert set(params) == {"dry_run", "lookback_minutes", "device_ids", "allow_mass_delete", "force_apply"}
    for name in params:
        param = params.get_param(name)
        assert param.description and param.schema.get("title"), name
    assert params.get_param("dry_run").schema["type"] == "boolean"
    assert params.get_param("lookback_minutes").schema["minimum"] == 1
    assert params.get_param("lookback_minutes").schema["maximum"] == 44640
    assert params.get_param("device_ids").schema["maxItems"] == 10_000
    assert params.get_param("device_ids").schema["minItems"] == 1
    assert {name: params[name] for name in params} == {
        "dry_run": False,
        "lookback_minutes": None,
        "device_ids": None,
        "allow_mass_delete": False,
        "force_apply": False,
    }


def test_parsing_the_dag_file_does_not_import_the_sync_or_psycopg() -> None:
    """Parse time stays small: the database code is imported by the task callables when they run."""
    probe = (
        "import sys, runpy; runpy.run_path(sys.argv[1]); "
        "print(sorted(m for m in ('device_sync.sync', 'device_sync.db', 'device_sync.metrics', 'psycopg') "
        "if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "plugins")}
    result = subprocess.run(
        [sys.executable, "-c", probe, str(REPO / "dags" / "device_parameter_sync.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_every_task_pushes_one_summary_xcom(dag: Any) -> None:
    """No task pushes each key of its summary again as an XCom of its own (Airflow infers that from a dict return
    type; Airflow 3.0 then fails the task on a key whose value is None)."""
    assert [task.task_id for task in dag.tasks if getattr(task, "multiple_outputs", False)] == []
