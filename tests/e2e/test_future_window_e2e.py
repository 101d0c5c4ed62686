"""A REST trigger with a future ``logical_date`` (whose tasks Airflow would never start) is refused with 422 by
the plugin's middleware on a real ``airflow api-server``, one with a body over 1 MiB with 413, while a valid
trigger passes through unchanged. (Future runs made otherwise: tests/e2e/test_stack_e2e.py.)

The rule itself is tested in tests/unit/test_trigger_guard_unit.py; ``dag.test()`` and the sync's own steps
for a future window in tests/integration/test_future_window_integration.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conftest import running_airflow_stack

DAG_ID = "device_parameter_sync"


# --- a REST trigger with a future logical date, on a real api-server ----------------------------------------


@pytest.fixture(scope="module")
def stack(moto_server: str) -> Iterator[Any]:
    with running_airflow_stack() as stack:
        yield stack


def wait_for_dag(stack: Any, token: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while stack.request("GET", f"/api/v2/dags/{DAG_ID}", token=token)[0] != 200:
        if time.monotonic() > deadline:
            raise TimeoutError("the DAG never appeared in the api-server")
        time.sleep(1)


def dag_runs(stack: Any, token: str) -> list[dict[str, Any]]:
    status, body = stack.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns", token=token)
    assert status == 200, body
    return list(body["dag_runs"])


def test_rest_trigger_for_a_future_logical_date_is_refused_and_a_valid_one_passes(stack: Any) -> None:
    token = stack.token("admin")
    wait_for_dag(stack, token)
    path = f"/api/v2/dags/{DAG_ID}/dagRuns"

    status, body = stack.request("POST", path, {"logical_date": "2030-01-01T00:00:00Z", "conf": {}}, token=token)
    assert status == 422, body
    assert "2030-01-01T00:00:00+00:00" in body["detail"] and "s after now" in body["detail"]
    assert dag_runs(stack, token) == []

    # The middleware replays the body it read: Airflow sees the same logical date and conf.
    logical_date = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
    conf = {"dry_run": True, "device_ids": ["d1"]}
    status, run = stack.request("POST", path, {"logical_date": logical_date.isoformat(), "conf": conf}, token=token)
    assert status == 200, run
    assert run["conf"] == conf
    assert datetime.fromisoformat(run["logical_date"]) == logical_date
    assert [r["dag_run_id"] for r in dag_runs(stack, token)] == [run["dag_run_id"]]

    # A body too large to read whole is refused (413), not waved through: no run is created.
    padded = {"logical_date": "2031-01-01T00:00:00Z", "conf": {"padding": "x" * 3_000_000}}
    status, body = stack.request("POST", path, padded, token=token)
    assert status == 413, body
    assert "larger than 1048576 bytes" in body["detail"]
    assert [r["dag_run_id"] for r in dag_runs(stack, token)] == [run["dag_run_id"]]

    # Other methods pass untouched.
    status, _ = stack.request("GET", path, token=token)
    assert status == 200
