"""The CloudWatch alarms and dashboard, deployed to a real moto server over HTTP and read back.

moto stores alarms and dashboards but does not evaluate alarms, so these tests check what is deployed
(names, metrics, dimensions, thresholds, periods, missing-data treatment, dashboard widgets), not alarm states.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from typing import Any

import boto3
import pytest

from conftest import REPO
from device_sync import monitoring
from device_sync.config import ConfigError, Settings, load_settings
from device_sync.metrics import METRICS

NAMESPACE = "IoT/DeviceParameterSync"
SNS_TOPIC = "arn:aws:sns:us-east-1:123456789012:device-sync-oncall"


@pytest.fixture
def cloudwatch(moto_server: str) -> Any:
    """A CloudWatch client of the moto server, emptied first."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST"))
    return boto3.client("cloudwatch", endpoint_url=moto_server, region_name="us-east-1")


def settings_of(monkeypatch: pytest.MonkeyPatch, stage: str, **variables: str) -> Settings:
    monkeypatch.setenv("DEVICE_SYNC_STAGE", stage)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return load_settings()


def alarms_of(cloudwatch: Any, stage: str) -> dict[str, dict[str, Any]]:
    response = cloudwatch.describe_alarms(AlarmNamePrefix=f"device-sync-{stage}-")
    return {alarm["AlarmName"]: alarm for alarm in response["MetricAlarms"]}


def dashboard_of(cloudwatch: Any, stage: str) -> dict[str, Any]:
    response = cloudwatch.get_dashboard(DashboardName=f"device-sync-{stage}")
    body: dict[str, Any] = json.loads(response["DashboardBody"])
    return body


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_deploy_puts_the_three_alarms_of_the_stage(
    cloudwatch: Any, monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    summary = monitoring.deploy(cloudwatch, settings_of(monkeypatch, stage))

    alarms = alarms_of(cloudwatch, stage)
    names = {f"device-sync-{stage}-{kind}" for kind in ("no-successful-sync", "sync-failed", "many-deletes")}
    assert set(alarms) == names
    assert summary == {
        "stage": stage,
        "alarms": sorted(names, key=list(alarms).index),
        "dashboard": f"device-sync-{stage}",
        "dashboard_messages": [],
        "unmanaged": [],
    }
    for alarm in alarms.values():
        assert alarm["Namespace"] == NAMESPACE
        assert alarm["Dimensions"] == [{"Name": "Stage", "Value": stage}]
        assert alarm["Period"] == 3600  # the default hourly schedule
        assert alarm["ActionsEnabled"] is True
        assert alarm["AlarmActions"] == []
        assert 0 < len(alarm["AlarmDescription"]) <= 1024  # CloudWatch's limit
        assert f"device-sync {stage}" in alarm["AlarmDescription"]
        assert "Do:" in alarm["AlarmDescription"]

    missed = alarms[f"device-sync-{stage}-no-successful-sync"]
    assert (missed["MetricName"], missed["Statistic"]) == ("SyncSuccess", "Maximum")
    assert (missed["ComparisonOperator"], missed["Threshold"]) == ("LessThanThreshold", 1.0)
    assert (missed["EvaluationPeriods"], missed["DatapointsToAlarm"]) == (3, 3)
    assert missed["TreatMissingData"] == "breaching"

    failed = alarms[f"device-sync-{stage}-sync-failed"]
    assert (failed["MetricName"], failed["Statistic"]) == ("SyncSuccess", "Minimum")
    assert (failed["ComparisonOperator"], failed["Threshold"]) == ("LessThanThreshold", 1.0)
    assert (failed["EvaluationPeriods"], failed["DatapointsToAlarm"]) == (1, 1)
    assert failed["TreatMissingData"] == "notBreaching"

    deletes = alarms[f"device-sync-{stage}-many-deletes"]
    assert (deletes["MetricName"], deletes["Statistic"]) == ("RowsDeleted", "Sum")
    assert (deletes["ComparisonOperator"], deletes["Threshold"]) == ("GreaterThanThreshold", 1000.0)
    assert deletes["EvaluationPeriods"] == 1
    assert deletes["TreatMissingData"] == "notBreaching"


def test_dev_and_prod_live_side_by_side(cloudwatch: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monitoring.deploy(cloudwatch, settings_of(monkeypatch, "dev"))
    monitoring.deploy(cloudwatch, settings_of(monkeypatch, "prod", DEVICE_SYNC_ALARM_MAX_DELETES="5000"))

    assert len(cloudwatch.describe_alarms()["MetricAlarms"]) == 6
    assert alarms_of(cloudwatch, "dev")["device-sync-dev-many-deletes"]["Threshold"] == 1000.0
    assert alarms_of(cloudwatch, "prod")["device-sync-prod-many-deletes"]["Threshold"] == 5000.0
    listed = cloudwatch.list_dashboards(DashboardNamePrefix="device-sync-")["DashboardEntries"]
    assert sorted(entry["DashboardName"] for entry in listed) == ["device-sync-dev", "device-sync-prod"]


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_dashboard_graphs_every_published_metric_of_the_stage(
    cloudwatch: Any, monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    monitoring.deploy(cloudwatch, settings_of(monkeypatch, stage))

    body = dashboard_of(cloudwatch, stage)
    graphs = [widget for widget in body["widgets"] if widget["type"] == "metric"]
    rows = [row for widget in graphs for row in widget["properties"]["metrics"]]
    assert {row[1] for row in rows} == set(METRICS)
    for row in rows:
        assert row[0] == NAMESPACE
        assert row[2:4] == ["Stage", stage]
    for widget in graphs:
        assert widget["properties"]["region"] == "us-east-1"
        assert widget["properties"]["period"] == 3600
    titles = {row[1]: widget["properties"]["title"] for widget in graphs for row in widget["properties"]["metrics"]}
    assert len({titles[name] for name in ("RowsInserted", "RowsDeleted", "RowsUpdated", "RowsSkipped")}) == 1
    assert titles["ActiveDevices"] == titles["ObservedPairs"]
    assert len({titles["SyncSuccess"], titles["SyncDurationSeconds"], titles["RowsDeleted"]}) == 3

    (alarm_widget,) = [widget for widget in body["widgets"] if widget["type"] == "alarm"]
    arns = {alarm["AlarmArn"] for alarm in alarms_of(cloudwatch, stage).values()}
    assert set(alarm_widget["properties"]["alarms"]) == arns
    assert all(widget["x"] + widget["width"] <= 24 for widget in body["widgets"])


def test_redeploy_is_idempotent_and_replaces_actions(cloudwatch: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_of(monkeypatch, "prod")
    first = monitoring.deploy(cloudwatch, settings, alarm_actions=[SNS_TOPIC])
    alarms = alarms_of(cloudwatch, "prod")
    dashboard = dashboard_of(cloudwatch, "prod")
    assert all(alarm["AlarmActions"] == [SNS_TOPIC] == alarm["OKActions"] for alarm in alarms.values())

    second = monitoring.deploy(cloudwatch, settings, alarm_actions=[SNS_TOPIC])
    assert second == first
    again = alarms_of(cloudwatch, "prod")
    assert len(cloudwatch.describe_alarms()["MetricAlarms"]) == len(again) == 3
    ignore = {"AlarmConfigurationUpdatedTimestamp", "StateUpdatedTimestamp"}
    assert [{k: v for k, v in a.items() if k not in ignore} for a in again.values()] == [
        {k: v for k, v in a.items() if k not in ignore} for a in alarms.values()
    ]
    assert dashboard_of(cloudwatch, "prod") == dashboard
    assert len(cloudwatch.list_dashboards()["DashboardEntries"]) == 1

    # The alarms are code: a deploy without actions removes the earlier ones.
    monitoring.deploy(cloudwatch, settings)
    assert all(alarm["AlarmActions"] == [] for alarm in alarms_of(cloudwatch, "prod").values())


def test_other_alarms_under_the_prefix_are_reported_and_left_alone(
    cloudwatch: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cloudwatch.put_metric_alarm(
        AlarmName="device-sync-prod-hand-made",
        Namespace=NAMESPACE,
        MetricName="RowsSkipped",
        Dimensions=[{"Name": "Stage", "Value": "prod"}],
        Statistic="Sum",
        Period=3600,
        EvaluationPeriods=1,
        Threshold=10.0,
        ComparisonOperator="GreaterThanThreshold",
    )
    summary = monitoring.deploy(cloudwatch, settings_of(monkeypatch, "prod"))
    assert summary["unmanaged"] == ["device-sync-prod-hand-made"]
    assert len(alarms_of(cloudwatch, "prod")) == 4
    assert "device-sync-prod-hand-made" not in str(dashboard_of(cloudwatch, "prod"))


@pytest.mark.parametrize(
    ("schedule", "missed", "period", "evaluation_periods"),
    [
        ("*/15 * * * *", "4", 900, 4),  # every 15 min: 4 periods of 15 min
        ("* * * * *", "1440", 60, 1440),  # the longest window CloudWatch allows under 1 h periods: 1 day
        ("30 2 * * *", "3", 86_400, 3),  # daily
        ("0 9,17 * * *", "2", 57_600, 2),  # irregular: the longest gap (16 h) is the interval
        ("0 0 * * 0", "1", 86_400, 7),  # weekly: periods capped at 1 day, 7 of them make the interval
        # Irregular: the longest gap over a year is the interval, here Friday 17:00 to Monday 09:00 (64 h):
        # 2 x 64 h = 5.3 days, 6 one-day periods.
        ("0 9-17 * * 1-5", "2", 86_400, 6),
        ("0 9-17 * * 1-5", "1", 86_400, 3),
        ("*/30 8-18 * * *", "3", 48_600, 3),  # 18:30 to 08:00 the next day: 13.5 h
        ("0 6,18 * * 1-5", "1", 86_400, 3),  # Friday 18:00 to Monday 06:00: 60 h
        ("@daily", "7", 86_400, 7),  # the longest window CloudWatch allows: 7 days
    ],
)
def test_missed_sync_window_follows_the_schedule(
    cloudwatch: Any,
    monkeypatch: pytest.MonkeyPatch,
    schedule: str,
    missed: str,
    period: int,
    evaluation_periods: int,
) -> None:
    settings = settings_of(monkeypatch, "dev", DEVICE_SYNC_SCHEDULE=schedule, DEVICE_SYNC_ALARM_MISSED_INTERVALS=missed)
    monitoring.deploy(cloudwatch, settings)

    alarms = alarms_of(cloudwatch, "dev")
    missed_alarm = alarms["device-sync-dev-no-successful-sync"]
    assert (missed_alarm["Period"], missed_alarm["EvaluationPeriods"]) == (period, evaluation_periods)
    assert missed_alarm["DatapointsToAlarm"] == evaluation_periods
    for alarm in alarms.values():
        assert alarm["Period"] % 60 == 0
        assert alarm["Period"] <= 86_400
        limit = 86_400 if alarm["Period"] < 3600 else 7 * 86_400
        assert alarm["Period"] * alarm["EvaluationPeriods"] <= limit
    assert alarms["device-sync-dev-sync-failed"]["Period"] == period
    assert dashboard_of(cloudwatch, "dev")["widgets"][1]["properties"]["period"] == period


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DEVICE_SYNC_ALARM_MISSED_INTERVALS", "0"),
        ("DEVICE_SYNC_ALARM_MISSED_INTERVALS", "-2"),
        ("DEVICE_SYNC_ALARM_MISSED_INTERVALS", "three"),
        ("DEVICE_SYNC_ALARM_MISSED_INTERVALS", "2.5"),
        ("DEVICE_SYNC_ALARM_MISSED_INTERVALS", "200"),  # 200 h exceed CloudWatch's 7-day evaluation window
        ("DEVICE_SYNC_ALARM_MAX_DELETES", "-1"),
        ("DEVICE_SYNC_ALARM_MAX_DELETES", "1e3"),
        ("DEVICE_SYNC_ALARM_MAX_DELETES", "lots"),
    ],
)
def test_invalid_alarm_settings_raise_config_error_and_deploy_nothing(
    cloudwatch: Any, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    # Out of the setting's own bounds: refused when the settings are read, naming the variable; within
    # them but too long for CloudWatch's evaluation window with this schedule: refused by the alarms.
    try:
        settings = settings_of(monkeypatch, "prod", **{variable: value})
    except ConfigError as error:
        assert variable in str(error)
    else:
        with pytest.raises(ConfigError, match=variable):
            monitoring.alarm_definitions(settings)
        with pytest.raises(ConfigError, match=variable):
            monitoring.deploy(cloudwatch, settings)
    assert cloudwatch.describe_alarms()["MetricAlarms"] == []
    assert cloudwatch.list_dashboards()["DashboardEntries"] == []


@pytest.mark.parametrize(
    ("schedule", "missed", "largest"),
    [
        ("0 0 * * 0", "3", 1),  # weekly, N=3 -> 21 days
        ("0 9-17 * * 1-5", "3", 2),  # the default N: 3 x 64 h = 8 days
        ("0 9 * * 1-5", "3", 2),  # Friday to Monday 09:00: 72 h
        ("*/15 * * * *", "97", 96),  # 15-minute periods: at most one day
        ("0 0 1 * *", "1", 0),  # monthly: too slow for the alarm at all
    ],
)
def test_schedule_too_slow_for_the_missed_window_names_the_variable_and_the_largest_n(
    monkeypatch: pytest.MonkeyPatch, schedule: str, missed: str, largest: int
) -> None:
    settings = settings_of(monkeypatch, "dev", DEVICE_SYNC_SCHEDULE=schedule, DEVICE_SYNC_ALARM_MISSED_INTERVALS=missed)
    with pytest.raises(ConfigError, match=rf"DEVICE_SYNC_ALARM_MISSED_INTERVALS.*must be <= {largest}\b"):
        monitoring.alarm_definitions(settings)
    if largest:
        monkeypatch.setenv("DEVICE_SYNC_ALARM_MISSED_INTERVALS", str(largest))
        settings = load_settings()
        (missed_alarm, *_) = monitoring.alarm_definitions(settings)
        window = missed_alarm["Period"] * missed_alarm["EvaluationPeriods"]
        assert window >= largest * settings.schedule_interval.total_seconds()
        assert window <= (86_400 if missed_alarm["Period"] < 3600 else 7 * 86_400)


@pytest.mark.parametrize(
    ("variable", "value", "accepted"),
    [
        ("DEVICE_SYNC_ALARM_MISSED_INTERVALS", "1" + "0" * 30, "less than or equal to 1440"),
        ("DEVICE_SYNC_ALARM_MISSED_INTERVALS", "1441", "less than or equal to 1440"),
        ("DEVICE_SYNC_ALARM_MISSED_INTERVALS", "9" * 5000, "DEVICE_SYNC_ALARM_MISSED_INTERVALS"),
        ("DEVICE_SYNC_ALARM_MAX_DELETES", "1" + "0" * 30, "less than or equal to 1000000000"),
        ("DEVICE_SYNC_ALARM_MAX_DELETES", "1000000001", "less than or equal to 1000000000"),
        ("DEVICE_SYNC_ALARM_MAX_DELETES", "-" + "1" * 30, "greater than or equal to 0"),
    ],
)
def test_far_out_alarm_settings_are_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, accepted: str
) -> None:
    with pytest.raises(ConfigError, match=variable) as error:
        settings_of(monkeypatch, "dev", **{variable: value})
    assert accepted in str(error.value)


def script(*args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **variables}  # AIRFLOW_CONN_AWS_DEFAULT points at moto (the moto_server fixture)
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "deploy_monitoring.py"), *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_script_deploys_through_the_airflow_connection(cloudwatch: Any) -> None:
    started = time.monotonic()
    result = script(
        "--stage", "prod", "--alarm-action", SNS_TOPIC, DEVICE_SYNC_STAGE="dev", DEVICE_SYNC_ALARM_MAX_DELETES="250"
    )
    assert result.returncode == 0, result.stderr
    assert "device-sync prod: 3 alarms and dashboard 'device-sync-prod' deployed" in result.stdout
    assert time.monotonic() - started < 60

    alarms = alarms_of(cloudwatch, "prod")
    assert set(alarms) == {
        "device-sync-prod-no-successful-sync",
        "device-sync-prod-sync-failed",
        "device-sync-prod-many-deletes",
    }
    assert alarms["device-sync-prod-many-deletes"]["Threshold"] == 250.0
    assert all(alarm["AlarmActions"] == [SNS_TOPIC] for alarm in alarms.values())
    assert all(alarm["Dimensions"] == [{"Name": "Stage", "Value": "prod"}] for alarm in alarms.values())
    assert alarms_of(cloudwatch, "dev") == {}
    assert dashboard_of(cloudwatch, "prod")["widgets"]


def test_the_script_dry_run_calls_nothing_and_bad_settings_exit_2(cloudwatch: Any) -> None:
    dry = script("--stage", "dev", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    printed = json.loads(dry.stdout)
    assert [alarm["AlarmName"] for alarm in printed["alarms"]] == [
        "device-sync-dev-no-successful-sync",
        "device-sync-dev-sync-failed",
        "device-sync-dev-many-deletes",
    ]
    assert printed["dashboard"]["DashboardName"] == "device-sync-dev"
    assert cloudwatch.describe_alarms()["MetricAlarms"] == []

    bad = script("--stage", "dev", DEVICE_SYNC_ALARM_MISSED_INTERVALS="0")
    assert bad.returncode == 2
    assert "DEVICE_SYNC_ALARM_MISSED_INTERVALS" in bad.stderr
    assert cloudwatch.describe_alarms()["MetricAlarms"] == []
