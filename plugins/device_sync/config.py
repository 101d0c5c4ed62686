"""The one place that reads device-sync's configuration from the environment.

Every setting is a ``DEVICE_SYNC_*`` environment variable with a documented default. Settings are
validated when the DAG file is parsed, so a bad value becomes an import error that names the variable
and what it accepts (``airflow dags list-import-errors``) instead of a silent fallback or a failure
half-way through a run. Reading the settings touches no database and no network.
"""

from __future__ import annotations

import re
from functools import cached_property
from typing import Literal

from croniter import croniter
from psycopg import sql
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "DEVICE_SYNC_"

# A plain, unquoted PostgreSQL identifier. Anything else (quotes, dots inside a part, spaces,
# semicolons) is refused rather than escaped, so a misconfiguration can never become SQL.
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class ConfigError(ValueError):
    """A ``DEVICE_SYNC_*`` environment variable has a value the package does not accept."""


def _check_identifier(value: str) -> str:
    if not _IDENTIFIER.match(value):
        raise ValueError(
            f"{value!r} is not a plain SQL identifier "
            "(letters, digits and underscores, starting with a letter or underscore, at most 63 characters)"
        )
    return value


def _check_qualified_name(value: str) -> str:
    parts = value.split(".")
    if len(parts) != 2:
        raise ValueError(f"{value!r} must be a schema-qualified table name such as iot_data.measurements")
    for part in parts:
        _check_identifier(part)
    return value


class Settings(BaseSettings):
    """device-sync settings; each field is the environment variable ``DEVICE_SYNC_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, case_sensitive=False, extra="ignore")

    stage: Literal["dev", "prod"] = Field("dev", description="Deployment stage; the Stage dimension of every metric.")
    schedule: str = Field("0 * * * *", description="Cron expression (UTC) of the scheduled runs.")
    lookback_minutes: int = Field(
        1440, ge=1, le=60 * 24 * 31, description="Length of the window that ends at the run's data_interval_end."
    )
    postgres_conn_id: str = Field(
        "device_sync_postgres", min_length=1, description="Airflow connection of the IoT database."
    )
    aws_conn_id: str = Field("aws_default", min_length=1, description="Airflow connection used for CloudWatch.")
    measurements_table: str = Field("iot_data.measurements", description="Schema-qualified measurements table.")
    measurements_time_column: str = Field("time", description="Timestamp column of the measurements table.")
    staging_schema: str = Field("device_sync", description="Schema the package owns for its per-run staging tables.")
    statement_timeout_seconds: int = Field(
        600, ge=1, le=24 * 3600, description="PostgreSQL statement_timeout of every statement the sync runs."
    )
    task_timeout_minutes: int = Field(60, ge=1, le=24 * 60, description="Airflow execution_timeout of each task.")
    retries: int = Field(3, ge=0, le=20, description="Airflow retries of each task (exponential backoff).")
    cloudwatch_namespace: str = Field(
        "IoT/DeviceParameterSync", min_length=1, max_length=255, description="CloudWatch namespace of the metrics."
    )

    @field_validator("schedule")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        if not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a valid cron expression (for example '0 * * * *')")
        return value

    @field_validator("measurements_table")
    @classmethod
    def _valid_table(cls, value: str) -> str:
        return _check_qualified_name(value)

    @field_validator("measurements_time_column", "staging_schema")
    @classmethod
    def _valid_identifier(cls, value: str) -> str:
        return _check_identifier(value)

    @cached_property
    def measurements_identifier(self) -> sql.Identifier:
        schema, table = self.measurements_table.split(".")
        return sql.Identifier(schema, table)


def load_settings() -> Settings:
    """Read and validate the settings; raise :class:`ConfigError` naming every bad variable."""
    try:
        return Settings()
    except ValidationError as error:
        problems = []
        for item in error.errors():
            field = str(item["loc"][0]) if item["loc"] else "?"
            variable = ENV_PREFIX + field.upper()
            problems.append(f"{variable}: {item['msg']} (got {item.get('input')!r})")
        raise ConfigError("Invalid device-sync configuration: " + "; ".join(problems)) from None
