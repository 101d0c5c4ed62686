"""Unit tests of the configuration module: defaults, validation, and error messages naming the variable."""

from __future__ import annotations

import pytest

from device_sync.config import ConfigError, load_settings


def test_defaults_are_the_documented_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.stage == "dev"
    assert settings.schedule == "0 * * * *"
    assert settings.lookback_minutes == 1440
    assert settings.postgres_conn_id == "device_sync_postgres"
    assert settings.aws_conn_id == "aws_default"
    assert settings.measurements_table == "iot_data.measurements"
    assert settings.measurements_time_column == "time"
    assert settings.statement_timeout_seconds == 600
    assert settings.cloudwatch_namespace == "IoT/DeviceParameterSync"


def test_environment_variables_override_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVICE_SYNC_STAGE", "prod")
    monkeypatch.setenv("DEVICE_SYNC_LOOKBACK_MINUTES", "90")
    monkeypatch.setenv("DEVICE_SYNC_MEASUREMENTS_TABLE", "telemetry.readings")
    monkeypatch.setenv("DEVICE_SYNC_MEASUREMENTS_TIME_COLUMN", "observed_at")
    monkeypatch.setenv("DEVICE_SYNC_CLOUDWATCH_NAMESPACE", "Custom/Space")
    settings = load_settings()
    assert (settings.stage, settings.lookback_minutes) == ("prod", 90)
    assert settings.measurements_identifier.as_string() == '"telemetry"."readings"'
    assert settings.measurements_time_column == "observed_at"
    assert settings.cloudwatch_namespace == "Custom/Space"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("DEVICE_SYNC_STAGE", "staging", "'dev' or 'prod'"),
        ("DEVICE_SYNC_SCHEDULE", "every hour", "not a valid cron expression"),
        ("DEVICE_SYNC_SCHEDULE", "61 * * * *", "not a valid cron expression"),
        ("DEVICE_SYNC_LOOKBACK_MINUTES", "0", "greater than or equal to 1"),
        ("DEVICE_SYNC_LOOKBACK_MINUTES", "-5", "greater than or equal to 1"),
        ("DEVICE_SYNC_LOOKBACK_MINUTES", "an hour", "valid integer"),
        ("DEVICE_SYNC_STATEMENT_TIMEOUT_SECONDS", "0", "greater than or equal to 1"),
        ("DEVICE_SYNC_MEASUREMENTS_TABLE", "measurements", "schema-qualified"),
        ("DEVICE_SYNC_MEASUREMENTS_TABLE", 'iot_data.m"; DROP TABLE x; --', "not a plain SQL identifier"),
        ("DEVICE_SYNC_MEASUREMENTS_TABLE", "iot_data.measurements;drop", "not a plain SQL identifier"),
        ("DEVICE_SYNC_MEASUREMENTS_TIME_COLUMN", "time) OR (1=1", "not a plain SQL identifier"),
        ("DEVICE_SYNC_STAGING_SCHEMA", "a" * 64, "not a plain SQL identifier"),
        ("DEVICE_SYNC_POSTGRES_CONN_ID", "", "at least 1 character"),
    ],
)
def test_invalid_values_name_the_variable_and_what_it_accepts(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as error:
        load_settings()
    assert variable in str(error.value)
    assert expected in str(error.value)
