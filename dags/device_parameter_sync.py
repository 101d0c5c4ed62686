"""
# device_parameter_sync

Keeps `iot_data.device_parameters` equal to **which parameters each active device reported in the run's
window**, writing only what changed, then publishes CloudWatch metrics.

## The window
`[window_end - lookback, window_end)` where `window_end` is the run's `data_interval_end` (or its
`run_after` when triggered without a logical date) and lookback is `DEVICE_SYNC_LOOKBACK_MINUTES`.
The wall clock never chooses the window: `airflow dags test device_parameter_sync T` looks at
`[T - lookback, T)`. A window ending after the database's now() (plus `DEVICE_SYNC_MAX_CLOCK_SKEW_SECONDS`)
is refused before anything is staged; the REST API answers 422 to a trigger with such a logical date.

## Tasks
1. `discover_active_devices`: creates the target table and the staging schema if missing, then stages
   the devices with `status IS TRUE` (one row per device id).
2. `aggregate_recent_measurements` (mapped: one task per shard of the active devices,
   `DEVICE_SYNC_AGGREGATION_SHARDS`, default 1): stages the distinct (device, parameter) pairs measured in
   the window. With an index on the measurements table's `(device_id, parameter_id, time)` it steps through
   the index (a few probes per pair, whatever the window's size); without one it scans the window. The task
   log says which (`Finding the window's pairs by skip scan`).
3. `resolve_parameter_names`: combines the shards, then names each pair; pairs with a missing name or an
   unknown parameter are **skipped and counted** (neither inserted nor deleted).
4. `compute_delta`: counts the inserts, updates (renames) and deletes (for the log; not stored).
5. `apply_changes`: applies them in **one transaction** under an advisory lock that serializes all runs.
6. `publish_metrics` (always runs): CloudWatch metrics, `SyncSuccess=0` if a step failed.
7. `cleanup_staging` (teardown, always runs): drops this run's staging tables.
8. `fail_if_sync_failed` (watcher): fails the run when any step or the publishing failed, so a
   metrics task that always runs can never turn a failed sync into a green run. It is skipped otherwise.

## Manual runs (Trigger DAG form or REST API)
- `dry_run`: compute the delta and record it in the run history (`applied = false`); change nothing.
- `lookback_minutes`: window length for this run only.
- `device_ids`: limit the run to these devices; nothing outside them is inserted or deleted.
- `allow_mass_delete`: accept, for this run, what the mass-delete and stale-measurements guards block.
- `force_apply`: apply a window older than the newest applied one.

## Guards (the run changes nothing when one trips)
- Mass delete: more than `DEVICE_SYNC_MAX_DELETE_FRACTION` (0.25) of a table of at least
  `DEVICE_SYNC_MASS_DELETE_MIN_ROWS` (100) rows would be deleted: `apply_changes` fails, not retried,
  metric `MassDeleteBlocked=1`. Check the sources; if right, trigger with `allow_mass_delete`.
- Stale measurements: no measurement of any active device in the window while the table is not empty:
  `apply_changes` fails with "measurements are stale" and the newest measurement time. Fix the pipeline.
- Forward only: a run whose window ends before the newest applied window (backfills, late retries)
  records its delta in the run history and applies nothing (`OlderWindowNotApplied=1`); `force_apply`
  overrides.

## When a task fails
- Retries (exponential backoff) cover transient faults (a cancelled statement included). Errors a retry
  cannot fix (missing table or column, missing privilege, a statement timeout) fail at once: fix the
  database or the `DEVICE_SYNC_*` configuration, then clear the run from `discover_active_devices`. The
  run history marks a run failed only once a step has failed for good.
- `discover_active_devices` says the window ends after the database's now(): the logical date is in the
  future; run it for a past or current time (or fix the clocks).
- `aggregate_recent_measurements` slow or cancelled by the statement timeout: its log says "window scan"
  when the recommended index `(device_id, parameter_id, time)` is missing; create it (README, Performance).
- `resolve_parameter_names` says a shard's staging table is missing: `DEVICE_SYNC_AGGREGATION_SHARDS`
  changed during the run; clear the run from `discover_active_devices`.
- Nothing is half-applied: `apply_changes` commits all of its changes or none.
- `publish_metrics` failing means CloudWatch was unreachable (each call is bounded by
  `DEVICE_SYNC_CLOUDWATCH_TIMEOUT_SECONDS`, not retried by Airflow); the data change is already committed
  and the run is marked failed so that someone looks. The next run works as usual.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial

from airflow.sdk import CronTriggerTimetable, Param, TriggerRule, chain, dag, task, teardown

from device_sync import tasks
from device_sync.config import load_settings

settings = load_settings()


@dag(
    dag_id="device_parameter_sync",
    doc_md=__doc__,
    schedule=CronTriggerTimetable(
        settings.schedule, timezone="UTC", interval=timedelta(minutes=settings.lookback_minutes)
    ),
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
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
            maximum=tasks.MAX_LOOKBACK_MINUTES,
            title="Lookback (minutes)",
            description=f"Window length for this run only. Empty: {settings.lookback_minutes} (configured).",
        ),
        "device_ids": Param(
            None,
            type=["null", "array"],
            items={"type": "string", "minLength": 1, "maxLength": 256},
            minItems=1,
            maxItems=tasks.MAX_DEVICE_IDS,
            title="Device ids",
            description="Limit the run to these devices: nothing outside them is inserted or deleted. Empty: all.",
        ),
    },
    tags=["device-sync", "iot", settings.stage],
    default_args={
        "owner": "iot-data-platform",
        "retries": settings.retries,
        "retry_delay": timedelta(seconds=settings.retry_delay_seconds),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=10),
        "execution_timeout": timedelta(minutes=settings.task_timeout_minutes),
    },
)
def device_parameter_sync() -> None:
    # A step that failed for good (not an attempt a retry may fix) marks the run failed in the run history.
    step = partial(task, on_failure_callback=tasks.record_step_failure)
    steps = [
        step(tasks.discover_active_devices)(),
        # One mapped task per shard of the active devices (DEVICE_SYNC_AGGREGATION_SHARDS, default 1).
        step(tasks.aggregate_recent_measurements, doc_md=tasks.aggregate_recent_measurements.__doc__).expand(
            shard=list(range(settings.aggregation_shards))
        ),
        step(tasks.resolve_parameter_names)(),
        step(tasks.compute_delta)(),
        step(tasks.apply_changes)(),
    ]
    # No task retries: the CloudWatch client retries once within DEVICE_SYNC_CLOUDWATCH_TIMEOUT_SECONDS, so an
    # outage costs the run seconds and does not hold its staging tables (and the next run) for minutes.
    publish = task(tasks.publish_metrics, trigger_rule=TriggerRule.ALL_DONE, retries=0)()
    chain(*steps, publish, teardown(tasks.cleanup_staging)())
    # publish_metrics always runs, so on its own it would turn a failed sync into a green run;
    # the watcher fails the run whenever a step or the publishing failed.
    [*steps, publish] >> task(tasks.fail_if_sync_failed, trigger_rule=TriggerRule.ONE_FAILED, retries=0)()


device_parameter_sync_dag = device_parameter_sync()

if __name__ == "__main__":
    device_parameter_sync_dag.test()
