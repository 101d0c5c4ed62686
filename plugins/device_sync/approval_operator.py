"""The approve_mass_delete question: Airflow's ``ApprovalOperator`` (Airflow 3.3+; see :mod:`device_sync.approval`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator
from airflow.sdk.exceptions import TaskAwaitingInput

from device_sync.approval import question_body, question_subject
from device_sync.config import Settings, load_settings


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
