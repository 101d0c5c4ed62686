"""One list of the run history's columns: ``history.HISTORY_FIELDS`` (what a run writes) against the table the
migrations create and the column list of history/record_run.sql, read from the SQL files' text (no database)."""

from __future__ import annotations

import re

from conftest import REPO
from device_sync.history import HISTORY_FIELDS

SQL = REPO / "include" / "sql"
TYPES = r"(TEXT|TIMESTAMPTZ|TIMESTAMP|BOOLEAN|INTEGER|BIGINT|BIGSERIAL|JSONB|DOUBLE|NUMERIC|SMALLINT|UUID)"


def run_history_columns() -> list[str]:
    """The columns of {run_history}: the baseline's CREATE TABLE, then every later migration's ADD/DROP COLUMN."""
    migrations = sorted((SQL / "migrations").glob("[0-9][0-9][0-9][0-9]_*.sql"))
    assert migrations[0].name == "0001_baseline.sql"
    baseline = migrations[0].read_text(encoding="utf-8")
    create = re.search(r"CREATE TABLE IF NOT EXISTS \{run_history\} \((.*?)\n\);", baseline, re.S)
    assert create is not None, "0001_baseline.sql no longer creates {run_history}"
    columns = []
    for line in create.group(1).splitlines():
        line = line.split("--", 1)[0].strip()
        match = re.match(rf"(\w+)\s+{TYPES}\b", line, re.I)
        if match:
            columns.append(match.group(1))
    for later in migrations[1:]:
        text = later.read_text(encoding="utf-8")
        for statement in re.findall(r"ALTER TABLE\s+(?:IF EXISTS\s+)?\{run_history\}(.*?);", text, re.S | re.I):
            columns += re.findall(r"ADD COLUMN\s+(?:IF NOT EXISTS\s+)?(\w+)", statement, re.I)
            for dropped in re.findall(r"DROP COLUMN\s+(?:IF EXISTS\s+)?(\w+)", statement, re.I):
                columns.remove(dropped)
    return columns


def test_the_history_fields_are_the_columns_of_run_history() -> None:
    columns = run_history_columns()
    assert len(columns) >= 10  # parsed, not an empty match
    assert sorted(HISTORY_FIELDS) == sorted(columns)


def test_record_run_inserts_every_history_field_in_order_with_its_own_parameter() -> None:
    text = (SQL / "device_parameter_sync" / "history" / "record_run.sql").read_text(encoding="utf-8")
    insert = re.search(r"INSERT INTO \{run_history\} AS h \((.*?)\)\s*VALUES\s*\((.*?)\)\s*ON CONFLICT", text, re.S)
    assert insert is not None, "record_run.sql no longer inserts into {run_history}"
    inserted = [name.strip() for name in insert.group(1).split(",")]
    values = re.findall(r"%\((\w+)\)s", insert.group(2))
    assert inserted == list(HISTORY_FIELDS)
    assert values == list(HISTORY_FIELDS)


def test_the_history_fields_have_no_duplicates() -> None:
    assert len(HISTORY_FIELDS) == len(set(HISTORY_FIELDS))
