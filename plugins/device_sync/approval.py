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
allow_mass_delete, and in a foreground ``dag.test()`` run (:mod:`device_sync.dag_class`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import quote

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator
from airflow.sdk.exceptions import TaskAwaitingInput

from device_sync.config import Settings, load_settings

TASK_ID = "approve_mass_delete"


class MassDeleteApproval(ApprovalOperator):
    """Ask a human to Approve or Reject this run's mass delete (see the module's docstring)."""

    def __init__(self, *, settings: Settings, **kwargs: Any) -> None:
        super().__init__(
            subject=f"device-sync {settings.stage}: approve a mass delete?",
            defaults=self.REJECT,
            response_timeout=timedelta(minutes=settings.approval_timeout_minutes),
            **kwargs,
        )

    def execute(self, context: Any) -> Any:
        from device_sync import tasks
        from device_sync.dag_class import running_in_foreground

        if running_in_foreground(context["dag"]):
            self.log.info("A foreground dag.test() run asks no human: a tripped mass-delete guard fails it.")
            return {"asked": False}
        review = tasks.review_mass_delete(context)
        if review is None:
            self.log.info("The mass-delete guard would not trip: nothing to approve.")
            return {"asked": False}
        settings = load_settings()
        self.subject = question_subject(settings, review)
        self.body = question_body(settings, context["dag_run"].run_id, review)
        self.log.info("%s Waiting for an answer (%s minutes at most).", self.subject, settings.approval_timeout_minutes)
        try:
            return super().execute(context)
        except TaskAwaitingInput as waiting:
            # The question's content comes back with the answer, for apply_changes to compare.
            waiting.kwargs = {**(waiting.kwargs or {}), "review": review}
            raise

    def execute_complete(self, context: Any, event: dict[str, Any], review: dict[str, Any] | None = None) -> Any:
        # HITLOperator's, not ApprovalOperator's: a Reject must not skip apply_changes, whose guard fails the run.
        answer = HITLOperator.execute_complete(self, context=context, event=event)
        approved = answer["chosen_options"] == [self.APPROVE]
        user = answer.get("responded_by_user") or {}
        result = {
            "asked": True,
            "approved": approved,
            "answered_by": user.get("name") if isinstance(user, dict) else None,
            **(review or {}),
        }
        self.log.info("%s by %s.", "Approved" if approved else "Rejected", result["answered_by"] or "the timeout")
        return result


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
        f"| `{row['device_id']}` | `{row['parameter_id']}` | {row.get('device_name') or ''} | "
        f"{row.get('parameter_name') or ''} |"
        for row in review["deleted_sample"]
    )
    return f"""\
Run `{run_id}` would delete more than DEVICE_SYNC_MAX_DELETE_FRACTION={settings.max_delete_fraction:g} of the
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


def _share(review: dict[str, Any]) -> str:
    return f"{review['deletes'] / review['table_rows']:.0%}" if review["table_rows"] else "n/a"
