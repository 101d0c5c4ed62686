"""device_sync.compat: the one module that looks at Airflow's version, and what it says about missing features."""

from __future__ import annotations

import logging

import pytest
from packaging.version import Version

from device_sync import approval, compat, deadline
from device_sync.config import load_settings


def test_the_development_airflow_has_every_feature() -> None:
    assert Version("3.3") <= compat.AIRFLOW_VERSION
    assert all(feature.available for feature in compat.FEATURES)
    assert "**off**" not in compat.features_markdown()


def test_an_older_airflow_turns_off_exactly_the_features_it_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compat, "AIRFLOW_VERSION", Version("3.0.6"))
    table = compat.features_markdown()
    assert "## Features on this Airflow (3.0.6)" in table
    assert table.count("**off**") == 3
    monkeypatch.setattr(compat, "AIRFLOW_VERSION", Version("3.2.1"))
    table = compat.features_markdown()
    assert table.count("**off**") == 1
    assert f"| {compat.HUMAN_APPROVAL.name} | 3.3.0 | **off**: " in table
    assert f"| {compat.DEADLINE_ALERTS.name} | 3.2.0 | on |" in table


def test_features_that_are_off_are_said_once_per_process(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(compat, "AIRFLOW_VERSION", Version("3.2.1"))
    compat.log_disabled_features.cache_clear()
    with caplog.at_level(logging.WARNING, logger=compat.__name__):
        compat.log_disabled_features()
        compat.log_disabled_features()
    compat.log_disabled_features.cache_clear()
    assert [record.getMessage() for record in caplog.records] == [
        f"device-sync: {compat.HUMAN_APPROVAL.name} is off on Airflow 3.2.1 (needs 3.3.0): "
        f"{compat.HUMAN_APPROVAL.without_it}"
    ]


def test_without_human_approval_the_task_asks_nobody(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compat, "AIRFLOW_VERSION", Version("3.2.1"))
    task = approval.approve_mass_delete(load_settings())
    assert task.task_id == approval.TASK_ID
    assert type(task).__name__ == "PythonOperator"
    assert task.python_callable() == {"asked": False}  # apply_changes then fails a tripped guard at once


def test_with_human_approval_the_task_is_the_question() -> None:
    task = approval.approve_mass_delete(load_settings())
    assert type(task).__name__ == "MassDeleteApproval"


def test_without_deadline_alerts_the_dag_gets_no_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    assert set(deadline.dag_kwargs(load_settings())) == {"deadline"}
    monkeypatch.setattr(compat, "AIRFLOW_VERSION", Version("3.0.6"))
    assert deadline.dag_kwargs(load_settings()) == {}


def test_retries_back_off_exponentially_in_each_versions_terms(monkeypatch: pytest.MonkeyPatch) -> None:
    assert compat.exponential_backoff() == 2.0  # a multiplier from 3.2 on
    monkeypatch.setattr(compat, "AIRFLOW_VERSION", Version("3.0.6"))
    assert compat.exponential_backoff() is True  # 3.0's flag: delays double
