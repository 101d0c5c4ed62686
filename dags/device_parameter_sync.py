"""device_parameter_sync: keeps iot_data.device_parameters equal to what the active devices reported.

The task graph only; the steps live in the device_sync package (device_sync.tasks → device_sync.sync, SQL in
include/sql/device_parameter_sync/steps/). The DAG's doc_md, shown in the Airflow UI, is the operators'
runbook, docs/runbook.md (package data of the wheel).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial

from airflow.sdk import Param, chain, task

from device_sync import approval, assets, deadline, notifications, options, pool, resources, tasks
from device_sync.compat import (
    CronTriggerTimetable,
    TriggerRule,
    exponential_backoff,
    features_markdown,
    log_disabled_features,
)
from device_sync.config import load_settings
from device_sync.dag_class import DeviceSyncDAG

settings = load_settings()
# Features this Airflow lacks (human approval before 3.3, deadlines before 3.2) are said once in the parse log.
log_disabled_features()


with DeviceSyncDAG(
    dag_id="device_parameter_sync",
    doc_md=resources.runbook() + features_markdown(),
    schedule=CronTriggerTimetable(
        settings.schedule, timezone="UTC", interval=timedelta(minutes=settings.lookback_minutes)
    ),
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=settings.max_active_runs,
    params={
        "dry_run": Param(
            False,
            type="boolean",
            title="Dry run",
            description="Compute the delta and record it in the run history; change nothing in the table.",
        ),
        "allow_mass_delete": Param(
            False,
            type="boolean",
            title="Allow mass delete",
            description="Accept, for this run only, more deletes than DEVICE_SYNC_MAX_DELETE_FRACTION allows "
            "(and an empty window while the table is not). Use after checking the sources.",
        ),
        "force_apply": Param(
            False,
            type="boolean",
            title="Force apply",
            description="Apply even though the window ends before the newest applied one (backfills and late "
            "retries only record their delta otherwise).",
        ),
        "lookback_minutes": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=options.MAX_LOOKBACK_MINUTES,
            title="Lookback (minutes)",
            description=f"Window length for this run only. Empty: {settings.lookback_minutes} (configured).",
        ),
        "device_ids": Param(
            None,
            type=["null", "array"],
            items={"type": "string", "minLength": 1, "maxLength": 256},
            minItems=1,
            maxItems=options.MAX_DEVICE_IDS,
            title="Device ids",
            description="Limit the run to these devices: nothing outside them is inserted or deleted. Empty: all.",
        ),
    },
    tags=["device-sync", "iot", settings.stage],
    # One SNS message per failed run, and one when a run succeeds after a failure (DEVICE_SYNC_ALERT_SNS_TOPIC_ARN).
    on_failure_callback=notifications.run_failed,
    on_success_callback=notifications.run_succeeded,
    default_args={
        "owner": "iot-data-platform",
        "retries": settings.retries,
        "retry_delay": timedelta(seconds=settings.retry_delay_seconds),
        "retry_exponential_backoff": exponential_backoff(),
        "max_retry_delay": timedelta(minutes=10),
        "execution_timeout": timedelta(minutes=settings.task_timeout_minutes),
    },
    # A run still going DEVICE_SYNC_DEADLINE_MINUTES (default: one schedule interval) after it was queued.
    **deadline.dag_kwargs(settings),
) as device_parameter_sync_dag:
    # A step that failed for good (not an attempt a retry may fix) marks the run failed in the run history.
    # Steps query the IoT database: the pool bounds how many of them (of every run) hold a session at once.
    # Each step's XCom is one small summary: multiple_outputs=False, or Airflow would push every key of the
    # returned dict again as an XCom of its own (it infers multiple outputs from the dict return type).
    summary = partial(task, multiple_outputs=False)
    step = partial(summary, on_failure_callback=tasks.record_step_failure, pool=pool.NAME)
    # The shard count is fixed once per run: the shards and resolve_parameter_names take it from this plan.
    shard_plan = task(tasks.plan_aggregation_shards)()
    # The tables read are the inlets of the steps that read them (the asset graph shows the lineage).
    devices = step(tasks.discover_active_devices, inlets=[assets.devices(settings)])()
    pairs = step(
        tasks.aggregate_recent_measurements,
        doc_md=tasks.aggregate_recent_measurements.__doc__,
        inlets=[assets.measurements(settings)],
    ).expand_kwargs(shard_plan)
    names = step(tasks.resolve_parameter_names, inlets=[assets.parameters(settings)])(shard_plan)
    delta = step(tasks.compute_delta)()
    # A tripped mass-delete guard asks a human (Approve / Reject) instead of failing the run at once.
    approval_asked = approval.approve_mass_delete(
        settings,
        doc_md=approval.__doc__,
        on_failure_callback=tasks.record_step_failure,
        pool=pool.NAME,
    )
    applied = step(tasks.apply_changes)()
    # The table's Asset event, only when the run changed it (skipped otherwise).
    applied >> summary(tasks.announce_change, outlets=[assets.target(settings)])()
    # No task retries: the CloudWatch client retries once within DEVICE_SYNC_CLOUDWATCH_TIMEOUT_SECONDS, so an
    # outage costs the run seconds and does not hold its staging tables (and the next run) for minutes.
    publish = summary(tasks.publish_metrics, trigger_rule=TriggerRule.ALL_DONE, retries=0)()
    cleanup = task(tasks.cleanup_staging, pool=pool.NAME)()
    chain(shard_plan, devices, pairs, names, delta, approval_asked, applied, publish)
    # The first three steps create the run's staging tables: they are the setups of cleanup_staging, so
    # clearing compute_delta or apply_changes of a finished run runs them again first (instead of failing on
    # dropped tables). publish_metrics stays outside that scope: it must run (SyncSuccess=0) even when a
    # setup failed, and it reads only XComs and the run history.
    applied >> cleanup.as_teardown(setups=[devices, pairs, names])
    # publish_metrics always runs, so on its own it would turn a failed sync into a green run; the watcher
    # fails the run whenever a step or the publishing failed (a failed setup leaves compute_delta
    # upstream_failed, which one_failed counts: setups themselves may only be followed by all_success tasks).
    [shard_plan, delta, approval_asked, applied, publish] >> task(
        tasks.fail_if_sync_failed, trigger_rule=TriggerRule.ONE_FAILED, retries=0
    )()


if __name__ == "__main__":
    device_parameter_sync_dag.test()
