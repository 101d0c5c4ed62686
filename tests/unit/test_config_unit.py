"""Unit tests of the configuration module: defaults, validation, and error messages naming the variable."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import get_args

import pytest
from airflow.timetables.trigger import CronTriggerTimetable
from airflow.utils.dates import cron_presets
from croniter import CroniterBadDateError, croniter
from dotenv import dotenv_values
from hypothesis import HealthCheck, assume, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from device_sync import config, resources
from device_sync.config import STAGES, ConfigError, Settings, load_settings, variable_name


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


# --- the schedule: five fields, and its longest gap over a year -----------------------------------------

REFERENCE_START = datetime(2025, 1, 1, tzinfo=UTC).timestamp()  # config.REFERENCE_YEAR_START
DAY = 86_400


def naive_longest_gap(expression: str, days: int) -> float:
    """Every fire time, one croniter step each: the longest gap that starts in [start, start + days)."""
    runs = croniter(expression, REFERENCE_START - 1)
    previous = runs.get_next(float)
    longest = 0.0
    while previous < REFERENCE_START + days * DAY:
        fire = runs.get_next(float)
        longest = max(longest, fire - previous)
        previous = fire
    return longest


@pytest.mark.parametrize(
    "value",
    [
        "0 * * * * *",  # croniter reads a sixth field as seconds: a run every second
        "*/5 * * * * 0",
        "0 0 * * * * 2025",  # a seventh field is a year
        "* * * *",
        "R * * * *",  # croniter draws a random minute at every parse
        "0 R(0-5) * * *",
        "H * * * *",
        "0 0 31 2 *",  # never fires
        "0 0 29 2 *",  # only in leap years
        "@reboot",
        "@midnight",  # croniter's, not one of Airflow's presets
    ],
)
def test_only_a_five_field_cron_that_fires_every_year_is_a_schedule(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("DEVICE_SYNC_SCHEDULE", value)
    with pytest.raises(ConfigError, match="DEVICE_SYNC_SCHEDULE") as error:
        load_settings()
    assert "not a valid cron expression" in str(error.value)
    assert repr(value) in str(error.value)


@pytest.mark.parametrize("preset", sorted(cron_presets))
def test_airflow_cron_presets_become_their_five_field_expression(monkeypatch: pytest.MonkeyPatch, preset: str) -> None:
    monkeypatch.setenv("DEVICE_SYNC_SCHEDULE", preset)
    settings = load_settings()

    assert settings.schedule == cron_presets[preset]
    # Airflow's timetable reads the preset as that very expression (its summary is the expression it runs).
    assert CronTriggerTimetable(preset, timezone="UTC").summary == settings.schedule
    assert cron_presets == config.CRON_PRESETS


@pytest.mark.parametrize(
    ("schedule", "interval"),
    [
        ("0 * * * *", timedelta(hours=1)),
        ("* * * * *", timedelta(minutes=1)),
        ("*/15 * * * *", timedelta(minutes=15)),
        ("0 9,17 * * *", timedelta(hours=16)),
        ("0 9-17 * * 1-5", timedelta(hours=64)),  # Friday 17:00 to Monday 09:00
        ("*/10 9-17 * * mon-fri", timedelta(hours=63, minutes=10)),  # from Friday 17:50
        ("30 8 * * 1-5", timedelta(days=3)),
        ("0 0 * * 0", timedelta(days=7)),
        ("0 0 1 * *", timedelta(days=31)),
        ("0 0 1 */3 *", timedelta(days=92)),  # 1 October to 1 January
        ("0 0 L * *", timedelta(days=31)),  # last day of month: 31 July to 31 August
        ("0 12 * * 1#1", timedelta(days=35)),  # first Monday of the month
        ("0 0 1 1 *", timedelta(days=365)),
    ],
)
def test_schedule_interval_is_the_longest_gap_over_a_year(
    monkeypatch: pytest.MonkeyPatch, schedule: str, interval: timedelta
) -> None:
    monkeypatch.setenv("DEVICE_SYNC_SCHEDULE", schedule)
    assert load_settings().schedule_interval == interval


# Sparse enough that every fire time of a few weeks is cheap to step through.
MINUTES = st.sampled_from(["0", "*/20", "5,35", "0-50/25", "59", "10-12"])
HOURS = st.sampled_from(["*", "0", "23", "9-17", "*/5", "1,13", "0-6/3", "22-23"])
DAYS_OF_MONTH = st.sampled_from(["*", "1", "L", "15W", "1-7", "*/10", "28-31", "13"])
MONTHS = st.sampled_from(["*", "1", "2", "*/2", "1-3", "2,3"])
DAYS_OF_WEEK = st.sampled_from(["*", "1-5", "0", "6,0", "5#2", "L5", "sat", "2-4/2"])


@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.tuples(MINUTES, HOURS, DAYS_OF_MONTH, MONTHS, DAYS_OF_WEEK), st.integers(1, 100))
def test_longest_gap_equals_stepping_through_every_fire_time(fields: tuple[str, ...], days: int) -> None:
    expression = " ".join(fields)
    try:
        first = croniter(expression).get_next(float, REFERENCE_START - 1)
    except CroniterBadDateError:
        first = math.inf  # never fires (30 February)
    assume(first < REFERENCE_START + days * DAY)  # else ValueError (the validator refuses a year without one)
    assert config._longest_gap(expression, days) == naive_longest_gap(expression, days)


@pytest.mark.parametrize(
    ("expression", "days"),
    [
        ("* * * * *", 3),
        ("*/7 * * * *", 10),
        ("0 9-17 * * 1-5", 365),
        ("0 0 * * 5#5", 365),
        ("0 0 L 2 *", 365),
        ("30 2 15W * *", 365),
        ("0 0 1 1 *", 365),
        ("0 0 29 * *", 365),
        ("59 23 31 * *", 365),
        ("0 0 1,15 * 3", 365),  # day of month OR day of week, as in cron
    ],
)
def test_longest_gap_equals_stepping_through_every_fire_time_of_a_list(expression: str, days: int) -> None:
    assert config._longest_gap(expression, days) == naive_longest_gap(expression, days)


def test_schedule_interval_of_every_minute_is_cheap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVICE_SYNC_SCHEDULE", "* * * * *")
    config._longest_gap.cache_clear()
    started = time.perf_counter()
    settings = load_settings()  # validation computes it once
    first = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(100):
        assert load_settings().schedule_interval == timedelta(minutes=1)
    cached = (time.perf_counter() - started) / 100
    assert settings.schedule_interval == timedelta(minutes=1)
    assert first < 0.5, f"{first:.3f} s"  # a naive year of fire times takes about 10 s
    assert cached < 0.01, f"{cached:.4f} s"


# --- every number has an upper bound ---------------------------------------------------------------------

FAR_OUT = "1" + "0" * 30

NUMERIC_SETTINGS = [
    "DEVICE_SYNC_LOOKBACK_MINUTES",
    "DEVICE_SYNC_AGGREGATION_SHARDS",
    "DEVICE_SYNC_DB_POOL_SLOTS",
    "DEVICE_SYNC_MAX_ACTIVE_RUNS",
    "DEVICE_SYNC_DEADLINE_MINUTES",
    "DEVICE_SYNC_APPROVAL_TIMEOUT_MINUTES",
    "DEVICE_SYNC_STATEMENT_TIMEOUT_SECONDS",
    "DEVICE_SYNC_TASK_TIMEOUT_MINUTES",
    "DEVICE_SYNC_RETRIES",
    "DEVICE_SYNC_RETRY_DELAY_SECONDS",
    "DEVICE_SYNC_HISTORY_RETENTION_DAYS",
    "DEVICE_SYNC_MAX_DELETE_FRACTION",
    "DEVICE_SYNC_MASS_DELETE_MIN_ROWS",
    "DEVICE_SYNC_HEALTH_MAX_AGE_MINUTES",
    "DEVICE_SYNC_HEALTH_MISSED_RUNS",
    "DEVICE_SYNC_MAX_CLOCK_SKEW_SECONDS",
    "DEVICE_SYNC_CLOUDWATCH_TIMEOUT_SECONDS",
    "DEVICE_SYNC_ALARM_MISSED_INTERVALS",
    "DEVICE_SYNC_ALARM_MAX_DELETES",
]


def test_the_list_of_numeric_settings_is_complete() -> None:
    numeric = {
        f"DEVICE_SYNC_{name.upper()}"
        for name, field in Settings.model_fields.items()
        if {int, float} & {field.annotation, *get_args(field.annotation)}
    }
    assert numeric == set(NUMERIC_SETTINGS)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DEVICE_SYNC_STAGING_SCHEMA", "device_sync\n"),
        ("DEVICE_SYNC_MEASUREMENTS_TIME_COLUMN", "time\n"),
        ("DEVICE_SYNC_MEASUREMENTS_TABLE", "iot_data.measurements\n"),
    ],
)
def test_a_name_with_a_trailing_newline_is_refused_at_import(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """Names are matched whole: "$" of re.match would accept the text before a final newline."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable):
        load_settings()


@pytest.mark.parametrize("variable", NUMERIC_SETTINGS)
@pytest.mark.parametrize("value", [FAR_OUT, "-" + FAR_OUT, "100000000000000"])
def test_far_out_numbers_are_refused_at_parse_time(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable):
        load_settings()


@pytest.mark.parametrize("value", ["inf", "nan", "1e400"])
def test_max_delete_fraction_is_a_finite_number(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("DEVICE_SYNC_MAX_DELETE_FRACTION", value)
    with pytest.raises(ConfigError, match="DEVICE_SYNC_MAX_DELETE_FRACTION"):
        load_settings()


def test_health_max_age_of_a_year_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVICE_SYNC_HEALTH_MAX_AGE_MINUTES", str(366 * 24 * 60))
    assert load_settings().health_max_age == timedelta(days=366)
    monkeypatch.setenv("DEVICE_SYNC_HEALTH_MAX_AGE_MINUTES", str(366 * 24 * 60 + 1))
    with pytest.raises(ConfigError, match="DEVICE_SYNC_HEALTH_MAX_AGE_MINUTES"):
        load_settings()


# --- one rule for names: exact, upper case -----------------------------------------------------------------


@pytest.mark.parametrize("variable", ["device_sync_stage", "Device_Sync_Stage", "DEVICE_SYNC_stage"])
def test_a_variable_name_not_in_upper_case_is_no_setting(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, "prod")
    monkeypatch.setenv("device_sync_statement_timeout_seconds", "7")
    monkeypatch.setenv("Device_Sync_Retries", "9")

    settings = load_settings()

    # Stage, stage file and every value follow the same names: the dev stage with the dev file's values.
    assert (settings.stage, settings.statement_timeout_seconds, settings.retries) == ("dev", 600, 3)
    assert Settings().stage == "dev"


def test_the_upper_case_stage_variable_selects_its_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVICE_SYNC_STAGE", "prod")
    monkeypatch.setenv("device_sync_stage", "dev")

    settings = load_settings()

    assert (settings.stage, settings.statement_timeout_seconds, settings.retries) == ("prod", 1800, 4)


@pytest.mark.parametrize("value", ["PROD", "Prod", " prod"])
def test_stage_values_are_exact(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("DEVICE_SYNC_STAGE", value)
    with pytest.raises(ConfigError, match="DEVICE_SYNC_STAGE"):
        load_settings()


@pytest.mark.parametrize("stage", STAGES)
def test_stage_files_name_settings_exactly(stage: str) -> None:
    values = dotenv_values(resources.stage_file(stage))
    assert values
    for name, value in values.items():
        assert name.isupper() and name.startswith("DEVICE_SYNC_"), name
        assert name.removeprefix("DEVICE_SYNC_").lower() in Settings.model_fields, name
        field = name.removeprefix("DEVICE_SYNC_").lower()
        assert str(getattr(load_settings_of(stage), field)) == value, name


def load_settings_of(stage: str) -> Settings:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DEVICE_SYNC_STAGE", stage)
        return load_settings()


def test_settings_can_still_be_built_by_field_name() -> None:
    settings = Settings(measurements_table="telemetry.readings", staging_schema="ds_custom", retries=5)
    assert (settings.measurements_table, settings.staging_schema, settings.retries) == (
        "telemetry.readings",
        "ds_custom",
        5,
    )


# --- stage files -------------------------------------------------------------------------


def test_stage_prod_gives_the_prod_file_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    dev = load_settings()
    monkeypatch.setenv("DEVICE_SYNC_STAGE", "prod")

    prod = load_settings()

    assert prod.stage == "prod"
    assert (prod.statement_timeout_seconds, prod.task_timeout_minutes, prod.retries) == (1800, 120, 4)
    assert prod.history_retention_days == 90
    assert (prod.schedule, prod.lookback_minutes, prod.cloudwatch_namespace) == (
        "0 * * * *",
        1440,
        "IoT/DeviceParameterSync",
    )
    assert (prod.postgres_conn_id, prod.aws_conn_id) == ("device_sync_postgres", "aws_default")
    assert (dev.stage, dev.statement_timeout_seconds, dev.task_timeout_minutes, dev.retries) == ("dev", 600, 60, 3)
    assert dev.history_retention_days == 30


def test_an_explicit_environment_variable_wins_over_the_stage_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVICE_SYNC_STAGE", "prod")
    monkeypatch.setenv("DEVICE_SYNC_RETRIES", "7")
    monkeypatch.setenv("DEVICE_SYNC_HISTORY_RETENTION_DAYS", "5")

    settings = load_settings()

    assert (settings.retries, settings.history_retention_days) == (7, 5)
    assert settings.statement_timeout_seconds == 1800  # the rest still comes from prod.env


@pytest.mark.parametrize("stage", ["staging", "PROD", ""])
def test_an_unknown_stage_raises_config_error_naming_the_variable(monkeypatch: pytest.MonkeyPatch, stage: str) -> None:
    monkeypatch.setenv("DEVICE_SYNC_STAGE", stage)

    with pytest.raises(ConfigError, match="DEVICE_SYNC_STAGE") as error:
        load_settings()

    assert repr(stage) in str(error.value)


# --- fire times between two instants ----------------------------------------------------------------------

AT = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)  # a Tuesday


@pytest.mark.parametrize(
    ("after", "until", "count"),
    [
        (AT, AT, 0),
        (AT, AT + timedelta(minutes=59), 0),
        (AT, AT + timedelta(hours=1), 1),  # (after, until]: the end counts
        (AT - timedelta(microseconds=1), AT, 1),
        (AT + timedelta(seconds=30), AT + timedelta(hours=3), 3),  # 11:00, 12:00, 13:00
        (AT + timedelta(hours=2), AT, 0),  # an end before the start
    ],
)
def test_fire_times_lie_after_the_start_and_up_to_the_end(after: datetime, until: datetime, count: int) -> None:
    assert Settings(schedule="0 * * * *").fire_times_between(after, until, limit=100) == count


def test_fire_times_are_counted_only_up_to_the_limit() -> None:
    hourly = Settings(schedule="0 * * * *")
    assert hourly.fire_times_between(AT, AT + timedelta(days=365), limit=3) == 3
    assert hourly.fire_times_between(AT, AT + timedelta(hours=2), limit=3) == 2
    assert hourly.fire_times_between(AT, AT + timedelta(hours=2), limit=0) == 0


def test_fire_times_are_utc_whatever_the_zone_of_the_instants() -> None:
    plus_two = timezone(timedelta(hours=2))
    hourly_at_nine = Settings(schedule="0 9 * * *")
    # 10:30+02:00 is 08:30 UTC: 09:00 UTC is still to come that day.
    after = datetime(2026, 12, 1, 10, 30, tzinfo=plus_two)
    assert hourly_at_nine.fire_times_between(after, after + timedelta(hours=1), limit=5) == 1
    assert hourly_at_nine.fire_times_between(after, after + timedelta(minutes=29), limit=5) == 0


def test_office_hours_have_no_fire_time_over_the_weekend() -> None:
    office = Settings(schedule="0 9-17 * * 1-5")
    friday_after_five = datetime(2026, 11, 27, 17, 0, 40, tzinfo=UTC)
    monday = datetime(2026, 11, 30, tzinfo=UTC)
    assert office.fire_times_between(friday_after_five, monday + timedelta(hours=8, minutes=59), limit=10) == 0
    assert office.fire_times_between(friday_after_five, monday + timedelta(hours=9), limit=10) == 1
    assert office.fire_times_between(friday_after_five, monday + timedelta(hours=17), limit=10) == 9


@pytest.mark.parametrize(
    ("schedule", "interval"),
    [("*/5 * * * *", timedelta(minutes=5)), ("0 9-17 * * 1-5", timedelta(hours=64)), ("0 2 * * *", timedelta(days=1))],
)
def test_settings_give_the_schedule_interval_and_three_of_them_as_the_health_max_age(
    schedule: str, interval: timedelta
) -> None:
    settings = Settings(schedule=schedule)
    assert settings.schedule_interval == interval
    assert settings.health_max_age == 3 * interval
    assert Settings(schedule=schedule, health_max_age_minutes=7).health_max_age == timedelta(minutes=7)


def test_the_readme_configuration_table_lists_every_setting() -> None:
    """Every setting has its row in the README's configuration table, by its exact variable name."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip().strip("`") for line in readme.splitlines() if line.startswith("| `DEVICE_SYNC_")}
    assert {variable_name(name) for name in Settings.model_fields} <= rows


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DEVICE_SYNC_AWS_CONN_ID", "a" * 1_000_000),  # 1 MB
        ("DEVICE_SYNC_AWS_CONN_ID", "a" * 251),  # Airflow's connection ids have at most 250 characters
        ("DEVICE_SYNC_POSTGRES_CONN_ID", "device_sync\npostgres"),
        ("DEVICE_SYNC_POSTGRES_CONN_ID", "device sync"),  # not an Airflow connection id
        ("DEVICE_SYNC_SCHEDULE", "0 " + " " * 200_000 + "* * * *"),  # 200 kB
        ("DEVICE_SYNC_SCHEDULE", "0 *\n* * *"),
        ("DEVICE_SYNC_CLOUDWATCH_NAMESPACE", "IoT\tSync"),
        ("DEVICE_SYNC_ASSET_DATABASE_URI", "postgres://iot-db:5432/iot\x1b"),
        ("DEVICE_SYNC_DEPLOY_BUCKET", "my..bucket"),
        ("DEVICE_SYNC_DEPLOY_BUCKET", "192.168.1.10"),
        ("DEVICE_SYNC_DEPLOY_BUCKET", "xn--bucket"),
        ("DEVICE_SYNC_DEPLOY_BUCKET", "bucket-s3alias"),
        ("DEVICE_SYNC_DEPLOY_BUCKET", "My_Bucket"),
        ("DEVICE_SYNC_DEPLOY_BUCKET", "ab"),
        ("DEVICE_SYNC_DEPLOY_BUCKET", "bucket.-name"),
        ("DEVICE_SYNC_MWAA_ENVIRONMENT", "env\n"),
    ],
)
def test_text_settings_are_bounded_and_refused_at_import_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable) as error:
        load_settings()
    assert len(str(error.value)) < 1_000  # the refused value is shown cut short


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DEVICE_SYNC_AWS_CONN_ID", "a" * 250),
        ("DEVICE_SYNC_POSTGRES_CONN_ID", "iot-db.prod:replica/1"),
        ("DEVICE_SYNC_DEPLOY_BUCKET", "my-company.mwaa-artifacts"),
        ("DEVICE_SYNC_CLOUDWATCH_NAMESPACE", "IoT/Device Parameter Sync"),
    ],
)
def test_text_settings_within_their_bounds_are_accepted(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    assert getattr(load_settings(), variable.removeprefix("DEVICE_SYNC_").lower()) == value
