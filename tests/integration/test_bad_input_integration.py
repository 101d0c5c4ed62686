"""Bad input against real PostgreSQL and real Airflow: source data, configuration and trigger params.

Each case ends in a clear error or in skipped-and-counted rows; nothing is lost and nothing is half-written.
Every statement the tests themselves run goes through ``execute``/``query`` (one committed transaction each).
Target tables stay far below the mass-delete guard's 100 rows and every applying run has a measurement in
its window, so the sync's safety guards never interfere.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk.exceptions import ParamValidationError

from conftest import REPO
from device_sync import sync
from device_sync.config import Settings, load_settings
from device_sync.options import MAX_DEVICE_IDS, MAX_LOOKBACK_MINUTES
from device_sync.staging import StagingTables
from device_sync.summary import STEP_TASK_IDS
from device_sync.window import Window
from source_data import (
    add_devices,
    add_measurements,
    add_parameters,
    add_target,
    checksum,
    execute,
    query,
    snapshot,
    target,
)

DAG_ID = "device_parameter_sync"
END = datetime(2026, 11, 30, 12, tzinfo=UTC)
LOOKBACK = 60
INSIDE = END - timedelta(minutes=30)
SOURCES = ("iot_data.redshift_devices", "iot_data.timescale_parameters", "iot_data.measurements")


# --- helpers -------------------------------------------------------------------------------------------


def sources(conn: psycopg.Connection[Any]) -> dict[str, tuple[int, str]]:
    return {table: checksum(conn, table) for table in SOURCES}


def history(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return query(
        conn, "SELECT run_id, status, applied, skipped, skipped_by_reason FROM device_sync.run_history ORDER BY 1"
    )


def change_log(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return query(
        conn,
        "SELECT run_id, operation, device_id, parameter_id, new_device_name, new_parameter_name "
        "FROM device_sync.change_log ORDER BY change_id",
    )


def staging_tables(conn: psycopg.Connection[Any]) -> list[str]:
    rows = query(
        conn, "SELECT tablename FROM pg_tables WHERE schemaname = 'device_sync' AND starts_with(tablename, 'stage_')"
    )
    return [name for (name,) in rows]


def run_sync(
    conn: psycopg.Connection[Any],
    settings: Settings | None = None,
    *,
    run_id: str = "run-1",
    end: datetime = END,
    device_ids: Sequence[str] | None = None,
) -> dict[str, Any]:
    settings = settings or load_settings()
    return sync.sync_once(
        conn,
        settings,
        StagingTables.for_run(settings.staging_schema, DAG_ID, run_id),
        Window.ending_at(end, LOOKBACK),
        run_id=run_id,
        device_ids=device_ids,
    )


# --- source data ---------------------------------------------------------------------------------------

INJECTIONS = (
    "'); DROP TABLE iot_data.measurements; --",
    "x'; DELETE FROM iot_data.device_parameters; --",
    'd"; TRUNCATE iot_data.redshift_devices; --',
    "$$; DROP SCHEMA iot_data CASCADE; $$",
    "1 OR 1=1; UPDATE iot_data.timescale_parameters SET parameter_name = NULL",
    "%(window_start)s %s {measurements} {delta} {{x}}",
    "\\'; SELECT pg_sleep(30); --",
    "Ω ☃ 😀 tab\tnewline\nend",
)


def test_sql_looking_ids_and_names_are_stored_verbatim_and_the_sources_stay_intact(
    conn: psycopg.Connection[Any],
) -> None:
    add_devices(conn, *((text, text, True) for text in INJECTIONS), ("d_plain", INJECTIONS[0], True))
    add_parameters(conn, *((text, text) for text in INJECTIONS))
    add_measurements(conn, *((text, text, INSIDE) for text in INJECTIONS), ("d_plain", INJECTIONS[1], INSIDE))
    before = sources(conn)
    expected = {(text, text): (text, text) for text in INJECTIONS} | {
        ("d_plain", INJECTIONS[1]): (INJECTIONS[0], INJECTIONS[1])
    }

    first = run_sync(conn, run_id=INJECTIONS[0])

    assert target(conn) == expected
    assert (first["inserted"], first["updated"], first["deleted"], first["skipped"]) == (len(expected), 0, 0, 0)
    assert sorted(change_log(conn)) == sorted(
        (INJECTIONS[0], "insert", d, p, dn, pn) for (d, p), (dn, pn) in expected.items()
    )
    assert [row[:3] for row in history(conn)] == [(INJECTIONS[0], "success", True)]
    assert sources(conn) == before
    assert staging_tables(conn) == []

    # A second run writes nothing; a run scoped to an SQL-looking device id changes only that device.
    rows = snapshot(conn)
    second = run_sync(conn, run_id=INJECTIONS[5], end=END + timedelta(minutes=1))
    assert (second["inserted"], second["updated"], second["deleted"]) == (0, 0, 0)
    assert snapshot(conn) == rows
    execute(conn, "UPDATE iot_data.redshift_devices SET device_name = device_name || ' (renamed)'")
    scoped = run_sync(conn, run_id="run-scoped", end=END + timedelta(minutes=2), device_ids=[INJECTIONS[1]])
    assert (scoped["inserted"], scoped["updated"], scoped["deleted"]) == (0, 1, 0)
    renamed = (INJECTIONS[1], INJECTIONS[1])
    assert target(conn)[renamed] == (INJECTIONS[1] + " (renamed)", INJECTIONS[1])
    assert {pair: row for pair, row in snapshot(conn).items() if pair != renamed} == {
        pair: row for pair, row in rows.items() if pair != renamed
    }


def long_text(seed: str, length: int = 100_000) -> str:
    """``length`` characters that do not compress (hex digests), so PostgreSQL has to store them out of line."""
    chunks = (hashlib.sha256(f"{seed}:{i}".encode()).hexdigest() for i in range(length // 64 + 1))
    return "".join(chunks)[:length]


def test_names_of_100_000_characters_are_stored_intact(conn: psycopg.Connection[Any]) -> None:
    device_name, parameter_name = long_text("device"), long_text("parameter")
    add_devices(conn, ("d_long", device_name, True), ("d1", "Device 1", True))
    add_parameters(conn, ("p_long", parameter_name), ("p1", "Temp"))
    add_measurements(conn, ("d_long", "p_long", INSIDE), ("d_long", "p1", INSIDE), ("d1", "p_long", INSIDE))

    summary = run_sync(conn)

    assert summary["inserted"] == 3
    assert target(conn) == {
        ("d_long", "p_long"): (device_name, parameter_name),
        ("d_long", "p1"): (device_name, "Temp"),
        ("d1", "p_long"): ("Device 1", parameter_name),
    }
    lengths = query(
        conn,
        "SELECT length(device_name), length(parameter_name), "
        "encode(sha256(convert_to(device_name, 'UTF8')), 'hex'), "
        "encode(sha256(convert_to(parameter_name, 'UTF8')), 'hex') "
        "FROM iot_data.device_parameters WHERE device_id = 'd_long' AND parameter_id = 'p_long'",
    )
    assert lengths == [
        (
            100_000,
            100_000,
            hashlib.sha256(device_name.encode()).hexdigest(),
            hashlib.sha256(parameter_name.encode()).hexdigest(),
        )
    ]
    assert {row[4] for row in change_log(conn) if row[2] == "d_long"} == {device_name}

    # Unchanged long names are not rewritten; a change in their last character is an update.
    rows = snapshot(conn)
    again = run_sync(conn, run_id="run-2", end=END + timedelta(minutes=1))
    assert (again["inserted"], again["updated"], again["deleted"]) == (0, 0, 0)
    assert snapshot(conn) == rows
    changed = device_name[:-1] + ("0" if device_name[-1] != "0" else "1")
    execute(conn, "UPDATE iot_data.redshift_devices SET device_name = %s WHERE device_id = 'd_long'", (changed,))
    renamed = run_sync(conn, run_id="run-3", end=END + timedelta(minutes=2))
    assert (renamed["inserted"], renamed["updated"], renamed["deleted"]) == (0, 2, 0)
    assert target(conn)[("d_long", "p_long")] == (changed, parameter_name)


def test_an_id_too_long_for_the_index_is_a_clear_error_or_skipped_and_nothing_is_half_written(
    conn: psycopg.Connection[Any],
) -> None:
    """A 100 000-character device id cannot go into the primary-key index (at most about 2.7 kB a row).

    Either outcome is acceptable here, as long as it is explicit and leaves nothing half-written: the sync
    fails with PostgreSQL's "index row" error and changes nothing, or it skips and counts the pair and
    applies everything else.
    """
    long_id = long_text("device id")
    add_devices(conn, (long_id, "Long id", True), ("d1", "Device 1", True))
    add_parameters(conn, ("p1", "Temp"), ("p2", "Volt"))
    add_measurements(conn, (long_id, "p1", INSIDE), ("d1", "p1", INSIDE), ("d1", "p2", INSIDE))
    sync.ensure_schema(conn, load_settings())
    add_target(conn, ("d1", "Device 1", "p1", "Temp"), ("d9", "Gone", "p1", "Temp"))
    before, source_sums = snapshot(conn), sources(conn)

    try:
        summary = run_sync(conn)
    except psycopg.errors.ProgramLimitExceeded as error:
        assert "index row" in str(error)
        assert snapshot(conn) == before
        assert change_log(conn) == []
        assert history(conn) == []
    else:
        assert summary["skipped"] >= 1
        assert target(conn) == {("d1", "p1"): ("Device 1", "Temp"), ("d1", "p2"): ("Device 1", "Volt")}
    assert sources(conn) == source_sums
    assert staging_tables(conn) == []


def test_null_far_future_and_infinite_measurement_times_are_ignored(conn: psycopg.Connection[Any]) -> None:
    add_devices(conn, ("d1", "Device 1", True), ("d_future", "Future only", True))
    add_parameters(conn, *((p, p.title()) for p in ("p_in", "p_null", "p_future", "p_infinity", "p_before")))
    add_measurements(
        conn,
        ("d1", "p_in", INSIDE),
        ("d1", "p_null", None),
        ("d1", "p_future", END + timedelta(days=365 * 100)),
        ("d1", "p_future", datetime(9999, 12, 31, 23, 59, tzinfo=UTC)),
        ("d_future", "p_in", END + timedelta(seconds=1)),
    )
    execute(
        conn,
        "INSERT INTO iot_data.measurements VALUES ('d1', 'p_infinity', 'infinity', 1), "
        "('d1', 'p_before', '-infinity', 1), ('d1', 'p_before', '4713-01-01 BC', 1)",
    )
    before = sources(conn)

    summary = run_sync(conn)

    assert target(conn) == {("d1", "p_in"): ("Device 1", "P_In")}
    assert (summary["observed_pairs"], summary["measurement_id_null"], summary["skipped"]) == (1, 0, 0)
    assert sources(conn) == before


def test_device_ids_differing_only_in_case_or_spaces_are_distinct_devices(conn: psycopg.Connection[Any]) -> None:
    ids = ("dev-1", "Dev-1", "DEV-1", "dev-1 ", " dev-1", "dev-1\t")
    add_devices(conn, *((device, f"name of {device!r}", True) for device in ids))
    add_parameters(conn, ("p1", "lower"), ("P1", "upper"), ("p1 ", "trailing"))
    add_measurements(
        conn, *((device, "p1", INSIDE) for device in ids), ("dev-1", "P1", INSIDE), ("dev-1", "p1 ", INSIDE)
    )

    summary = run_sync(conn)

    expected = {(device, "p1"): (f"name of {device!r}", "lower") for device in ids}
    expected |= {("dev-1", "P1"): ("name of 'dev-1'", "upper"), ("dev-1", "p1 "): ("name of 'dev-1'", "trailing")}
    assert target(conn) == expected
    assert (summary["active_devices"], summary["device_duplicate_rows"], summary["inserted"]) == (6, 0, 8)

    # A run scoped to "dev-1" renames exactly its three rows, none of its look-alikes.
    rows = snapshot(conn)
    execute(conn, "UPDATE iot_data.redshift_devices SET device_name = device_name || ' v2'")
    scoped = run_sync(conn, run_id="run-scoped", end=END + timedelta(minutes=1), device_ids=["dev-1"])
    assert (scoped["updated"], scoped["inserted"], scoped["deleted"]) == (3, 0, 0)
    after = snapshot(conn)
    assert {pair for pair in after if after[pair] != rows[pair]} == {("dev-1", "p1"), ("dev-1", "P1"), ("dev-1", "p1 ")}
    assert target(conn)[("dev-1", "p1")] == ("name of 'dev-1' v2", "lower")


def test_5000_unknown_parameter_ids_are_skipped_and_counted_quickly_and_their_rows_kept(
    conn: psycopg.Connection[Any],
) -> None:
    unknown = [f"unknown-{i:05d}" for i in range(5000)]
    add_devices(conn, ("d1", "Device 1", True))
    add_parameters(conn, ("p1", "Temp"))
    add_measurements(conn, ("d1", "p1", INSIDE), *(("d1", p, INSIDE) for p in unknown))
    sync.ensure_schema(conn, load_settings())
    # Rows of pairs whose parameter is unknown now must neither be renamed nor deleted.
    add_target(conn, *(("d1", "Device 1", p, f"was {p}") for p in unknown[:30]))
    before = snapshot(conn)

    started = time.monotonic()
    summary = run_sync(conn)
    elapsed = time.monotonic() - started

    assert elapsed < 15, f"5000 unknown parameters took {elapsed:.1f} s"
    assert (summary["observed_pairs"], summary["parameter_unknown"], summary["desired_pairs"]) == (5001, 5000, 1)
    assert (summary["inserted"], summary["updated"], summary["deleted"], summary["skipped"]) == (1, 0, 0, 5000)
    after = snapshot(conn)
    assert {pair: row for pair, row in after.items() if pair != ("d1", "p1")} == before
    assert target(conn)[("d1", "p1")] == ("Device 1", "Temp")
    ((run_id, status, applied, skipped, by_reason),) = history(conn)
    assert (run_id, status, applied, skipped) == ("run-1", "success", True, 5000)
    assert by_reason["parameter_unknown"] == 5000
    assert sum(by_reason.values()) == 5000


# --- configuration -------------------------------------------------------------------------------------


def load_dagbag() -> DagBag:
    return DagBag(dag_folder=str(REPO / "dags"))


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DEVICE_SYNC_MEASUREMENTS_TABLE", "iot_data.measurements; DROP TABLE iot_data.measurements"),
        ("DEVICE_SYNC_MEASUREMENTS_TABLE", 'iot_data."measurements"'),
        ("DEVICE_SYNC_MEASUREMENTS_TABLE", "iot_data.measurements--"),
        ("DEVICE_SYNC_MEASUREMENTS_TABLE", "measurements"),
        ("DEVICE_SYNC_MEASUREMENTS_TABLE", "a.b.c"),
        ("DEVICE_SYNC_MEASUREMENTS_TIME_COLUMN", "time) OR (1=1"),
        ("DEVICE_SYNC_STAGING_SCHEMA", "device_sync; DROP SCHEMA iot_data CASCADE"),
        ("DEVICE_SYNC_STAGE", "staging"),
        ("DEVICE_SYNC_STAGE", "PROD"),
        ("DEVICE_SYNC_STAGE", ""),
        ("DEVICE_SYNC_LOOKBACK_MINUTES", "0"),
        ("DEVICE_SYNC_LOOKBACK_MINUTES", "-1"),
        ("DEVICE_SYNC_LOOKBACK_MINUTES", "-1440"),
        ("DEVICE_SYNC_LOOKBACK_MINUTES", "1.5"),
        ("DEVICE_SYNC_LOOKBACK_MINUTES", "44641"),
        ("DEVICE_SYNC_SCHEDULE", "not a cron"),
        ("DEVICE_SYNC_SCHEDULE", "61 * * * *"),
        ("DEVICE_SYNC_SCHEDULE", "* * *"),
        ("DEVICE_SYNC_SCHEDULE", "0 * * * *; rm -rf /"),
    ],
)
def test_bad_configuration_is_an_import_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)

    bag = load_dagbag()

    assert DAG_ID not in bag.dags  # the maintenance DAG reads no settings when parsed
    ((message),) = bag.import_errors.values()
    assert variable in message
    assert "Invalid device-sync configuration" in message
    assert repr(value) in message


# --- DAG runs ------------------------------------------------------------------------------------------


@pytest.fixture
def dag(airflow_db: None, moto_server: str, conn: psycopg.Connection[Any]) -> Any:
    conn.commit()
    bag = load_dagbag()
    assert bag.import_errors == {}
    return bag.dags[DAG_ID]


def seed_one_pair(conn: psycopg.Connection[Any]) -> dict[tuple[str, str], tuple[Any, ...]]:
    """A source that would insert one row and delete another if a run got through; returns the target."""
    add_devices(conn, ("d1", "Device 1", True))
    add_parameters(conn, ("p1", "Temp"))
    add_measurements(conn, ("d1", "p1", INSIDE))
    sync.ensure_schema(conn, load_settings())
    add_target(conn, ("d9", "Gone", "p1", "Temp"))
    conn.commit()
    return snapshot(conn)


def test_unknown_postgres_connection_id_imports_fine_but_fails_the_first_task_naming_it(
    conn: psycopg.Connection[Any],
    airflow_db: None,
    moto_server: str,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    before = seed_one_pair(conn)
    monkeypatch.setenv("DEVICE_SYNC_POSTGRES_CONN_ID", "nope")
    monkeypatch.setenv("DEVICE_SYNC_RETRY_DELAY_SECONDS", "1")  # dag.test() waits for retry delays: 1, 2, 4 s
    bag = load_dagbag()
    assert bag.import_errors == {}
    dag = bag.dags[DAG_ID]
    retries = dag.get_task("discover_active_devices").retries
    assert retries == 3  # the dev stage's DEVICE_SYNC_RETRIES

    dag_run = dag.test(logical_date=END)

    states = {ti.task_id: (ti.state, ti.try_number) for ti in dag_run.get_task_instances()}
    assert dag_run.state == "failed"
    state, tries = states["discover_active_devices"]
    assert state == "failed"
    # Failed for good, not retried forever. (Today it is tried retries + 1 times: the hook's
    # AirflowNotFoundException is not among the errors tasks.py fails at once without retries.)
    assert 1 <= tries <= retries + 1
    for task_id in STEP_TASK_IDS[1:]:
        assert states[task_id][0] == "upstream_failed", task_id
    assert states["fail_if_sync_failed"][0] == "failed"
    assert "The conn_id `nope` isn't defined" in capfd.readouterr().out
    assert snapshot(conn) == before
    assert history(conn) == []


TRIGGER_PARAM_CASES = [
    ({"dry_run": "yes"}, "dry_run"),
    ({"dry_run": 1}, "dry_run"),
    ({"lookback_minutes": "60"}, "lookback_minutes"),
    ({"lookback_minutes": 1.5}, "lookback_minutes"),
    ({"lookback_minutes": 0}, "lookback_minutes"),
    ({"lookback_minutes": -60}, "lookback_minutes"),
    ({"lookback_minutes": MAX_LOOKBACK_MINUTES + 1}, "lookback_minutes"),
    ({"device_ids": []}, "device_ids"),
    ({"device_ids": "d1"}, "device_ids"),
    ({"device_ids": [1]}, "device_ids"),
    ({"device_ids": [""]}, "device_ids"),
    ({"device_ids": ["d" * 257]}, "device_ids"),
    ({"device_ids": [f"d{i}" for i in range(MAX_DEVICE_IDS + 1)]}, "device_ids"),
]


@pytest.mark.parametrize(
    ("run_conf", "field"),
    TRIGGER_PARAM_CASES,
    ids=[
        "dry_run-string",
        "dry_run-integer",
        "lookback-string",
        "lookback-float",
        "lookback-zero",
        "lookback-negative",
        "lookback-over-max",
        "device_ids-empty",
        "device_ids-string",
        "device_ids-integer-item",
        "device_ids-empty-item",
        "device_ids-item-too-long",
        "device_ids-10001",
    ],
)
def test_invalid_trigger_params_are_refused_naming_the_field_and_nothing_is_written(
    dag: Any, conn: psycopg.Connection[Any], run_conf: dict[str, Any], field: str
) -> None:
    before = seed_one_pair(conn)

    with pytest.raises(ParamValidationError, match=f"param {field}"):
        dag.test(logical_date=END, run_conf=run_conf)

    assert snapshot(conn) == before
    assert history(conn) == []
    assert staging_tables(conn) == []


def test_a_valid_trigger_param_run_after_the_refused_ones_still_applies(
    dag: Any, conn: psycopg.Connection[Any]
) -> None:
    """The control case for the test above: the same seed with valid params is applied."""
    seed_one_pair(conn)

    dag_run = dag.test(logical_date=END, run_conf={"device_ids": ["d1", "d9"], "lookback_minutes": LOOKBACK})

    assert dag_run.state == "success"
    assert target(conn) == {("d1", "p1"): ("Device 1", "Temp")}
    assert [row[:3] for row in history(conn)] == [(dag_run.run_id, "success", True)]


# --- names made only of whitespace or invisible characters, blank ids -----------------------------------------

# Names made only of Unicode White_Space characters, none of them the ASCII space alone, and names made only of
# invisible characters (zero-width space, byte order mark, joiners, bidirectional marks, soft hyphen).
WHITESPACE_NAMES = ("\t\n", "\u00a0", "\u2003\u3000", "\r\x0b\x0c", "\u2028 \u205f", "\x85", "\u1680\u202f")
INVISIBLE_NAMES = ("\u200b", "\ufeff", "\u200b\ufeff\u200b", "\u200c\u200d\u2060", "\u200e\u202e", "\u00ad", " \u200b ")


@pytest.mark.parametrize("blank_name", WHITESPACE_NAMES + INVISIBLE_NAMES)
def test_names_made_only_of_whitespace_or_invisible_characters_are_missing_and_skipped(
    conn: psycopg.Connection[Any], blank_name: str
) -> None:
    add_devices(conn, ("d1", "Device 1", True), ("d2", blank_name, True))
    add_parameters(conn, ("p1", "Temp"), ("p2", blank_name))
    add_measurements(conn, ("d1", "p1", INSIDE), ("d1", "p2", INSIDE), ("d2", "p1", INSIDE))

    summary = run_sync(conn)

    assert target(conn) == {("d1", "p1"): ("Device 1", "Temp")}
    assert (summary["device_name_missing_pairs"], summary["parameter_name_missing"]) == (1, 1)
    assert summary["skipped"] == 2


def test_a_name_with_a_visible_character_among_whitespace_or_invisible_ones_is_usable(
    conn: psycopg.Connection[Any],
) -> None:
    add_devices(conn, ("d1", "\u00a0x\t", True))
    add_parameters(conn, ("p1", "\u200bT\ufeff"))
    add_measurements(conn, ("d1", "p1", INSIDE))
    run_sync(conn)
    assert target(conn) == {("d1", "p1"): ("\u00a0x\t", "\u200bT\ufeff")}


@pytest.mark.parametrize("blank_id", ["", "   ", "\t", "\u00a0\u3000", "\u200b", "\ufeff "])
def test_a_blank_device_id_is_no_device_skipped_and_counted(conn: psycopg.Connection[Any], blank_id: str) -> None:
    add_devices(conn, (blank_id, "Nameless id", True), ("d1", "Device 1", True))
    add_parameters(conn, ("p1", "Temp"))
    add_measurements(conn, (blank_id, "p1", INSIDE), ("d1", "p1", INSIDE))

    summary = run_sync(conn)

    assert target(conn) == {("d1", "p1"): ("Device 1", "Temp")}
    assert (summary["active_devices"], summary["device_id_empty"], summary["skipped"]) == (1, 1, 1)
    assert summary["device_duplicate_rows"] == 0
