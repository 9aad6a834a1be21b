"""Activities (calls, meetings, e-mails, notes: touchpoints on the customer timeline) and tasks."""

from __future__ import annotations

from datetime import datetime

from crm_events.schemas.sales import (
    About,
    ActivityKind,
    ActivityLogged,
    TaskCompleted,
    TaskCreated,
    TaskReopened,
    TaskUpdated,
)
from crm_runtime.aggregate import Aggregate, applies
from crm_runtime.errors import DomainError


class Activity(Aggregate):
    stream_type = "activity"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.logged: ActivityLogged | None = None

    @classmethod
    def log(
        cls,
        activity_id: str,
        *,
        kind: ActivityKind,
        subject: str,
        occurred_at: datetime,
        about: About,
        customer_id: str,
        body: str | None = None,
        duration_minutes: int | None = None,
        direction: str | None = None,
        outcome: str | None = None,
        owner_id: str | None = None,
        team_id: str | None = None,
    ) -> Activity:
        if not (about.contact_id or about.account_id or about.deal_id):
            raise DomainError("an activity is about a contact, an account or a deal")
        if direction is not None and kind not in ("call", "email"):
            raise DomainError("only calls and e-mails have a direction")
        activity = cls(activity_id)
        activity.record(
            ActivityLogged(
                activity_id=activity_id,
                kind=kind,
                subject=subject,
                body=body,
                occurred_at=occurred_at,
                duration_minutes=duration_minutes,
                direction=direction,
                outcome=outcome,
                about=about,
                customer_id=customer_id,
                owner_id=owner_id,
                team_id=team_id,
            )
        )
        return activity

    @applies(ActivityLogged)
    def _logged(self, e: ActivityLogged) -> None:
        self.subject = e.customer_id
        self.logged = e


class Task(Aggregate):
    stream_type = "task"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.title = ""
        self.notes: str | None = None
        self.due_at: datetime | None = None
        self.assignee_id: str | None = None
        self.team_id: str | None = None
        self.priority = "normal"
        self.about = About()
        self.customer_id: str | None = None
        self.origin: str | None = None
        self.done = False
        self.outcome: str | None = None

    @classmethod
    def create(
        cls,
        task_id: str,
        *,
        title: str,
        about: About,
        customer_id: str | None,
        due_at: datetime | None = None,
        assignee_id: str | None = None,
        team_id: str | None = None,
        priority: str = "normal",
        notes: str | None = None,
        origin: str | None = None,
    ) -> Task:
        task = cls(task_id)
        task.record(
            TaskCreated(
                task_id=task_id,
                title=title,
                notes=notes,
                due_at=due_at,
                assignee_id=assignee_id,
                team_id=team_id,
                priority=priority,
                about=about,
                customer_id=customer_id,
                origin=origin,
            )
        )
        return task

    def complete(self, outcome: str | None) -> None:
        if self.done:
            raise DomainError("the task is already done")
        self.record(TaskCompleted(task_id=self.id, outcome=outcome))

    def reopen(self) -> None:
        if not self.done:
            raise DomainError("the task is not done")
        self.record(TaskReopened(task_id=self.id))

    def update(self, **changes: object) -> list[str]:
        if self.done:
            raise DomainError("a done task does not change; reopen it first")
        changed = [k for k, v in changes.items() if getattr(self, k) != v]
        if changed:
            self.record(TaskUpdated(task_id=self.id, changed=changed, **changes))
        return changed

    @applies(TaskCreated)
    def _created(self, e: TaskCreated) -> None:
        if e.customer_id:
            self.subject = e.customer_id
        self.title = e.title
        self.notes = e.notes
        self.due_at = e.due_at
        self.assignee_id = e.assignee_id
        self.team_id = e.team_id
        self.priority = e.priority
        self.about = e.about
        self.customer_id = e.customer_id
        self.origin = e.origin

    @applies(TaskCompleted)
    def _completed(self, e: TaskCompleted) -> None:
        self.done = True
        self.outcome = e.outcome

    @applies(TaskReopened)
    def _reopened(self, e: TaskReopened) -> None:
        self.done = False
        self.outcome = None

    @applies(TaskUpdated)
    def _updated(self, e: TaskUpdated) -> None:
        for name in e.changed:
            setattr(self, name, getattr(e, name))
