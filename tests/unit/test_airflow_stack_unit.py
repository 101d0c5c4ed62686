"""The local stack's Celery layout (scripts/airflow_stack.py), without starting anything: each worker gets
its own hostnames, log server port, home and temporary directory; the other components none of it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from airflow_stack import COMPONENTS, AirflowStack
from stack_hostname import hostname


def celery_stack(home: Path, workers: int = 2) -> AirflowStack:
    stack = AirflowStack(
        home=home,
        data_url="postgresql://postgres@127.0.0.1:5432/data",
        admin_url="postgresql://postgres@127.0.0.1:5432/postgres",
        port=8080,
        executor="celery",
        workers=workers,
        broker_url="redis://127.0.0.1:6379/9",
    )
    (home / "settings.json").write_text(
        json.dumps({"port": 8080, "sql_alchemy_conn": "postgresql+psycopg2://u:p@h:5432/meta", "jwt_secret": "x"})
    )
    return stack


def test_celery_stack_runs_every_component_plus_one_worker_each(tmp_path: Path) -> None:
    stack = celery_stack(tmp_path, workers=3)
    assert stack.components == (*COMPONENTS, "worker1", "worker2", "worker3")
    env = stack.env()
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://127.0.0.1:6379/9"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+postgresql://u:p@h:5432/meta"
    commands = [stack.command(name) for name in stack.worker_names]
    assert [command[1:5] for command in commands] == [
        ["celery", "worker", "--celery-hostname", stack.worker_hostname(name)] for name in stack.worker_names
    ]
    assert stack.command("scheduler")[1:] == ["scheduler"]


def test_each_worker_has_its_own_hostname_log_port_home_and_temporary_directory(tmp_path: Path) -> None:
    stack = celery_stack(tmp_path)
    env = stack.env()
    workers = [stack.component_env(name, env) for name in stack.worker_names]
    for key in ("STACK_WORKER_HOSTNAME", "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT", "HOME", "TMPDIR"):
        assert len({worker[key] for worker in workers}) == len(workers), key
    for name, worker in zip(stack.worker_names, workers, strict=True):
        assert worker["AIRFLOW__CORE__HOSTNAME_CALLABLE"] == "stack_hostname.hostname"
        assert Path(worker["TMPDIR"]).is_dir() and Path(worker["TMPDIR"]).is_relative_to(stack.workdir(name))
    assert stack.component_env("scheduler", env) == env
    assert stack.workdir("scheduler") == stack.home


def test_the_hostname_callable_names_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STACK_WORKER_HOSTNAME", "worker2.example")
    assert hostname() == "worker2.example"


def test_the_local_executor_has_no_workers_and_celery_needs_one(tmp_path: Path) -> None:
    local = AirflowStack(home=tmp_path, data_url="", admin_url="", workers=2)
    assert (local.components, local.worker_names) == (COMPONENTS, [])
    with pytest.raises(ValueError, match="at least one worker"):
        AirflowStack(home=tmp_path, data_url="", admin_url="", executor="celery", workers=0)
    with pytest.raises(ValueError, match="executor 'kubernetes'"):
        AirflowStack(home=tmp_path, data_url="", admin_url="", executor="kubernetes")
