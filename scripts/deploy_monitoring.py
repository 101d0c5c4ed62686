"""Deploy device-sync's CloudWatch alarms and dashboard for one stage (idempotent).

    python scripts/deploy_monitoring.py [--stage dev|prod] [--alarm-action ARN ...] [--dry-run]

The stage is ``--stage`` or else ``DEVICE_SYNC_STAGE`` (default ``dev``); every other setting comes from the
same ``DEVICE_SYNC_*`` variables and stage file as the DAG, plus ``DEVICE_SYNC_ALARM_MISSED_INTERVALS``
(default 3) and ``DEVICE_SYNC_ALARM_MAX_DELETES`` (default 1000). AWS is reached through the Airflow
connection ``DEVICE_SYNC_AWS_CONN_ID`` (default ``aws_default``, e.g. ``AIRFLOW_CONN_AWS_DEFAULT``), which
needs ``cloudwatch:PutMetricAlarm``, ``cloudwatch:DescribeAlarms`` and ``cloudwatch:PutDashboard``.
Every call waits at most ``DEVICE_SYNC_CLOUDWATCH_TIMEOUT_SECONDS`` (default 10) to connect and per read, two
attempts at most. ``--alarm-action`` (repeatable, e.g. an SNS topic ARN) is notified on ALARM and on OK; a
deploy without it removes actions deployed earlier, as the alarms are replaced whole. ``--dry-run`` prints
the definitions as JSON and calls nothing (the dashboard's alarm ARNs then carry the placeholder account
``ACCOUNT_ID``).
Exit status: 0 deployed (or dry run), 2 invalid configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins"))

from device_sync import metrics, monitoring  # noqa: E402
from device_sync.config import STAGES, ConfigError, load_settings  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="deploy_monitoring.py", description="Deploy device-sync's CloudWatch alarms and dashboard for a stage."
    )
    parser.add_argument("--stage", choices=STAGES, help="stage to deploy (default: DEVICE_SYNC_STAGE, else dev)")
    parser.add_argument(
        "--alarm-action",
        action="append",
        default=[],
        metavar="ARN",
        help="notified when an alarm goes to ALARM or back to OK (repeatable), e.g. an SNS topic ARN",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the definitions as JSON; call nothing")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.stage:
        os.environ["DEVICE_SYNC_STAGE"] = args.stage
    try:
        settings = load_settings()
        definitions = monitoring.alarm_definitions(settings, alarm_actions=args.alarm_action)
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or monitoring.DEFAULT_REGION
        body = monitoring.dashboard_body(settings, region=region)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    if args.dry_run:
        print(
            json.dumps(
                {
                    "stage": settings.stage,
                    "alarms": definitions,
                    "dashboard": {"DashboardName": monitoring.dashboard_name(settings), "DashboardBody": body},
                },
                indent=2,
            )
        )
        return 0
    # The connection the DAG itself uses for its metrics, every call bounded like the DAG's.
    client = metrics.cloudwatch_client(settings.aws_conn_id, timeout_seconds=settings.cloudwatch_timeout_seconds)
    summary = monitoring.deploy(client, settings, alarm_actions=args.alarm_action)
    print(
        f"device-sync {settings.stage}: {len(summary['alarms'])} alarms and dashboard {summary['dashboard']!r} "
        f"deployed to CloudWatch ({client.meta.region_name}, namespace {settings.cloudwatch_namespace})"
    )
    for alarm in definitions:
        operator = "<" if alarm["ComparisonOperator"] == "LessThanThreshold" else ">"
        print(
            f"  alarm {alarm['AlarmName']}: {alarm['Statistic']}({alarm['MetricName']}) {operator} "
            f"{alarm['Threshold']:g} in {alarm['EvaluationPeriods']} x {alarm['Period']} s, "
            f"missing data {alarm['TreatMissingData']}"
        )
    print(f"  alarm actions: {', '.join(args.alarm_action) or 'none'}")
    for message in summary["dashboard_messages"]:
        print(f"  dashboard validation message: {message}")
    if summary["unmanaged"]:
        print(f"  left alone (same prefix, not defined here): {', '.join(summary['unmanaged'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
