"""Bad source data that a run skips and counts instead of failing: what counts as a missing name, and the
skip reasons, by the step summaries' keys (the one list of them; the steps' SQL assigns and counts them)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# What shows nothing: Unicode's White_Space characters, and the invisible ones (format characters and
# fillers: zero-width space and joiners, U+2060 word joiner, U+FEFF byte order mark, bidirectional marks, soft
# hyphen, Hangul fillers). A name or device id made only of these (or empty) is blank: the name is missing,
# the device id is no device. One regular expression class, bound as %(blank_name)s of the statements that
# judge them (PostgreSQL's btrim strips spaces only, and [[:space:]] depends on the database's locale).
BLANK_NAME_PATTERN = (
    r"^[\u0009-\u000D\u0020\u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000"
    r"\u00AD\u034F\u115F\u1160\u180E\u200B-\u200F\u202A-\u202E\u2060-\u2064\u2066-\u206F\u3164\uFEFF\uFFA0]*$"
)

# Source rows and observed pairs skipped as bad input, by the key of the step summary that counts them:
# device rows (discover_active_devices), measurement rows (aggregate), pairs and parameter rows (resolve).
SKIP_REASONS = (
    "id_too_long",
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


def skipped_by_reason(*summaries: Mapping[str, Any]) -> dict[str, int]:
    """The source rows and pairs skipped as bad input, by reason, over the steps' summaries."""
    return {reason: sum(int(summary.get(reason, 0)) for summary in summaries) for reason in SKIP_REASONS}


def skipped_total(*summaries: Mapping[str, Any]) -> int:
    """All source rows and pairs that were skipped as bad input, over the steps' summaries."""
    return sum(skipped_by_reason(*summaries).values())
