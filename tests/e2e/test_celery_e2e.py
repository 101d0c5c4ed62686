"""End to end on the CeleryExecutor: a real scheduler, api-server, dag-processor and triggerer, two
``airflow celery worker`` processes (each with its own hostname, temporary directory and home), the machine's
Redis as the broker (a database number of the test's own) and PostgreSQL as the result backend.

This module is the proof that the DAG is executor-agnostic: every task of a run may land on either worker, in
a process of its own, with nothing on local disk shared between the workers but Airflow's logs; a task that
left a file or a Python object for another one would fail here. Each worker runs one task at a time
(concurrency 1), so that what one worker holds (a task blocked on a lock) the other must take over.

Order matters: the worker killed in the last test is not restarted. Every wait is bounded.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psutil
import psycopg
import pytest
from stack_helpers import DAG_ID, apply_backend, process_on_port, set_paused, wait_idle, wait_until

from conftest import ADMIN_URL, running_airflow_stack
from device_sync import api, pool, sync
from device_sync.config import load_settings
from device_sync.demo import load_demo_fleet
from device_sync.staging import StagingTables
from device_sync.window import Window

SHARDS = 4
LOOKBACK_MINUTES = 1440
FLEET = {"devices": 60, "parameters": 20}
# The tasks that open a session on the IoT database, and so run in the pool.
DATABASE_TASKS = {
    "discover_active_devices",
    "aggregate_recent_measurements",
    "resolve_parameter_names",
    "compute_delta",
    "approve_mass_delete",
    "apply_changes",
    "cleanup_staging",
}
WRITERS_LOCK = "SELECT pg_advisory_lock(hashtextextended('device_sync:iot_data.device_parameters', 0))"


@pytest.fixture(scope="module")
def stack(moto_server: str) -> Iterator[Any]:
    with running_airflow_stack(
        ("api-server", "scheduler", "dag-processor", "triggerer"),
        workers=2,
        worker_concurrency=1,
        DEVICE_SYNC_AGGREGATION_SHARDS=str(SHARDS),
        DEVICE_SYNC_SCHEDULE="* * * * *",
        DEVICE_SYNC_LOOKBACK_MINUTES=str(LOOKBACK_MINUTES),
        DEVICE_SYNC_RETRY_DELAY_SECONDS="1",
        DEVICE_SYNC_MAX_ACTIVE_RUNS="2",
        # A task whose worker died is failed (and retried) after 20 s without a heartbeat, not 5 minutes.
        AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT="20",
        AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL="5",
    ) as stack:
        print(f"\nCelery stack (2 workers) healthy after {stack.start_seconds:.0f} s")
        yield stack


@pytest.fixture(scope="module")
def token(stack: Any) -> str:
    return str(stack.token("admin"))


@pytest.fixture(scope="module")
def data(stack: Any) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(stack.data_url, autocommit=True) as conn:
        yield conn


def load_fleet(conn: psycopg.Connection[Any]) -> datetime:
    """A fresh demo fleet (sources and a drifted target) whose day of measurements ends now; its end."""
    fleet_end = datetime.now(UTC).replace(second=0, microsecond=0)
    load_demo_fleet(conn, fleet_end, **FLEET)
    return fleet_end


def expected_table(fleet_end: datetime, window_end: datetime) -> set[tuple[Any, ...]]:
    """The table the same fleet gives when the package's steps run in this process, in order, for the
    window ending at ``window_end``: what the distributed run must have left."""
    name = f"device_sync_test_expected_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        with psycopg.connect(psycopg.conninfo.make_conninfo(ADMIN_URL, dbname=name)) as conn:
            load_demo_fleet(conn, fleet_end, **FLEET)
            settings = load_settings()
            sync.ensure_schema(conn, settings)
            staging = StagingTables.for_run(settings.staging_schema, DAG_ID, "expected")
            window = Window.ending_at(window_end, LOOKBACK_MINUTES)
            sync.sync_once(conn, settings, staging, window, run_id="expected", force_apply=True)
            return table(conn)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def table(conn: psycopg.Connection[Any]) -> set[tuple[Any, ...]]:
    pairs = "SELECT device_id, device_name, parameter_id, parameter_name FROM iot_data.device_parameters"
    return set(conn.execute(pairs))


def newest_applied_window(conn: psycopg.Connection[Any]) -> datetime:
    row = conn.execute("SELECT max(window_end) FROM device_sync.run_history WHERE status = 'success' AND applied")
    value = row.fetchone()
    assert value is not None and value[0] is not None, "no run applied"
    return value[0]  # type: ignore[no-any-return]


def trigger(stack: Any, token: str) -> str:
    status, run = stack.request("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None}, token=token)
    assert status == 200, run
    return str(run["dag_run_id"])


def task_instances(stack: Any, token: str, run_id: str) -> list[dict[str, Any]]:
    status, body = stack.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances?limit=100", token=token)
    assert status == 200, body
    return list(body["task_instances"])


def task_instance(stack: Any, token: str, run_id: str, task_id: str) -> dict[str, Any] | None:
    status, body = stack.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}", token=token)
    return body if status == 200 else None


def worker_hostnames(stack: Any) -> set[str]:
    return {stack.worker_hostname(name) for name in stack.worker_names}


def test_a_run_with_four_shards_spreads_over_both_workers_and_leaves_the_exact_table(
    stack: Any, token: str, data: psycopg.Connection[Any]
) -> None:
    fleet_end = load_fleet(data)
    set_paused(stack, token, False)
    try:
        run_id = trigger(stack, token)
        run = stack.wait_for_run(DAG_ID, run_id, token, timeout=300)
    finally:
        set_paused(stack, token, True)
    wait_idle(stack, token)
    assert run["state"] == "success", run

    instances = task_instances(stack, token, run_id)
    shards = [ti for ti in instances if ti["task_id"] == "aggregate_recent_measurements"]
    assert sorted(ti["map_index"] for ti in shards) == list(range(SHARDS))
    ran = [ti for ti in instances if ti["state"] == "success"]
    # All but the watcher (skipped when nothing failed) and announce_change, skipped when a scheduled run
    # (unpausing adds one) applied the fleet's drift first and left this run nothing to change.
    assert {ti["task_id"] for ti in instances if ti not in ran} <= {"fail_if_sync_failed", "announce_change"}
    assert next(ti["state"] for ti in instances if ti["task_id"] == "fail_if_sync_failed") == "skipped"
    # Airflow's own records: every task ran on a worker, both workers took part, each task in its own process.
    assert {ti["hostname"] for ti in ran} == worker_hostnames(stack)
    assert len({(ti["hostname"], ti["pid"]) for ti in ran}) == len(ran)
    assert {ti["task_id"] for ti in ran if ti["pool"] == pool.NAME} == DATABASE_TASKS
    print("\n" + "\n".join(f"  {ti['task_id']}[{ti['map_index']}] on {ti['hostname']}" for ti in ran))

    history = data.execute(
        "SELECT status, applied, apply_attempt, apply_host FROM device_sync.run_history WHERE run_id = %s", (run_id,)
    ).fetchone()
    apply_host = next(ti["hostname"] for ti in ran if ti["task_id"] == "apply_changes")
    assert history == ("success", True, 1, apply_host)
    assert table(data) == expected_table(fleet_end, newest_applied_window(data))


def test_a_missing_pool_is_named_at_trigger_time_and_by_health(
    stack: Any, token: str, data: psycopg.Connection[Any]
) -> None:
    stack.airflow("pools", "delete", pool.NAME)
    try:
        status, body = stack.request("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None}, token=token)
        assert status == 422, body
        assert body["detail"] == pool.missing_message(4)
        time.sleep(api.HEALTH_CACHE_SECONDS + 0.5)
        status, body = stack.request("GET", "/device-sync/health")
        assert (status, body["reason"]) == (503, pool.missing_message(4))
    finally:
        stack.airflow(*pool.create_command(4)[1:])
    status, _ = stack.request("GET", "/api/v2/pools/device_sync_db", token=token)
    assert status == 200


def test_a_manual_and_a_scheduled_run_on_different_workers_are_serialized_by_the_writers_lock(
    stack: Any, token: str, data: psycopg.Connection[Any]
) -> None:
    wait_idle(stack, token)
    fleet_end = load_fleet(data)
    before = table(data)
    holder = psycopg.connect(stack.data_url, autocommit=True)
    holder.execute(WRITERS_LOCK)  # both runs' apply_changes wait for it, each on its worker
    set_paused(stack, token, False)
    try:
        manual = trigger(stack, token)

        def both_waiting() -> list[dict[str, Any]] | None:
            scheduled = [
                run["dag_run_id"]
                for run in stack.request(
                    "GET", f"/api/v2/dags/{DAG_ID}/dagRuns?run_type=scheduled&state=running", token=token
                )[1].get("dag_runs", [])
            ]
            applying = [task_instance(stack, token, run_id, "apply_changes") for run_id in [manual, *scheduled]]
            running = [ti for ti in applying if ti and ti["state"] == "running"]
            waiting = data.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory' AND pid <> pg_backend_pid()"
            ).fetchone()
            return running if len(running) == 2 and waiting == (2,) else None

        applying = wait_until(both_waiting, 240, "a manual and a scheduled apply_changes never waited together")
        assert {ti["hostname"] for ti in applying} == worker_hostnames(stack)
        assert {ti["dag_run_id"].split("__")[0] for ti in applying} == {"manual", "scheduled"}
        assert table(data) == before
        holder.close()  # let them through, one after the other
        finished = {
            ti["dag_run_id"]: stack.wait_for_run(DAG_ID, ti["dag_run_id"], token, timeout=240)["state"]
            for ti in applying
        }
    finally:
        holder.close()
        set_paused(stack, token, True)
    wait_idle(stack, token)
    assert set(finished.values()) == {"success"}, finished

    rows = data.execute(
        "SELECT run_id, status, applied, guard, inserted + updated + deleted FROM device_sync.run_history "
        "WHERE run_id = ANY(%s)",
        (list(finished),),
    ).fetchall()
    assert {row[1] for row in rows} == {"success"}
    logged = data.execute(
        "SELECT operation, device_id, parameter_id, count(*) FROM device_sync.change_log WHERE run_id = ANY(%s) "
        "GROUP BY 1, 2, 3",
        (list(finished),),
    ).fetchall()
    assert logged, "the fleet's drift was not applied"
    assert all(count == 1 for *_, count in logged)  # each change applied once
    applied_counts = sum(row[4] for row in rows if row[2])
    assert applied_counts == len(logged)
    assert table(data) == expected_table(fleet_end, newest_applied_window(data))


def test_a_worker_killed_while_it_applies_is_detected_and_the_other_worker_retries_the_task(
    stack: Any, token: str, data: psycopg.Connection[Any]
) -> None:
    wait_idle(stack, token)
    fleet_end = load_fleet(data)
    before = table(data)
    blocker = psycopg.connect(stack.data_url)  # holds a row that apply_changes must rename
    blocker.execute("SELECT * FROM iot_data.device_parameters WHERE device_id = 'dev-00003' FOR UPDATE")
    set_paused(stack, token, False)
    try:
        run_id = trigger(stack, token)
        _, port = wait_until(lambda: apply_backend(data), 240, "apply_changes never reached the locked row")
        task_process = wait_until(lambda: process_on_port(port), 10, "no process holds the apply's connection")
        ancestors = {process.pid for process in task_process.parents()}
        killed = next(name for name in stack.worker_names if stack.processes[name].pid in ancestors)
        running = wait_until(
            lambda: [
                ti
                for run in stack.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?state=running", token=token)[1][
                    "dag_runs"
                ]
                if (ti := task_instance(stack, token, run["dag_run_id"], "apply_changes"))
                and ti["state"] == "running"
                and ti["hostname"] == stack.worker_hostname(killed)
            ],
            30,
            "the blocked apply_changes is not running on a worker",
        )
        run_id = running[0]["dag_run_id"]
        worker = psutil.Process(stack.processes[killed].pid)
        for process in [worker, *worker.children(recursive=True)]:  # the worker and its tasks, as a host dies
            process.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        time.sleep(2)
        assert table(data) == before  # nothing of the interrupted transaction is visible
        blocker.rollback()  # the orphaned session goes on, finds its client gone and rolls back

        def retried() -> dict[str, Any] | None:
            ti = task_instance(stack, token, run_id, "apply_changes")
            return ti if ti and ti["try_number"] >= 2 and ti["state"] in ("success", "failed") else None

        final = wait_until(retried, 240, "apply_changes was not retried after its worker died", interval=3)
        detected = time.monotonic() - killed_at
        run = stack.wait_for_run(DAG_ID, run_id, token, timeout=240)
    finally:
        blocker.close()
        set_paused(stack, token, True)
    wait_idle(stack, token)
    print(f"\nworker {killed} killed; apply_changes retried and done {detected:.0f} s later")
    survivor = stack.worker_hostname(next(name for name in stack.worker_names if name != killed))
    assert final["state"] == "success" and final["hostname"] == survivor
    assert run["state"] == "success"
    status, tries = stack.request(
        "GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/apply_changes/tries", token=token
    )
    assert status == 200, tries
    first = next(attempt for attempt in tries["task_instances"] if attempt["try_number"] == 1)
    assert (first["state"], first["hostname"]) == ("failed", stack.worker_hostname(killed))
    history = data.execute(
        "SELECT status, applied, guard, apply_attempt, apply_host FROM device_sync.run_history WHERE run_id = %s",
        (run_id,),
    ).fetchone()
    assert history is not None
    # The retry applied, unless the other active run (two may run at once here), released by the same lock,
    # applied a newer window first while the heartbeat timeout ran: then the retry records its delta as an
    # older window and applies nothing, as the forward-only guard says. Either way the history tells it.
    assert history[:1] + history[3:] == ("success", final["try_number"], survivor)
    assert history[1:3] in ((True, None), (False, "older_window")), history
    assert table(data) == expected_table(fleet_end, newest_applied_window(data))
    renamed = data.execute("SELECT count(*) FROM iot_data.device_parameters WHERE device_name LIKE 'old name of %%'")
    assert renamed.fetchone() == (0,)  # the retry applied the whole delta, renames included
