"""Metrics publishing over real sockets: bounded against endpoints that never answer or refuse, and working
against a real moto server.

Each test points an Airflow connection of its own (``AIRFLOW_CONN_<ID>``, restored afterwards) at the endpoint.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import BotoCoreError

from conftest import REPO
from device_sync import metrics

CONN_ID = "device_sync_test_cloudwatch"
SUMMARY = {"active_devices": 3, "observed_pairs": 7, "inserted": 2, "deleted": 1, "success": 1}


class SilentServer:
    """A TCP server on 127.0.0.1 that accepts connections and never reads nor writes a byte.

    It counts the connections (one per attempt of the client) and closes them all, and itself, at ``stop``
    or after ``lifetime`` seconds at the latest, whatever the test does.
    """

    def __init__(self, lifetime: float = 60) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = int(self.listener.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self.deadline = time.monotonic() + lifetime
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="silent-server", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            while not self.stopped.is_set() and time.monotonic() < self.deadline:
                try:
                    connection, _ = self.listener.accept()
                except TimeoutError:
                    continue
                self.accepted.append(connection)
        finally:
            for connection in self.accepted:
                connection.close()
            self.listener.close()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.stop()


@pytest.fixture
def refusing_port() -> int:
    """A loopback port nobody listens on: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def point_connection_at(monkeypatch: pytest.MonkeyPatch, endpoint: str, **config_kwargs: Any) -> None:
    extra: dict[str, Any] = {"region_name": "us-east-1", "endpoint_url": endpoint}
    if config_kwargs:
        extra["config_kwargs"] = config_kwargs
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps({"conn_type": "aws", "extra": extra}))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")  # no credential lookup (instance metadata) either
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


def publish(timeout_seconds: int) -> list[metrics.MetricDatum]:
    return metrics.publish(
        SUMMARY, aws_conn_id=CONN_ID, namespace="Test/DeviceSync", stage="dev", timeout_seconds=timeout_seconds
    )


@pytest.mark.parametrize(
    "config_kwargs",
    [{}, {"read_timeout": 600, "connect_timeout": 600, "retries": {"max_attempts": 10, "mode": "legacy"}}],
    ids=["plain connection", "connection asking for long timeouts"],
)
def test_publish_to_an_endpoint_that_never_answers_gives_up_in_two_attempts(
    monkeypatch: pytest.MonkeyPatch, silent_server: SilentServer, config_kwargs: dict[str, Any]
) -> None:
    endpoint = f"http://127.0.0.1:{silent_server.port}"
    point_connection_at(monkeypatch, endpoint, **config_kwargs)

    started = time.monotonic()
    with pytest.raises(BotoCoreError) as error:
        publish(timeout_seconds=1)
    elapsed = time.monotonic() - started

    assert elapsed < 10, f"{elapsed:.1f} s"
    assert endpoint in str(error.value)
    assert "timeout" in str(error.value).lower()
    assert len(silent_server.accepted) == 2  # two attempts, then it gives up


def test_publish_to_a_refusing_endpoint_fails_fast(monkeypatch: pytest.MonkeyPatch, refusing_port: int) -> None:
    endpoint = f"http://127.0.0.1:{refusing_port}"
    point_connection_at(monkeypatch, endpoint)

    started = time.monotonic()
    with pytest.raises(BotoCoreError) as error:
        publish(timeout_seconds=1)
    elapsed = time.monotonic() - started

    assert elapsed < 10, f"{elapsed:.1f} s"
    assert endpoint in str(error.value)


def test_the_client_keeps_the_connections_other_settings_and_the_bounds_win(monkeypatch: pytest.MonkeyPatch) -> None:
    point_connection_at(
        monkeypatch, "http://127.0.0.1:9", max_pool_connections=3, read_timeout=600, retries={"max_attempts": 9}
    )

    config = metrics.cloudwatch_client(CONN_ID, timeout_seconds=4).meta.config

    assert (config.connect_timeout, config.read_timeout) == (4, 4)
    assert config.retries == {"total_max_attempts": 2, "mode": "standard"}
    assert config.max_pool_connections == 3


def test_publish_to_moto_still_works(monkeypatch: pytest.MonkeyPatch, moto_server: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST"))
    point_connection_at(monkeypatch, moto_server)
    since = datetime.now(UTC) - timedelta(minutes=5)

    started = time.monotonic()
    published = publish(timeout_seconds=2)
    elapsed = time.monotonic() - started

    assert [datum.name for datum in published] == [
        "ActiveDevices",
        "ObservedPairs",
        "RowsInserted",
        "RowsDeleted",
        "SyncSuccess",
    ]
    client = boto3.client("cloudwatch", endpoint_url=moto_server, region_name="us-east-1")
    sums = metrics.read_back(
        client, namespace="Test/DeviceSync", stage="dev", since=since, until=datetime.now(UTC) + timedelta(minutes=5)
    )
    assert sums == {"ActiveDevices": 3, "ObservedPairs": 7, "RowsInserted": 2, "RowsDeleted": 1, "SyncSuccess": 1}
    assert elapsed < 10


def test_the_deploy_script_is_bounded_too(silent_server: SilentServer) -> None:
    endpoint = f"http://127.0.0.1:{silent_server.port}"
    env = {
        **os.environ,
        f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps(
            {"conn_type": "aws", "extra": {"region_name": "us-east-1", "endpoint_url": endpoint}}
        ),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "DEVICE_SYNC_AWS_CONN_ID": CONN_ID,
        "DEVICE_SYNC_CLOUDWATCH_TIMEOUT_SECONDS": "1",
    }

    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "deploy_monitoring.py"), "--stage", "dev"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    elapsed = time.monotonic() - started

    assert result.returncode != 0
    assert endpoint in result.stderr
    assert len(silent_server.accepted) == 2  # the first call (PutMetricAlarm), two attempts
    assert elapsed < 60, f"{elapsed:.1f} s"  # mostly the interpreter importing Airflow
