"""CloudWatch alarms and a dashboard for one stage, as code.

Pure functions build the definitions from the settings (``alarm_definitions``, ``dashboard_body``);
``deploy`` puts them with a boto3 CloudWatch client and is idempotent (``PutMetricAlarm`` and ``PutDashboard``
replace what exists under the same name). ``scripts/deploy_monitoring.py`` is the command that runs it.

Three alarms per stage, all on the metrics ``device_sync.metrics`` publishes with the dimension ``Stage``:

``device-sync-<stage>-no-successful-sync``
    ``Maximum(SyncSuccess) < 1`` in each of the last N schedule intervals, missing data breaching: the DAG
    did not run, or every run failed, or its metrics never reached CloudWatch. The schedule interval is the
    schedule's *longest* gap over a year (``Settings.schedule_interval``), so an irregular schedule never alarms
    in its quiet times: ``0 9-17 * * 1-5`` alarms only after N x 64 hours (a weekend) without a success.
    ``/health`` counts missed fire times and is the prompt signal.
``device-sync-<stage>-sync-failed``
    ``Minimum(SyncSuccess) < 1`` in the last interval, missing data not breaching: a run failed.
``device-sync-<stage>-many-deletes``
    ``Sum(RowsDeleted) > threshold`` in the last interval, missing data not breaching.

Two settings of their own, read like every other through :mod:`device_sync.config` (a bad value is a
:class:`~device_sync.config.ConfigError` naming the variable):

``DEVICE_SYNC_ALARM_MISSED_INTERVALS`` (default 3, 1 ... 1440)
    N, the schedule intervals without a successful sync before the first alarm fires. N x interval must fit
    CloudWatch's evaluation window (7 days; 1 day for intervals under an hour), so 1440 (a day of one-minute
    intervals) is the most any schedule allows.
``DEVICE_SYNC_ALARM_MAX_DELETES`` (default 1000, 0 ... 10^9)
    The most deleted rows in one interval that are still normal.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from device_sync.config import ConfigError, Settings
from device_sync.metrics import METRICS

MISSED_INTERVALS_VARIABLE = "DEVICE_SYNC_ALARM_MISSED_INTERVALS"
MAX_DELETES_VARIABLE = "DEVICE_SYNC_ALARM_MAX_DELETES"

DEFAULT_REGION = "us-east-1"

# CloudWatch limits of a standard-resolution metric alarm (PutMetricAlarm): the period is a multiple of
# 60 s (10/20/30 s exist only for high-resolution metrics, which device-sync does not publish) and at most
# one day; Period x EvaluationPeriods is at most 7 days, and at most 1 day when the period is under 1 hour.
PERIOD_STEP_SECONDS = 60
MAX_PERIOD_SECONDS = 86_400
MAX_EVALUATION_SECONDS = 7 * 86_400
MAX_EVALUATION_SECONDS_SHORT_PERIOD = 86_400
SHORT_PERIOD_SECONDS = 3_600

RUNBOOK = "Runbook: docs/runbook.md (also the DAG's documentation in the Airflow UI)."

# The four change counters, graphed together.
CHANGE_METRICS = ("RowsInserted", "RowsDeleted", "RowsUpdated", "RowsSkipped")


def prefix(settings: Settings) -> str:
    """The prefix of every alarm of the stage, ``device-sync-<stage>-``."""
    return f"device-sync-{settings.stage}-"


def dashboard_name(settings: Settings) -> str:
    """``device-sync-<stage>`` (dashboard names allow letters, digits, ``-`` and ``_``)."""
    return f"device-sync-{settings.stage}"


def alarm_period_seconds(settings: Settings) -> int:
    """The alarm period: the schedule interval (its longest gap) rounded *up* to whole minutes, capped at one day.

    Rounding up (never down) keeps at least one scheduled run in every period, so a healthy DAG never
    leaves an empty, breaching period. A schedule slower than daily gets one-day periods; the
    "no successful sync" alarm then evaluates more of them (see :func:`missed_sync_evaluation_periods`).
    """
    seconds = settings.schedule_interval.total_seconds()
    rounded = math.ceil(seconds / PERIOD_STEP_SECONDS) * PERIOD_STEP_SECONDS
    return int(min(max(rounded, PERIOD_STEP_SECONDS), MAX_PERIOD_SECONDS))


def missed_intervals(settings: Settings) -> int:
    """N of the "no successful sync" alarm, ``DEVICE_SYNC_ALARM_MISSED_INTERVALS`` (default 3)."""
    return settings.alarm_missed_intervals


def max_deletes(settings: Settings) -> int:
    """Threshold of the "many deletes" alarm, ``DEVICE_SYNC_ALARM_MAX_DELETES`` (default 1000)."""
    return settings.alarm_max_deletes


def missed_sync_evaluation_periods(settings: Settings) -> int:
    """Periods the "no successful sync" alarm evaluates: N intervals' worth, rounded up to whole periods.

    That is N when the period is the interval (intervals up to a day: 5-field crons fire on whole minutes, so
    the interval is whole minutes too), and more one-day periods for a longer interval (64 h, N=2: 6 days).
    Raises ConfigError when that window exceeds what CloudWatch accepts (7 days; 1 day for periods under
    an hour), naming ``DEVICE_SYNC_ALARM_MISSED_INTERVALS`` and the largest N the schedule allows.
    """
    intervals = missed_intervals(settings)
    period = alarm_period_seconds(settings)
    interval = int(settings.schedule_interval.total_seconds())
    evaluation_periods = math.ceil(intervals * interval / period)
    limit = MAX_EVALUATION_SECONDS_SHORT_PERIOD if period < SHORT_PERIOD_SECONDS else MAX_EVALUATION_SECONDS
    if evaluation_periods * period > limit:
        largest = (limit // period) * period // interval  # the largest N whose periods fit in the limit
        raise ConfigError(
            f"Invalid device-sync configuration: {MISSED_INTERVALS_VARIABLE}: {intervals} intervals of the schedule "
            f"{settings.schedule!r} ({evaluation_periods} x {period} s) exceed CloudWatch's alarm evaluation limit of "
            f"{limit} s; with this schedule it must be <= {largest}"
            + ("" if largest >= 1 else " (the schedule itself is too slow for this alarm)")
            + f" (got {intervals})"
        )
    return evaluation_periods


def _interval_text(settings: Settings) -> str:
    """The schedule interval for people: ``1 h``, ``15 min``, ``1 d``."""
    seconds = int(settings.schedule_interval.total_seconds())
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def alarm_definitions(settings: Settings, *, alarm_actions: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The stage's alarms, each a dict of keyword arguments for boto3 ``put_metric_alarm``.

    ``alarm_actions`` (for example an SNS topic ARN) are notified when an alarm goes to ALARM and back to OK.
    Reads and validates ``DEVICE_SYNC_ALARM_MISSED_INTERVALS`` and ``DEVICE_SYNC_ALARM_MAX_DELETES``.
    """
    stage = settings.stage
    period = alarm_period_seconds(settings)
    intervals = missed_intervals(settings)
    evaluation_periods = missed_sync_evaluation_periods(settings)
    deletes = max_deletes(settings)
    interval = _interval_text(settings)
    common: dict[str, Any] = {
        "Namespace": settings.cloudwatch_namespace,
        "Dimensions": [{"Name": "Stage", "Value": stage}],
        "ActionsEnabled": True,
        "AlarmActions": list(alarm_actions),
        "OKActions": list(alarm_actions),
        "InsufficientDataActions": [],
    }
    return [
        {
            "AlarmName": f"{prefix(settings)}no-successful-sync",
            "AlarmDescription": (
                f"device-sync {stage}: no successful device_parameter_sync run (SyncSuccess=1) for {intervals} "
                f"schedule intervals of {interval} (the longest gap of {settings.schedule}); missing data counts as "
                "breaching. "
                "The DAG is paused, not scheduled (scheduler down, import error), every run fails, or "
                "publish_metrics cannot reach CloudWatch. Do: check the DAG is unpaused and runs in Airflow, "
                "`airflow dags list-import-errors`, the last runs' failed tasks; fix, then clear the latest run. "
                + RUNBOOK
            ),
            "MetricName": "SyncSuccess",
            "Statistic": "Maximum",
            "Period": period,
            "EvaluationPeriods": evaluation_periods,
            "DatapointsToAlarm": evaluation_periods,
            "Threshold": 1.0,
            "ComparisonOperator": "LessThanThreshold",
            "TreatMissingData": "breaching",
            **common,
        },
        {
            "AlarmName": f"{prefix(settings)}sync-failed",
            "AlarmDescription": (
                f"device-sync {stage}: a device_parameter_sync run failed (SyncSuccess=0) in the last interval "
                f"of {interval}. A step failed after its retries; apply_changes did not complete, so that run "
                "changed nothing (one transaction). Do: open the failed run in Airflow, read the failed task's log and "
                "follow its Runbook row; clear the run once fixed (the next scheduled run also catches up). " + RUNBOOK
            ),
            "MetricName": "SyncSuccess",
            "Statistic": "Minimum",
            "Period": period,
            "EvaluationPeriods": 1,
            "DatapointsToAlarm": 1,
            "Threshold": 1.0,
            "ComparisonOperator": "LessThanThreshold",
            "TreatMissingData": "notBreaching",
            **common,
        },
        {
            "AlarmName": f"{prefix(settings)}many-deletes",
            "AlarmDescription": (
                f"device-sync {stage}: more than {deletes} rows deleted from iot_data.device_parameters in one "
                f"interval of {interval} (RowsDeleted). Either many devices went inactive or quiet, or the "
                "source data is incomplete (a late or broken measurements load, devices wrongly set inactive). "
                "Do: compare ActiveDevices/ObservedPairs on the dashboard with earlier runs and check the "
                "sources; if the input was wrong, fix it and clear the latest run: the sync re-inserts the rows. "
                f"Threshold: {MAX_DELETES_VARIABLE}. " + RUNBOOK
            ),
            "MetricName": "RowsDeleted",
            "Statistic": "Sum",
            "Period": period,
            "EvaluationPeriods": 1,
            "DatapointsToAlarm": 1,
            "Threshold": float(deletes),
            "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "notBreaching",
            **common,
        },
    ]


def alarm_arn(name: str, *, region: str, account_id: str) -> str:
    return f"arn:aws:cloudwatch:{region}:{account_id}:alarm:{name}"


def dashboard_body(
    settings: Settings,
    *,
    region: str = DEFAULT_REGION,
    alarm_arns: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The stage's dashboard (CloudWatch dashboard body JSON, as a dict): every published metric of the stage.

    ``alarm_arns`` are shown in the alarm-status widget; ``deploy`` passes the real ones. Without them the
    ARNs are built with the placeholder account ``ACCOUNT_ID`` (for ``--dry-run``).
    """
    namespace = settings.cloudwatch_namespace
    stage = settings.stage
    period = alarm_period_seconds(settings)
    if alarm_arns is None:
        alarm_arns = [
            alarm_arn(definition["AlarmName"], region=region, account_id="ACCOUNT_ID")
            for definition in alarm_definitions(settings)
        ]

    def metric(name: str, stat: str, label: str | None = None) -> list[Any]:
        return [namespace, name, "Stage", stage, {"stat": stat, "label": label or name}]

    def graph(title: str, metrics: list[list[Any]], *, x: int, y: int, width: int = 12, **extra: Any) -> dict[str, Any]:
        return {
            "type": "metric",
            "x": x,
            "y": y,
            "width": width,
            "height": 6,
            "properties": {
                "title": title,
                "view": "timeSeries",
                "stacked": False,
                "region": region,
                "period": period,
                "metrics": metrics,
                **extra,
            },
        }

    widgets: list[dict[str, Any]] = [
        {
            "type": "alarm",
            "x": 0,
            "y": 0,
            "width": 24,
            "height": 3,
            "properties": {
                "title": f"device-sync {stage}: alarms",
                "alarms": list(alarm_arns),
                "sortBy": "stateUpdatedTimestamp",
            },
        },
        graph(
            "Sync success (1 = every run succeeded, 0 = a run failed, gap = no run)",
            [metric("SyncSuccess", "Minimum", "SyncSuccess (min)")],
            x=0,
            y=3,
            yAxis={"left": {"min": 0, "max": 1}},
        ),
        graph(
            "Rows changed per interval",
            [metric(name, "Sum") for name in CHANGE_METRICS],
            x=12,
            y=3,
            yAxis={"left": {"min": 0}},
            annotations={"horizontal": [{"label": "many-deletes alarm", "value": float(max_deletes(settings))}]},
        ),
        graph(
            "Sync duration (s, time spent in the five steps)",
            [
                metric("SyncDurationSeconds", "Maximum", "SyncDurationSeconds (max)"),
                metric("SyncDurationSeconds", "Average", "SyncDurationSeconds (avg)"),
            ],
            x=0,
            y=9,
            yAxis={"left": {"min": 0}},
        ),
        graph(
            "Active devices and observed (device, parameter) pairs",
            [metric("ActiveDevices", "Maximum"), metric("ObservedPairs", "Maximum")],
            x=12,
            y=9,
            yAxis={"left": {"min": 0}},
        ),
        graph(
            "Safety guards (runs a guard kept from applying)",
            [
                metric("MassDeleteBlocked", "Sum"),
                metric("StaleMeasurementsBlocked", "Sum"),
                metric("OlderWindowNotApplied", "Sum"),
            ],
            x=0,
            y=15,
            width=24,
            yAxis={"left": {"min": 0}},
        ),
    ]
    graphed = {row[1] for widget in widgets if widget["type"] == "metric" for row in widget["properties"]["metrics"]}
    missing = set(METRICS) - graphed
    if missing:  # a metric added to metrics.METRICS must get a place on the dashboard
        raise RuntimeError(f"dashboard does not graph {sorted(missing)}")
    return {
        "start": f"-PT{max(24, 3 * math.ceil(period / 3600))}H",
        "periodOverride": "inherit",
        "widgets": widgets,
    }


def deploy(client: Any, settings: Settings, alarm_actions: list[str] | None = None) -> dict[str, Any]:
    """Put every alarm of the stage, then its dashboard; running it again changes nothing.

    ``client`` is a boto3 CloudWatch client. Returns the names deployed, the dashboard's validation
    messages (if any), and ``unmanaged``: other alarms under the stage's prefix, which it leaves alone.
    Needs ``cloudwatch:PutMetricAlarm``, ``cloudwatch:DescribeAlarms`` and ``cloudwatch:PutDashboard``.
    """
    definitions = alarm_definitions(settings, alarm_actions=alarm_actions or ())
    region = str(getattr(getattr(client, "meta", None), "region_name", None) or DEFAULT_REGION)
    dashboard_body(settings, region=region)  # validate everything before the first call to AWS
    for definition in definitions:
        client.put_metric_alarm(**definition)
    names = [definition["AlarmName"] for definition in definitions]
    existing = _alarms_with_prefix(client, prefix(settings))
    arns = [existing[name] for name in names]
    body = dashboard_body(settings, region=region, alarm_arns=arns)
    response = client.put_dashboard(DashboardName=dashboard_name(settings), DashboardBody=json.dumps(body))
    return {
        "stage": settings.stage,
        "alarms": names,
        "dashboard": dashboard_name(settings),
        "dashboard_messages": [
            message.get("Message", "") for message in response.get("DashboardValidationMessages", [])
        ],
        "unmanaged": sorted(set(existing) - set(names)),
    }


def _alarms_with_prefix(client: Any, alarm_prefix: str) -> dict[str, str]:
    """Name -> ARN of every metric alarm whose name starts with ``alarm_prefix``."""
    found: dict[str, str] = {}
    for page in client.get_paginator("describe_alarms").paginate(AlarmNamePrefix=alarm_prefix):
        for alarm in page.get("MetricAlarms", []):
            found[alarm["AlarmName"]] = alarm["AlarmArn"]
    return found
