"""Property test: on random sources and a random existing target, the sync equals a plain-Python model.

The model is written from the sync's rules, not from its SQL:

* a device is active when one of its rows has a non-NULL id and status TRUE; its name is chosen among
  those rows: a non-blank name first, then the smallest name (in the database's collation);
* a parameter's name is chosen likewise among all rows with that (non-NULL) id;
* observed pairs are the distinct (device, parameter) of measurements with ``start <= time < end``,
  non-NULL ids and an active device;
* an observed pair is desired when its device name is non-blank and its parameter is known with a
  non-blank name, otherwise it is skipped;
* the final target is the desired pairs (with their names) plus the old rows of skipped pairs, unchanged;
* a blank name is NULL or made only of Unicode White_Space and invisible characters; a device id made
  only of them (or empty) is no device (skipped and counted).

Ids come from small alphabets with case and trailing-space variants so that collisions happen; names are
lowercase ASCII letters, spaces and a few other whitespace characters. A second sync over the same
window must then write nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from psycopg import sql

from conftest import reset_sources
from device_sync import sync
from device_sync.config import load_settings
from device_sync.staging import StagingTables
from device_sync.window import Window

END = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
LOOKBACK = 60
START = END - timedelta(minutes=LOOKBACK)
MICROSECOND = timedelta(microseconds=1)

# Small id alphabets with case and trailing-space variants, so that ids collide and near-collide.
DEVICE_IDS = ["d1", "D1", "d1 ", "d2", "", "  ", "\u200b", None]
MEASURED_DEVICE_IDS = [*DEVICE_IDS, "d3"]  # d3 has no device row
PARAMETER_IDS = ["p1", "P1", "p1 ", "p2", None]
MEASURED_PARAMETER_IDS = [*PARAMETER_IDS, "p9"]  # p9 has no parameter row
TARGET_DEVICE_IDS = [d for d in MEASURED_DEVICE_IDS if d is not None]
TARGET_PARAMETER_IDS = [p for p in MEASURED_PARAMETER_IDS if p is not None]
# Times inside the window (both of its edges included) and outside it (its end, just before its start,
# far away, NULL).
INSIDE_TIMES = [START, START + MICROSECOND, START + timedelta(minutes=LOOKBACK // 2), END - MICROSECOND]
OUTSIDE_TIMES = [
    START - timedelta(days=400),
    START - MICROSECOND,
    END,
    END + MICROSECOND,
    END + timedelta(days=3650),
    None,
]

# Names: lowercase ASCII letters and spaces only (see collation_rank for their order). Draws are weighted
# towards usable values (repeated branches) so that most examples have desired pairs, updates and deletes,
# while NULL ids, unknown ids, inactive devices and blank names still come up in many examples.
names = st.text(alphabet="ab \t\u00a0", max_size=3)
usable_names = st.text(alphabet="ab \u3000", min_size=1, max_size=3).filter(lambda n: not blank(n))
source_names = st.one_of(
    usable_names,
    usable_names,
    names,
    st.sampled_from([None, "", " ", "   ", "\t\n", "\u00a0", "\u2003 \u3000", "\u200b", "\ufeff \u200d", "a\u200b"]),
)
statuses = st.sampled_from([True, True, True, False, None])
times = st.one_of(*[st.sampled_from(INSIDE_TIMES)] * 3, st.sampled_from(OUTSIDE_TIMES))

Pair = tuple[str, str]
DeviceRow = tuple[str | None, str | None, bool | None]
ParameterRow = tuple[str | None, str | None]
MeasurementRow = tuple[str | None, str | None, datetime | None]
Scenario = tuple[list[DeviceRow], list[ParameterRow], list[MeasurementRow], dict[Pair, tuple[str, str]]]


# Unicode's White_Space property, written out (Python's str.isspace also counts U+001C..U+001F), and the
# invisible characters that a blank name or id may hold.
WHITE_SPACE = set("\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000") | {
    chr(c) for c in range(0x2000, 0x200B)
}
INVISIBLE = {"\u200b", "\u200c", "\u200d", "\ufeff"}


def blank(name: str | None) -> bool:
    """NULL or made only of White_Space and invisible characters."""
    return name is None or all(character in WHITE_SPACE | INVISIBLE for character in name)


def _often(*choices: Iterable[Any]) -> st.SearchStrategy[Any]:
    """One of the non-empty ``choices`` (each equally likely), then one value of it."""
    return st.one_of(*(st.sampled_from(sorted(set(c), key=repr)) for c in choices if c))


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    """Random sources and an existing target: valid rows (non-NULL ids, unique pairs) with arbitrary names.

    Most examples have a usable device row and parameter row; measurements often name devices and parameters
    that have (usable) rows, target pairs are often measured pairs and target names often source names. So
    desired pairs, updates, unchanged rows and kept rows of skipped pairs come up in many examples, besides
    all kinds of bad rows.
    """
    # Any rows, plus (mostly) a row or two that is certainly usable, all in a random order.
    device_rows = draw(st.lists(st.tuples(st.sampled_from(DEVICE_IDS), source_names, statuses), max_size=7))
    usable_device_row = st.tuples(st.sampled_from([d for d in DEVICE_IDS if not blank(d)]), usable_names, st.just(True))
    device_rows += [draw(usable_device_row) for _ in range(draw(st.sampled_from([1, 1, 2, 0])))]
    device_rows = draw(st.permutations(device_rows))
    parameter_rows = draw(st.lists(st.tuples(st.sampled_from(PARAMETER_IDS), source_names), max_size=6))
    usable_parameter_row = st.tuples(st.sampled_from(PARAMETER_IDS[:-1]), usable_names)
    parameter_rows += [draw(usable_parameter_row) for _ in range(draw(st.sampled_from([1, 1, 2, 0])))]
    parameter_rows = draw(st.permutations(parameter_rows))
    usable_devices = [d for d, n, s in device_rows if d is not None and s is True and not blank(n)]
    usable_parameters = [p for p, n in parameter_rows if p is not None and not blank(n)]
    active_devices = [d for d, _, s in device_rows if d is not None and s is True]
    device_ids = _often(usable_devices, active_devices, [d for d, _, _ in device_rows], MEASURED_DEVICE_IDS)
    parameter_ids = _often(usable_parameters, [p for p, _ in parameter_rows], MEASURED_PARAMETER_IDS)
    measurement_rows = draw(st.lists(st.tuples(device_ids, parameter_ids, times), min_size=3, max_size=14))
    measured = [(d, p) for d, p, _ in measurement_rows if d is not None and p is not None]
    pairs = _often(measured, [(d, p) for d in TARGET_DEVICE_IDS for p in TARGET_PARAMETER_IDS])
    used_names = [n for _, n, _ in device_rows if n is not None] + [n for _, n in parameter_rows if n is not None]
    target_names = _often(used_names, ["", " ", "a", "b", "ab", "b a"]) | names
    old = draw(st.dictionaries(pairs, st.tuples(target_names, target_names), max_size=8))
    return device_rows, parameter_rows, measurement_rows, old


# --- the model -------------------------------------------------------------------------------------------


def choose(candidates: Iterable[str | None], rank: dict[str, int]) -> str | None:
    """A usable name first, then the smallest (``rank`` is the database collation's order), NULL last."""
    return min(candidates, key=lambda n: (blank(n), n is None, rank[n] if n is not None else 0))


def model(
    device_rows: Sequence[DeviceRow],
    parameter_rows: Sequence[ParameterRow],
    measurement_rows: Sequence[MeasurementRow],
    old: dict[Pair, tuple[str, str]],
    rank: dict[str, int],
) -> tuple[dict[Pair, tuple[str, str]], dict[str, int], set[Pair]]:
    """The expected final target, run summary and skipped pairs."""
    active_rows: dict[str, list[str | None]] = {}
    for device_id, name, status in device_rows:
        if not blank(device_id) and status is True:
            active_rows.setdefault(device_id, []).append(name)
    device_name = {device_id: choose(rows, rank) for device_id, rows in active_rows.items()}

    parameter_rows_by_id: dict[str, list[str | None]] = {}
    for parameter_id, name in parameter_rows:
        if parameter_id is not None:
            parameter_rows_by_id.setdefault(parameter_id, []).append(name)
    parameter_name = {parameter_id: choose(rows, rank) for parameter_id, rows in parameter_rows_by_id.items()}

    in_window = {(d, p) for d, p, t in measurement_rows if t is not None and START <= t < END}
    kept = {(d, p) for d, p in in_window if d is None or d in device_name}
    observed = {(d, p) for d, p in kept if d is not None and p is not None}

    desired: dict[Pair, tuple[str, str]] = {}
    skipped: dict[str, set[Pair]] = {
        "device_name_missing": set(),
        "parameter_unknown": set(),
        "parameter_name_missing": set(),
    }
    for d, p in observed:
        if blank(device_name[d]):
            skipped["device_name_missing"].add((d, p))
        elif p not in parameter_name:
            skipped["parameter_unknown"].add((d, p))
        elif blank(parameter_name[p]):
            skipped["parameter_name_missing"].add((d, p))
        else:
            desired[(d, p)] = (device_name[d], parameter_name[p])  # type: ignore[assignment]
    all_skipped = set().union(*skipped.values())

    final = {**{pair: old[pair] for pair in old if pair in all_skipped}, **desired}
    changes = {
        "inserts": sum(1 for pair in desired if pair not in old),
        "updates": sum(1 for pair, names in desired.items() if pair in old and old[pair] != names),
        "deletes": sum(1 for pair in old if pair not in observed),
    }
    summary = {
        "active_devices": len(device_name),
        "device_name_missing": sum(1 for name in device_name.values() if blank(name)),
        "device_id_null": sum(1 for d, _, _ in device_rows if d is None),
        "device_id_empty": sum(1 for d, _, s in device_rows if d is not None and blank(d) and s is True),
        "device_status_null": sum(1 for d, _, s in device_rows if d is not None and s is None),
        "device_duplicate_rows": sum(len(rows) - 1 for rows in active_rows.values()),
        "observed_pairs": len(observed),
        "measurement_id_null": sum(1 for d, p in kept if d is None or p is None),
        "desired_pairs": len(desired),
        "device_name_missing_pairs": len(skipped["device_name_missing"]),
        "parameter_unknown": len(skipped["parameter_unknown"]),
        "parameter_name_missing": len(skipped["parameter_name_missing"]),
        "parameter_id_null": sum(1 for p, _ in parameter_rows if p is None),
        "parameter_duplicate_rows": sum(len(rows) - 1 for rows in parameter_rows_by_id.values()),
        **changes,
        "inserted": changes["inserts"],
        "updated": changes["updates"],
        "deleted": changes["deletes"],
    }
    summary["skipped"] = sum(
        summary[key]
        for key in (
            "device_name_missing_pairs",
            "device_id_null",
            "device_id_empty",
            "device_status_null",
            "device_duplicate_rows",
            "measurement_id_null",
            "parameter_unknown",
            "parameter_name_missing",
            "parameter_id_null",
            "parameter_duplicate_rows",
        )
    )
    return final, summary, all_skipped


# --- database helpers ------------------------------------------------------------------------------------


def query(conn: psycopg.Connection[Any], statement: str | sql.Composable, params: Any = None) -> list[tuple[Any, ...]]:
    with conn.transaction():
        return conn.execute(statement, params).fetchall()


def insert_rows(
    conn: psycopg.Connection[Any], table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    if not rows:
        return
    statement = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        sql.Identifier(*table.split(".")),
        sql.SQL(", ").join(sql.Identifier(column) for column in columns),
        sql.SQL(", ").join(sql.Placeholder() for _ in columns),
    )
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(statement, rows)


def collation_rank(conn: psycopg.Connection[Any], strings: Iterable[str | None]) -> dict[str, int]:
    """Each string's position in ``ORDER BY`` under the database's default collation (the one the SQL uses).

    The model takes "smallest name" from here rather than from Python's ``sorted``: the test server's
    databases are C.UTF-8 (byte order), where the two agree on these names, but a server whose default is a
    linguistic collation may order spaces and letters differently, and the model has to agree with
    whatever PostgreSQL does.
    """
    distinct = sorted({s for s in strings if s is not None})
    rows = query(conn, "SELECT s FROM unnest(%s::text[]) AS s ORDER BY s", (distinct,))
    return {s: position for position, (s,) in enumerate(rows)}


def target_rows(conn: psycopg.Connection[Any]) -> dict[Pair, tuple[str, str, str]]:
    rows = query(
        conn, "SELECT device_id, parameter_id, device_name, parameter_name, xmin::text FROM iot_data.device_parameters"
    )
    return {(d, p): (dn, pn, xmin) for d, p, dn, pn, xmin in rows}


# --- the property ----------------------------------------------------------------------------------------


@settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    max_examples=60,
    deadline=None,
    database=None,
    print_blob=True,
)
@given(scenario=scenarios(), pair_index=st.booleans(), shards=st.sampled_from([1, 1, 2, 3]))
def test_sync_equals_the_model_and_a_second_run_writes_nothing(
    conn: psycopg.Connection[Any], scenario: Scenario, pair_index: bool, shards: int
) -> None:
    """Whichever way the pairs are found (skip scan with the recommended index, window scan without it) and
    however many aggregation shards there are."""
    device_rows, parameter_rows, measurement_rows, old = scenario
    # Each example starts from blank sources, no target table and no staging schema.
    reset_sources(conn)
    with conn.transaction():
        conn.execute("DROP TABLE IF EXISTS iot_data.device_parameters; DROP SCHEMA IF EXISTS device_sync CASCADE")
    config = load_settings()
    staging = StagingTables.for_run(config.staging_schema, "dag", "run-x")
    window = Window.ending_at(END, LOOKBACK)
    if old:  # otherwise the sync creates the target table itself
        sync.ensure_schema(conn, config)
    if pair_index:
        with conn.transaction():
            conn.execute('CREATE INDEX ON iot_data.measurements (device_id, parameter_id, "time")')
    insert_rows(conn, "iot_data.redshift_devices", ("device_id", "device_name", "status"), device_rows)
    insert_rows(conn, "iot_data.timescale_parameters", ("parameter_id", "parameter_name"), parameter_rows)
    insert_rows(
        conn,
        "iot_data.measurements",
        ("device_id", "parameter_id", "time", "value"),
        [(*m, 0.5) for m in measurement_rows],
    )
    insert_rows(
        conn,
        "iot_data.device_parameters",
        ("device_id", "device_name", "parameter_id", "parameter_name"),
        [(d, dn, p, pn) for (d, p), (dn, pn) in old.items()],
    )
    rank = collation_rank(conn, [n for _, n, _ in device_rows] + [n for _, n in parameter_rows])
    expected_target, expected_summary, skipped_pairs = model(device_rows, parameter_rows, measurement_rows, old, rank)

    # What the examples cover (pytest --hypothesis-show-statistics).
    for key in ("desired_pairs", "device_name_missing_pairs", "parameter_unknown", "parameter_name_missing"):
        event(f"{key} > 0: {expected_summary[key] > 0}")
    for key in ("inserts", "updates", "deletes"):
        event(f"{key} > 0: {expected_summary[key] > 0}")
    event(f"old rows of skipped pairs kept: {any(pair in skipped_pairs for pair in old)}")
    names_per_device: dict[str | None, set[str | None]] = {}
    for d, n, status in device_rows:
        if status is True:
            names_per_device.setdefault(d, set()).add(n)
    event(f"an active device has rows with different names: {any(len(v) > 1 for v in names_per_device.values())}")
    unchanged = [pair for pair in old if pair not in skipped_pairs and expected_target.get(pair) == old[pair]]
    event(f"old rows already right: {bool(unchanged)}")

    # The model is the plain semantics; the safety guards have tests of their own.
    summary = sync.sync_once(conn, config, staging, window, allow_mass_delete=True, shards=shards)

    after_first = target_rows(conn)
    assert {pair: (dn, pn) for pair, (dn, pn, _) in after_first.items()} == expected_target
    method = sync.SKIP_SCAN if pair_index else sync.WINDOW_SCAN
    assert summary == {**expected_summary, "id_too_long": 0, "applied": True, "guard": None, "method": method}

    again = sync.sync_once(conn, config, staging, window, allow_mass_delete=True, shards=shards)

    assert target_rows(conn) == after_first  # same rows, same names, same xmin: nothing was written
    assert (again["inserts"], again["updates"], again["deletes"]) == (0, 0, 0)
    assert (again["inserted"], again["updated"], again["deleted"]) == (0, 0, 0)
    staged = "SELECT count(*) FROM pg_tables WHERE schemaname = %s AND starts_with(tablename, %s)"
    assert query(conn, staged, (config.staging_schema, staging.run_key)) == [(0,)]
