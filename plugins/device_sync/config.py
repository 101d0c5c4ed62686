"""The one place that reads device-sync's configuration from the environment.

Every setting is a ``DEVICE_SYNC_*`` environment variable with a documented default. Names are exact and
upper case, as every Airflow and Unix setting: ``device_sync_stage`` is no device-sync setting, in the
environment or in a stage file. ``DEVICE_SYNC_STAGE`` (``dev`` or ``prod``, exactly) selects a stage file of
defaults, ``include/config/<stage>.env``; a variable set in the environment always wins over the stage file.
Settings are validated when the DAG file is parsed, so a bad value becomes an import error that names the variable
and what it accepts (``airflow dags list-import-errors``) instead of a silent fallback or a failure
half-way through a run. Reading the settings touches no database and no network.
"""

from __future__ import annotations

import itertools
import os
import re
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Any, Literal, get_args

from croniter import CroniterBadDateError, croniter
from dotenv import dotenv_values
from pydantic import Field, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, DotEnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from device_sync import resources

if TYPE_CHECKING:
    from psycopg import sql

ENV_PREFIX = "DEVICE_SYNC_"
Stage = Literal["dev", "prod"]
STAGES: tuple[str, ...] = get_args(Stage)

# A plain, unquoted PostgreSQL identifier. Anything else (quotes, dots inside a part, spaces,
# semicolons) is refused rather than escaped, so a misconfiguration can never become SQL.
# Matched whole (fullmatch): with re.match, "$" would also match before a final newline.
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

# Airflow's cron presets (airflow.utils.dates.cron_presets, which CronTriggerTimetable reads the same way). A
# preset is replaced by its expression, so the DAG, /health and the alarms all read the same five fields.
CRON_PRESETS: dict[str, str] = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@quarterly": "0 0 1 */3 *",
    "@yearly": "0 0 1 1 *",
}
# croniter's hashed (H, needs an id) and random (R, drawn anew at every parse) values: a schedule that is not
# the same at every parse of the DAG file is refused.
_HASHED_OR_RANDOM = re.compile(r"^[HhRr](\(|/|$)")
# Where schedule_interval looks for the longest gap: a fixed, non-leap UTC year, so the answer never depends on
# the day it is computed.
REFERENCE_YEAR_START = datetime(2025, 1, 1, tzinfo=UTC)
_DAY_SECONDS = 86_400


class ConfigError(ValueError):
    """A ``DEVICE_SYNC_*`` environment variable has a value the package does not accept."""


def _check_identifier(value: str) -> str:
    if not _IDENTIFIER.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a plain SQL identifier "
            "(letters, digits and underscores, starting with a letter or underscore, at most 63 characters)"
        )
    return value


def _check_cron(value: str) -> str:
    expression = CRON_PRESETS.get(value.strip(), value)
    fields = expression.split()
    problem = ""
    if len(fields) != 5:
        # croniter also takes 6 fields (the 6th is seconds) and 7 (a year); Airflow's timetables do not.
        problem = (
            "it must have exactly 5 fields, minute hour day-of-month month day-of-week (UTC), "
            f"or be one of {', '.join(CRON_PRESETS)}"
        )
    elif any(_HASHED_OR_RANDOM.match(part) for field in fields for part in field.split(",")):
        problem = "hashed (H) and random (R) values are not accepted"
    elif not croniter.is_valid(expression):
        problem = "for example '0 * * * *'"
    else:
        expression = " ".join(fields)
        try:
            _longest_gap(expression)  # cached: schedule_interval reads it from here
        except ValueError as error:
            problem = str(error)
    if problem:
        raise ValueError(f"{value!r} is not a valid cron expression: {problem}")
    return expression


@lru_cache(maxsize=64)
def _longest_gap(expression: str, days: int = 365) -> float:
    """Seconds of the longest gap from a fire time of a 5-field ``expression`` (UTC) to the next one, among the
    gaps that start in the ``days`` from :data:`REFERENCE_YEAR_START`; ValueError if it does not fire in them.

    Exact, and one croniter step per day that fires instead of one per fire time (a year of ``* * * * *``
    is 525,600 steps of ~20 us): in a 5-field cron, minute and hour do not depend on the day, so every day
    that fires at all fires at the same times of day, and the gaps within a day are the same every such day.
    Only which days fire varies (day of month, month, weekday, ``L``, ``W``, ``#``, and day of month OR
    weekday); croniter answers that with one step from each such day's last fire to the next day's first.
    """
    minutes, hours = croniter(expression).expanded[:2]  # '*' stays ['*'] in croniter's expansion
    times_of_day = sorted(
        hour * 3600 + minute * 60
        for hour in (range(24) if hours == ["*"] else hours)
        for minute in (range(60) if minutes == ["*"] else minutes)
    )
    longest = float(max((b - a for a, b in itertools.pairwise(times_of_day)), default=0))
    start = REFERENCE_YEAR_START.timestamp()
    end = start + days * _DAY_SECONDS
    runs = croniter(expression, start - 1)  # a fire time at `start` itself counts
    try:
        fire = runs.get_next(float)  # the first fire time of a day, at every turn of the loop
        if fire >= end:
            raise ValueError(f"it does not fire in every year (not once in {REFERENCE_YEAR_START.year})")
        while fire < end:
            last = fire - fire % _DAY_SECONDS + times_of_day[-1]
            runs.set_current(last, force=True)
            fire = runs.get_next(float)
            longest = max(longest, fire - last)
    except CroniterBadDateError:
        raise ValueError("it never fires") from None
    return longest


def variable_name(field_name: str) -> str:
    """The environment variable of a setting: ``DEVICE_SYNC_`` and the field's name in upper case."""
    return ENV_PREFIX + field_name.upper()


class _ExactNames(PydanticBaseSettingsSource):
    """Settings from variables named exactly ``DEVICE_SYNC_<FIELD>``, upper case (the environment or a stage file).

    pydantic-settings matches names either case-insensitively (then ``device_sync_stage=prod`` selects the
    prod stage while load_settings, like every Unix tool, reads the prod *file* only for ``DEVICE_SYNC_STAGE``)
    or as ``DEVICE_SYNC_<field as written in Python>``. This source applies the one rule of load_settings.
    """

    def __init__(self, settings_cls: type[BaseSettings], variables: Mapping[str, str | None]) -> None:
        super().__init__(settings_cls)
        self._variables = variables

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._variables.get(variable_name(field_name)), field_name, False

    def __call__(self) -> dict[str, Any]:
        values = {}
        for field_name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, field_name)
            if value is not None:
                values[key] = value
        return values


# Airflow's own rule for a connection id (airflow.models.connection: RE_SANITIZE_CONN_ID, CONN_ID_MAX_LEN).
CONN_ID_PATTERN = r"^[\w#!()\-.:/\\]+$"
CONN_ID_MAX_LENGTH = 250
SCHEDULE_MAX_LENGTH = 100
# S3's bucket naming rules (general purpose buckets) besides the characters and length of the field's pattern.
_S3_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_S3_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
_IPV4 = re.compile(r"[0-9]{1,3}(\.[0-9]{1,3}){3}")


def _check_no_control_characters(value: Any) -> Any:
    if isinstance(value, str) and any(unicodedata.category(character) == "Cc" for character in value):
        raise ValueError("control characters (newline, tab, NUL, ...) are not accepted")
    return value


def _check_bucket(value: str | None) -> str | None:
    if value is None:
        return value
    problem = ""
    if ".." in value or ".-" in value or "-." in value:
        problem = "no two adjacent periods, and no period next to a hyphen"
    elif _IPV4.fullmatch(value):
        problem = "not formatted as an IP address"
    elif value.startswith(_S3_RESERVED_PREFIXES) or value.endswith(_S3_RESERVED_SUFFIXES):
        problem = (
            f"not starting with {', '.join(_S3_RESERVED_PREFIXES)} nor ending with {', '.join(_S3_RESERVED_SUFFIXES)}"
        )
    if problem:
        raise ValueError(f"{value!r} is not a valid S3 bucket name: {problem}")
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

    # Only the sources of settings_customise_sources read variables; case_sensitive applies to keyword arguments.
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, case_sensitive=True, extra="ignore")

    stage: Stage = Field(
        "dev",
        description="Deployment stage, exactly 'dev' or 'prod'; selects the stage file; the Stage dimension "
        "of every metric.",
    )
    schedule: str = Field(
        "0 * * * *",
        max_length=SCHEDULE_MAX_LENGTH,
        description="Cron expression (UTC) of the scheduled runs: exactly 5 fields (minute hour day-of-month month "
        "day-of-week), or one of Airflow's presets @hourly, @daily, @weekly, @monthly, @quarterly, @yearly (read as "
        "their expression); it must fire at least once a year. Its longest gap over a year is the schedule interval "
        "of the CloudWatch alarms.",
    )
    lookback_minutes: int = Field(
        1440, ge=1, le=60 * 24 * 31, description="Length of the window that ends at the run's data_interval_end."
    )
    postgres_conn_id: str = Field(
        "device_sync_postgres",
        min_length=1,
        max_length=CONN_ID_MAX_LENGTH,
        pattern=CONN_ID_PATTERN,
        description="Airflow connection of the IoT database (an Airflow connection id: at most 250 letters, digits "
        "and _#!()-.:/\\).",
    )
    aws_conn_id: str = Field(
        "aws_default",
        min_length=1,
        max_length=CONN_ID_MAX_LENGTH,
        pattern=CONN_ID_PATTERN,
        description="Airflow connection used for CloudWatch and SNS (an Airflow connection id).",
    )
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
    asset_database_uri: str = Field(
        "postgres://iot-db:5432/iot",
        pattern=r"^postgres://[A-Za-z0-9.-]+:[0-9]{1,5}/[A-Za-z0-9_-]+$",
        description="The IoT database in the postgres provider's Asset URI form, postgres://<host>:<port>/<database>: "
        "the Asset of the target table is <this>/iot_data/device_parameters (downstream DAGs schedule on it).",
    )
    alert_sns_topic_arn: str | None = Field(
        None,
        pattern=r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?$",
        description="Amazon SNS topic of the failure and recovery messages, through DEVICE_SYNC_AWS_CONN_ID "
        "(unset or empty: no messages).",
    )
    deadline_minutes: int | None = Field(
        None,
        ge=1,
        le=366 * 24 * 60,
        description="A run not finished this many minutes after it was queued sends a deadline alert through "
        "DEVICE_SYNC_ALERT_SNS_TOPIC_ARN (Airflow's DeadlineAlert); unset: one schedule interval (the longest gap).",
    )
    approval_timeout_minutes: int = Field(
        60,
        ge=1,
        le=7 * 24 * 60,
        description="How long a run whose mass-delete guard tripped waits for a human's answer in "
        "approve_mass_delete; no answer by then is a Reject (the run fails as without the question).",
    )
    max_active_runs: int = Field(
        1,
        ge=1,
        le=16,
        description="Runs of the DAG active at once (scheduled and manual; backfills have their own limit). "
        "More than one is safe: the writers' lock serializes their apply_changes.",
    )
    db_pool_slots: int = Field(
        4,
        ge=1,
        le=1024,
        description="Slots of the Airflow pool device_sync_db that the tasks querying the IoT database run in: at "
        "most this many of them (shards, backfills, manual runs) hold a database session at once. The stacks "
        "create the pool with it, and so does device-sync-deploy on an MWAA environment; elsewhere: airflow pools set "
        "device_sync_db <slots> <description>.",
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
        "IoT/DeviceParameterSync",
        min_length=1,
        max_length=255,
        pattern=r"^[A-Za-z0-9 .\-_/#:]+$",
        description="CloudWatch namespace of the metrics (letters, digits, space and .-_/#:).",
    )

    history_retention_days: int = Field(
        30, ge=1, le=3650, description="Days of run history and change log kept in the database."
    )
    max_delete_fraction: float = Field(
        0.25,
        gt=0,
        le=1,
        allow_inf_nan=False,
        description="Largest share of the table one run may delete before the guard blocks it (0 < x <= 1).",
    )
    mass_delete_min_rows: int = Field(
        100,
        ge=0,
        le=10**12,
        description="The mass-delete guard only applies once the table holds this many rows (0 ... 10^12).",
    )
    health_max_age_minutes: int | None = Field(
        None,
        ge=1,
        le=366 * 24 * 60,
        description="Age of the last applied sync after which /health answers 503 (1 ... 527040, i.e. 366 days); "
        "unset: count missed fire times instead (DEVICE_SYNC_HEALTH_MISSED_RUNS).",
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
    alarm_missed_intervals: int = Field(
        3,
        ge=1,
        le=1440,  # one day of one-minute intervals: CloudWatch's longest window for short periods
        description="Schedule intervals (longest gaps) without a successful sync before the no-successful-sync "
        "alarm fires (deployed by device-sync-deploy, or make deploy-monitoring).",
    )
    alarm_max_deletes: int = Field(
        1000, ge=0, le=10**9, description="Most deleted rows in one interval before the many-deletes alarm fires."
    )
    deploy_bucket: str | None = Field(
        None,
        pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
        description="S3 bucket (versioning enabled) that device-sync-deploy uploads the MWAA artifacts to.",
    )
    mwaa_environment: str | None = Field(
        None,
        pattern=r"^[A-Za-z][0-9A-Za-z_-]{0,79}$",
        description="Amazon MWAA environment that device-sync-deploy updates (unset: upload only).",
    )
    mwaa_airflow_version: str | None = Field(
        None,
        pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$",
        description="Airflow version of the MWAA environment that device-sync-deploy writes requirements.txt for, when "
        "DEVICE_SYNC_MWAA_ENVIRONMENT is unset (with it, the environment's own AirflowVersion is used).",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments, then the environment, then the stage file (``_env_file``), all by exact name."""
        stage_file = dotenv_settings.env_file if isinstance(dotenv_settings, DotEnvSettingsSource) else None
        from_file = dotenv_values(stage_file) if isinstance(stage_file, str | os.PathLike) else {}
        return init_settings, _ExactNames(settings_cls, os.environ), _ExactNames(settings_cls, from_file)

    @field_validator("*", mode="before")
    @classmethod
    def _printable(cls, value: Any) -> Any:
        return _check_no_control_characters(value)

    @field_validator("deploy_bucket")
    @classmethod
    def _valid_bucket(cls, value: str | None) -> str | None:
        return _check_bucket(value)

    @field_validator("alert_sns_topic_arn", mode="before")
    @classmethod
    def _empty_is_off(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("schedule")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        return _check_cron(value)

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
        """The longest time between two scheduled runs over a year (UTC, from :data:`REFERENCE_YEAR_START`).

        For an irregular schedule that is its longest quiet time: ``0 9-17 * * 1-5`` gives 64 hours (Friday
        17:00 to Monday 09:00), ``0 0 1 * *`` 31 days. Computed once per expression and process.
        """
        return timedelta(seconds=_longest_gap(self.schedule))

    @property
    def deadline(self) -> timedelta:
        """How long a run may take from being queued before its deadline alert: the setting, else one interval."""
        return timedelta(minutes=self.deadline_minutes) if self.deadline_minutes else self.schedule_interval

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


def _shown(value: Any, limit: int = 120) -> str:
    """The refused value for the message, cut short: a 1 MB variable does not make a 1 MB error."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(str(value))} characters)"


def load_settings() -> Settings:
    """Read and validate the settings; raise :class:`ConfigError` naming every bad variable."""
    stage = os.environ.get(f"{ENV_PREFIX}STAGE", "dev")
    if stage not in STAGES:
        raise ConfigError(
            f"Invalid device-sync configuration: {ENV_PREFIX}STAGE: Input should be 'dev' or 'prod' (got {stage!r})"
        )
    try:
        return Settings(_env_file=resources.stage_file(stage))  # type: ignore[call-arg]
    except ValidationError as error:
        problems = []
        for item in error.errors():
            field = str(item["loc"][0]) if item["loc"] else "?"
            variable = variable_name(field)
            problems.append(f"{variable}: {item['msg']} (got {_shown(item.get('input'))})")
        raise ConfigError("Invalid device-sync configuration: " + "; ".join(problems)) from None
