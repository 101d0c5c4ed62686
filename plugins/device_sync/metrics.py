"""The one metrics publisher: a run's summary to CloudWatch, through the amazon provider's AwsBaseHook.

Every AWS client of the package (CloudWatch here; S3 and MWAA for ``scripts/deploy.py``) comes from
:func:`aws_client`, so every AWS call it makes is bounded: without it botocore waits 60 s to connect and 60 s
per read, with retries (185 s for one publish against an endpoint that accepts connections and never answers).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 10  # the default of DEVICE_SYNC_CLOUDWATCH_TIMEOUT_SECONDS

# Metric name -> (unit, key in the run summary).
METRICS: dict[str, tuple[str, str]] = {
    "ActiveDevices": ("Count", "active_devices"),
    "ObservedPairs": ("Count", "observed_pairs"),
    "RowsInserted": ("Count", "inserted"),
    "RowsDeleted": ("Count", "deleted"),
    "RowsUpdated": ("Count", "updated"),
    "RowsSkipped": ("Count", "skipped"),
    "SyncDurationSeconds": ("Seconds", "duration_seconds"),
    "SyncSuccess": ("None", "success"),
    # 1 when a safety guard kept the run from applying, else 0 (see docs/runbook.md, Safety guards).
    "MassDeleteBlocked": ("Count", "guard_mass_delete"),
    "StaleMeasurementsBlocked": ("Count", "guard_stale_measurements"),
    "OlderWindowNotApplied": ("Count", "guard_older_window"),
}


@dataclass(frozen=True)
class MetricDatum:
    name: str
    value: float
    unit: str


def metric_data(summary: Mapping[str, Any]) -> list[MetricDatum]:
    """The run's metrics; a count the run never reached (an upstream step failed) is left out."""
    data = []
    for name, (unit, key) in METRICS.items():
        value = summary.get(key)
        if value is not None:
            data.append(MetricDatum(name=name, value=float(value), unit=unit))
    return data


def aws_client(service: str, aws_conn_id: str, *, timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS) -> Any:
    """A boto3 client of ``service`` (``"cloudwatch"``, ``"s3"``, ``"mwaa"``, ...) of the Airflow connection whose
    every call is bounded.

    Each attempt waits at most ``timeout_seconds`` to connect and as long for each read, and a call makes at
    most two attempts (botocore's standard retry mode, which also retries throttling), so one call gives up
    after about 2 x (connect + read) timeouts plus a short backoff. A botocore config passed to AwsBaseHook
    replaces the connection's extra ``config_kwargs`` whole, so they are merged here: the connection keeps
    its other client settings (proxies, signature version, ...) and these bounds win over its own.
    """
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
    from botocore.config import Config

    bounded = Config(
        connect_timeout=timeout_seconds,
        read_timeout=timeout_seconds,
        retries={"total_max_attempts": 2, "mode": "standard"},
    )
    from_connection = AwsBaseHook(aws_conn_id=aws_conn_id, client_type=service).conn_config.botocore_config
    config = from_connection.merge(bounded) if from_connection is not None else bounded
    return AwsBaseHook(aws_conn_id=aws_conn_id, client_type=service, config=config).get_conn()


def cloudwatch_client(aws_conn_id: str, *, timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS) -> Any:
    """A boto3 CloudWatch client of the Airflow connection whose every call is bounded (see :func:`aws_client`)."""
    return aws_client("cloudwatch", aws_conn_id, timeout_seconds=timeout_seconds)


def publish(
    summary: Mapping[str, Any],
    *,
    aws_conn_id: str,
    namespace: str,
    stage: str,
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS,
) -> list[MetricDatum]:
    """Send the run's metrics, each with a ``Stage`` dimension, in one ``PutMetricData`` call.

    ``timeout_seconds`` bounds the call (see :func:`cloudwatch_client`); pass
    ``settings.cloudwatch_timeout_seconds``. An unreachable or silent endpoint raises botocore's
    ``EndpointConnectionError``/``ConnectTimeoutError``/``ReadTimeoutError``, which name the endpoint URL.
    """
    data = metric_data(summary)
    timestamp = datetime.now(UTC)
    client = cloudwatch_client(aws_conn_id, timeout_seconds=timeout_seconds)
    client.put_metric_data(
        Namespace=namespace,
        MetricData=[
            {
                "MetricName": datum.name,
                "Dimensions": [{"Name": "Stage", "Value": stage}],
                "Timestamp": timestamp,
                "Value": datum.value,
                "Unit": datum.unit,
            }
            for datum in data
        ],
    )
    log.info(
        "Published %d metrics to CloudWatch namespace %s: %s",
        len(data),
        namespace,
        ", ".join(f"{d.name}={d.value:g}" for d in data),
    )
    return data


def read_back(client: Any, *, namespace: str, stage: str, since: datetime, until: datetime) -> dict[str, float]:
    """Sum of each device-sync metric of ``stage`` between two times (for the demo and the tests)."""
    sums: dict[str, float] = {}
    for name in METRICS:
        response = client.get_metric_statistics(
            Namespace=namespace,
            MetricName=name,
            Dimensions=[{"Name": "Stage", "Value": stage}],
            StartTime=since,
            EndTime=until,
            Period=60,
            Statistics=["Sum"],
        )
        points = response.get("Datapoints", [])
        if points:
            sums[name] = float(sum(point["Sum"] for point in points))
    return sums
