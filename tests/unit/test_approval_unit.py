"""approve_mass_delete's question and how its answer shows in the guard's error: pure, no I/O."""

from __future__ import annotations

import pytest

from device_sync import approval, tasks
from device_sync.config import load_settings
from device_sync.guards import MASS_DELETE, STALE_MEASUREMENTS, GuardTripped

REVIEW = {
    "inserts": 3,
    "updates": 1,
    "deletes": 60,
    "table_rows": 200,
    "fingerprint": "123",
    "deleted_sample": [
        {"device_id": "d141", "parameter_id": "p", "device_name": "Device 141", "parameter_name": "Param"},
        {"device_id": "d142", "parameter_id": "p", "device_name": None, "parameter_name": None},
    ],
}


def test_the_question_shows_counts_share_sample_and_the_change_list() -> None:
    settings = load_settings()
    subject = approval.question_subject(settings, REVIEW)
    body = approval.question_body(settings, "manual__2026-12-03T10:00:00+00:00", REVIEW)

    assert subject == "device-sync dev: approve deleting 60 of 200 rows (30%) of iot_data.device_parameters?"
    assert "| 3 | 1 | 60 | 200 | 30% |" in body
    assert "| d141 | p | Device 141 | Param |" in body
    assert "| d142 | p |  |  |" in body
    assert "/device-sync/changes/pending?run_id=manual__2026-12-03T10%3A00%3A00%2B00%3A00" in body
    assert "No answer within 60 minute(s) is a Reject" in body


def test_source_names_are_shown_as_data_not_markdown() -> None:
    """A name with | stays in its cell; a name that is a Markdown link or HTML is shown, not followed."""
    evil = {
        "device_id": "d|1",
        "parameter_id": "p`x`",
        "device_name": "[APPROVE NOW](https://example.invalid/approve)",
        "parameter_name": "<img src=x onerror=alert(1)> &amp;\n# heading",
    }
    body = approval.question_body(load_settings(), "manual__`x`", {**REVIEW, "deleted_sample": [evil]})
    (row,) = [line for line in body.splitlines() if line.startswith("| d\\|1")]
    cells = [cell for cell in row.replace("\\|", "").split("|")]
    assert len(cells) == 6  # four cells: the | of "d|1" is escaped
    assert "](https://" not in body.replace("\\](", "")
    assert "\\[APPROVE NOW\\]\\(https://example.invalid/approve\\)" in row
    assert "<img" not in body and "&lt;img src=x onerror=alert\\(1\\)&gt;" in row
    assert "&amp;amp;" in row and "\\# heading" in row  # one line: the newline is gone
    assert "`x`" not in body


def test_an_empty_table_has_no_share() -> None:
    subject = approval.question_subject(load_settings(), {**REVIEW, "table_rows": 0})
    assert "(n/a)" in subject


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        ({"asked": True, "approved": False, "answered_by": "admin"}, "Rejected by admin in approve_mass_delete."),
        ({"asked": True, "approved": False, "answered_by": None}, "No answer in approve_mass_delete in time."),
    ],
)
def test_a_rejected_or_unanswered_question_is_named_in_the_mass_delete_error(answer: dict, said: str) -> None:
    with pytest.raises(GuardTripped) as tripped, tasks.guards_explained(answer):
        raise GuardTripped(MASS_DELETE, "mass delete blocked: 60 of 200.")
    assert str(tripped.value) == f"mass delete blocked: 60 of 200. {said}"
    assert tripped.value.guard == MASS_DELETE


@pytest.mark.parametrize(
    ("answer", "guard"),
    [
        ({"asked": False}, MASS_DELETE),  # nothing was asked
        ({"asked": True, "approved": True, "answered_by": "admin"}, MASS_DELETE),  # approved: the delta changed
        ({"asked": True, "approved": False, "answered_by": "admin"}, STALE_MEASUREMENTS),  # another guard
    ],
)
def test_other_guard_errors_are_left_as_they_are(answer: dict, guard: str) -> None:
    with pytest.raises(GuardTripped) as tripped, tasks.guards_explained(answer):
        raise GuardTripped(guard, "as it was")
    assert str(tripped.value) == "as it was"


@pytest.mark.parametrize("params", [{"allow_mass_delete": True}, {"dry_run": True}])
def test_allow_mass_delete_and_a_dry_run_ask_nothing_and_touch_no_database(params: dict) -> None:
    """Decided from the run's params before any connection is opened (unit tests have no database)."""
    assert tasks.review_mass_delete({"params": params, "dag_run": None}) is None
