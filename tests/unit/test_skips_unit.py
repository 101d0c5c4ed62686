"""Bad source data that a run skips and counts (``device_sync.skips``): the totals over the steps' summaries,
and one home for the skip reasons: the names the steps' SQL assigns and counts are exactly
``skips.SKIP_REASONS`` (read from the SQL files' text, no database)."""

from __future__ import annotations

import re

from conftest import REPO
from device_sync.skips import SKIP_REASONS, skipped_by_reason, skipped_total

STEPS_SQL = REPO / "include" / "sql" / "device_parameter_sync" / "steps"

# The summaries' counts that are not skipped input: what a run found, and the devices whose name is missing
# (their *pairs* are the skip reason device_name_missing_pairs; counting both would count them twice).
NOT_SKIPPED = {"active_devices", "observed_pairs", "desired_pairs", "device_name_missing"}


# --- the totals -------------------------------------------------------------------------------------------


def test_skipped_by_reason_sums_each_reason_over_the_summaries() -> None:
    devices = {"device_id_null": 2, "device_duplicate_rows": 1, "active_devices": 40}
    pairs = {"parameter_unknown": 3, "id_too_long": 1, "desired_pairs": 90}
    more_pairs = {"parameter_unknown": 4}
    by_reason = skipped_by_reason(devices, pairs, more_pairs)
    assert list(by_reason) == list(SKIP_REASONS)  # every reason, in the one order
    assert by_reason["parameter_unknown"] == 7
    assert (by_reason["device_id_null"], by_reason["device_duplicate_rows"], by_reason["id_too_long"]) == (2, 1, 1)
    assert sum(by_reason.values()) == 11  # active_devices and desired_pairs are no skip reason


def test_a_reason_no_summary_reports_is_zero() -> None:
    assert skipped_by_reason() == dict.fromkeys(SKIP_REASONS, 0)
    assert skipped_by_reason({}, {"inserted": 5}) == dict.fromkeys(SKIP_REASONS, 0)


def test_skipped_total_is_the_sum_of_every_reason() -> None:
    summaries = [{reason: i + 1 for i, reason in enumerate(SKIP_REASONS)}, {"measurement_id_null": 10}]
    n = len(SKIP_REASONS)
    assert skipped_total(*summaries) == n * (n + 1) // 2 + 10
    assert skipped_total() == 0


def test_counts_as_strings_from_a_database_row_are_summed_as_integers() -> None:
    assert skipped_total({"parameter_unknown": "3"}, {"parameter_unknown": 2}) == 5


# --- one home: the SQL assigns and counts exactly SKIP_REASONS -------------------------------------------


def case_reasons() -> set[str]:
    """The skip_reason names resolve_parameter_names.sql's CASE assigns."""
    text = (STEPS_SQL / "resolve_parameter_names.sql").read_text(encoding="utf-8")
    case = re.search(r"\bCASE\b(.*?)\bEND\s+AS\s+skip_reason\b", text, re.S | re.I)
    assert case is not None, "resolve_parameter_names.sql no longer assigns skip_reason in a CASE"
    return set(re.findall(r"\bTHEN\s+'(\w+)'", case.group(1), re.I))


def summary_columns() -> dict[str, str]:
    """Every count column of the steps' *_summary.sql files, with the file it comes from."""
    columns: dict[str, str] = {}
    for path in sorted(STEPS_SQL.glob("*_summary.sql")):
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.split("--", 1)[0]
            if re.match(r"\s*\)\s*AS\b", line, re.I):  # a subquery's alias, not a column
                continue
            for name in re.findall(r"\bAS\s+(\w+)", line, re.I):
                columns[name] = path.name
    return columns


def test_the_sql_files_are_found_and_parsed() -> None:
    assert {"id_too_long", "parameter_unknown"} <= case_reasons()
    assert len({source for source in summary_columns().values()}) == 3  # discover, aggregate, resolve


def test_every_summary_count_is_a_skip_reason_or_a_known_other_count_and_every_skip_reason_is_counted() -> None:
    columns = set(summary_columns())
    assert columns - NOT_SKIPPED == set(SKIP_REASONS)
    assert columns >= NOT_SKIPPED  # the list of other counts names only real columns
    assert len(SKIP_REASONS) == len(set(SKIP_REASONS))


def test_every_reason_the_case_assigns_is_counted_as_a_skip_reason_and_nothing_else_is_counted() -> None:
    text = (STEPS_SQL / "resolve_parameter_names_summary.sql").read_text(encoding="utf-8")
    counted = dict(re.findall(r"skip_reason\s*=\s*'(\w+)'\s*\)\s*AS\s+(\w+)", text, re.I))
    assert set(counted) == case_reasons()
    assert set(counted.values()) <= set(SKIP_REASONS)
