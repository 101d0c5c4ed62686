"""approve_mass_delete: a run whose mass-delete guard would trip asks a human instead of failing at once.

Airflow's human-in-the-loop ``ApprovalOperator`` (standard provider): on Airflow 3.3 the task waits in the
``awaiting_input`` state, holding no worker slot, until someone answers in the UI (Required Actions) or through
the REST API (``PATCH /api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/approve_mass_delete/-1/hitlDetails``);
only users who may edit the DAG's runs may. No answer within DEVICE_SYNC_APPROVAL_TIMEOUT_MINUTES is a Reject
(the scheduler applies the default). The answer is data, not a task state: apply_changes reads it, and

- Approve: applies the mass delete, only if the delta it computes again under the writers' lock is the one
  that was approved (same counts and fingerprint); otherwise nothing is applied and the run fails saying so;
- Reject or no answer: the mass-delete guard trips in apply_changes as it does without a question
  (MassDeleteBlocked=1, history row, SNS message), its error saying who rejected or that nobody answered.

The task asks nothing (and succeeds at once) when the guard would not trip, in a dry run, with
allow_mass_delete, and in a foreground ``dag.test()`` run (:mod:`device_sync.dag_class`). On an Airflow
without human-in-the-loop's ``awaiting_input`` state (before 3.3) it never asks (:mod:`device_sync.compat`).
"""

from __future__ import annotations

import html
import logging
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.providers.standard.operators.python import PythonOperator

from device_sync import compat
from device_sync.config import Settings

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator

log = logging.getLogger(__name__)

TASK_ID = "approve_mass_delete"


def approve_mass_delete(settings: Settings, **kwargs: Any) -> BaseOperator:
    """The approve_mass_delete task: the question on an Airflow with human approval, else a task that asks
    nobody (apply_changes then fails a run whose mass-delete guard trips, as it does without a question)."""
    if compat.HUMAN_APPROVAL.available:
        from device_sync.approval_operator import MassDeleteApproval

        return MassDeleteApproval(task_id=TASK_ID, settings=settings, **kwargs)
    return PythonOperator(task_id=TASK_ID, python_callable=_ask_nobody, **kwargs)


def _ask_nobody() -> dict[str, Any]:
    log.warning("approve_mass_delete: %s %s", compat.HUMAN_APPROVAL.name, compat.HUMAN_APPROVAL.without_it)
    return {"asked": False}


def question_subject(settings: Settings, review: dict[str, Any]) -> str:
    return (
        f"device-sync {settings.stage}: approve deleting {review['deletes']} of {review['table_rows']} rows "
        f"({_share(review)}) of iot_data.device_parameters?"
    )


def question_body(settings: Settings, run_id: str, review: dict[str, Any]) -> str:
    """Markdown: the would-be counts, the share of the table, a sample of the deleted pairs, the links."""
    from device_sync.notifications import link

    pending = link(f"/device-sync/changes/pending?run_id={quote(run_id, safe='')}")
    sample = "\n".join(
        f"| {as_text(row['device_id'])} | {as_text(row['parameter_id'])} | {as_text(row.get('device_name'))} | "
        f"{as_text(row.get('parameter_name'))} |"
        for row in review["deleted_sample"]
    )
    return f"""\
Run {as_text(run_id)} would delete more than DEVICE_SYNC_MAX_DELETE_FRACTION={settings.max_delete_fraction:g} of the
table, so its mass-delete guard stopped it before writing anything.

| would insert | would update | would delete | table rows | share deleted |
|---:|---:|---:|---:|---:|
| {review["inserts"]} | {review["updates"]} | {review["deletes"]} | {review["table_rows"]} | {_share(review)} |

First deleted pairs:

| device_id | parameter_id | device name | parameter name |
|---|---|---|---|
{sample}

Every change of this run: [{pending}]({pending})

**Approve** applies exactly this delta: if it has changed when the run gets the writers' lock, nothing is
applied and the run fails. **Reject** fails the run (MassDeleteBlocked=1).
No answer within {settings.approval_timeout_minutes} minute(s) is a Reject.
Check the sources (is a device or the measurements pipeline down?) before approving.
"""


# Markdown's punctuation that can make structure (table cells, links, images, emphasis, code, headings).
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()#!|~])")


def as_text(value: Any) -> str:
    """Source data (a device or parameter id or name, a run id) shown as data in the question's Markdown: one
    line, HTML's characters as entities and Markdown's structural ones escaped, so a name with ``|`` stays in
    its cell and one with ``[text](url)`` or ``<img ...>`` is shown, not followed or rendered."""
    if value is None:
        return ""
    text = html.escape(" ".join(str(value).split()), quote=False)
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", text)


def _share(review: dict[str, Any]) -> str:
    return f"{review['deletes'] / review['table_rows']:.0%}" if review["table_rows"] else "n/a"
