"""The one place that reads device-sync's configuration from the environment.

Every setting is a ``DEVICE_SYNC_*`` environment variable with a documented default. ``DEVICE_SYNC_STAGE``
(``dev`` or ``prod``) selects a stage file of defaults, ``include/config/<stage>.env``; a variable set in
the environment always wins over the stage file. Settings are
validated when the DAG file is parsed, so a bad value becomes an import error that names the variable
and what it accepts (``airflow dags list-import-errors``) instead of a silent fallback or a failure
half-way through a run. Reading the settings touches no database and no network.
"""

from __future__ import annotations

import itertools
import os
import re
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from croniter import croniter
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from psycopg import sql

ENV_PREFIX = "DEVICE_SYNC_"
Stage = Literal["dev", "prod"]
STAGES: tuple[str, ...] = get_args(Stage)
STAGE_FILES = Path(__file__).resolve().parents[2] / "include" / "config"

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

    stage: Stage = Field("dev", description="Deployment stage; the Stage dimension of every metric.")
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
    aggregation_shards: int = Field(
        1,
        ge=1,
        le=32,
        description="Mapped aggregate_recent_measurements tasks; the active devices are split among them by a hash "
        "of the device id, so a large fleet spreads over workers and database cores.",
    )
    statement_timeout_seconds: int = Field(
        600, ge=1, le=24 * 3600, description="PostgreSQL statement_timeout of every statement the sync runs."
    )
    task_timeout_minutes: int = Field(60, ge=1, le=24 * 60, description="Airflow execution_timeout of each task.")
    retries: int = Field(3, ge=0, le=20, description="Airflow retries of each task (exponential backoff).")
    retry_delay_seconds: int = Field(
        30, ge=1, le=3600, description="First retry delay of a task; it doubles per retry, at most 10 minutes."
    )
    cloudwatch_namespace: str = Field(
        "IoT/DeviceParameterSync", min_length=1, max_length=255, description="CloudWatch namespace of the metrics."
    )

    history_retention_days: int = Field(
        30, ge=1, le=3650, description="Days of run history and change log kept in the database."
    )
    max_delete_fraction: float = Field(
        0.25, gt=0, le=1, description="Largest share of the table one run may delete before the guard blocks it."
    )
    mass_delete_min_rows: int = Field(
        100, ge=0, description="The mass-delete guard only applies once the table holds this many rows."
    )
    health_max_age_minutes: int | None = Field(
        None,
        ge=1,
        description="Age of the last applied sync after which /health answers 503; unset: count missed fire times "
        "instead (DEVICE_SYNC_HEALTH_MISSED_RUNS).",
    )
    health_missed_runs: int = Field(
        3,
        ge=1,
        le=1000,
        description="Scheduled fire times since the last applied sync after which /health answers 503 (used when "
        "DEVICE_SYNC_HEALTH_MAX_AGE_MINUTES is unset; a weekend without fire times is not an outage).",
    )
    max_clock_skew_seconds: int = Field(
        300,
        ge=0,
        le=3600,
        description="How far a run's window end may lie after the database's now() (clock skew between Airflow "
        "and PostgreSQL); a window ending later is refused before anything is staged.",
    )
    cloudwatch_timeout_seconds: int = Field(
        10, ge=1, le=300, description="Connect and read timeout of every CloudWatch call (two attempts at most)."
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

    @property
    def schedule_interval(self) -> timedelta:
        """The time between two scheduled runs (the longest gap, for irregular crons)."""
        runs = croniter(self.schedule, 0)
        fire_times = [runs.get_next(float) for _ in range(8)]
        return timedelta(seconds=max(b - a for a, b in itertools.pairwise(fire_times)))

    def fire_times_between(self, after: datetime, until: datetime, *, limit: int) -> int:
        """How many scheduled fire times lie in ``(after, until]`` (UTC), counting at most ``limit``."""
        runs = croniter(self.schedule, after.astimezone(UTC))
        count = 0
        while count < limit and runs.get_next(datetime) <= until:
            count += 1
        return count

    @property
    def health_max_age(self) -> timedelta:
        if self.health_max_age_minutes is not None:
            return timedelta(minutes=self.health_max_age_minutes)
        return 3 * self.schedule_interval

    @cached_property
    def measurements_identifier(self) -> sql.Identifier:
        from psycopg import sql  # not at import: the DAG file reads the settings at every parse

        schema, table = self.measurements_table.split(".")
        return sql.Identifier(schema, table)


def load_settings() -> Settings:
    """Read and validate the settings; raise :class:`ConfigError` naming every bad variable."""
    stage = os.environ.get(f"{ENV_PREFIX}STAGE", "dev")
    if stage not in STAGES:
        raise ConfigError(
            f"Invalid device-sync configuration: {ENV_PREFIX}STAGE: Input should be 'dev' or 'prod' (got {stage!r})"
        )
    try:
        return Settings(_env_file=STAGE_FILES / f"{stage}.env")  # type: ignore[call-arg]
    except ValidationError as error:
        problems = []
        for item in error.errors():
            field = str(item["loc"][0]) if item["loc"] else "?"
            variable = ENV_PREFIX + field.upper()
            problems.append(f"{variable}: {item['msg']} (got {item.get('input')!r})")
        raise ConfigError("Invalid device-sync configuration: " + "; ".join(problems)) from None
