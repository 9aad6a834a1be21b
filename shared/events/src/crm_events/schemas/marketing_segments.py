"""Marketing events of segments and templates (``crm.marketing.segment.*``, ``.template.*``).

Segment definitions live in the stream ``segment-<id>``; membership changes in
``segment_membership-<id>`` (subject = the customer id), so a segment's definition stays small
however many members come and go.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from crm_events.registry import EventPayload, event_type

SegmentKind = Literal["dynamic", "static"]
TemplateChannel = Literal["email", "sms", "push"]


@event_type("crm.marketing.segment.created", version=1)
class SegmentCreated(EventPayload):
    """A segment was defined: dynamic (a rule decides membership) or static (a list)."""

    segment_id: str
    name: str = Field(min_length=1, max_length=200)
    description: str | None = None
    kind: SegmentKind
    rule: dict[str, Any] | None = Field(default=None, description="the rule's JSON form")
    rule_text: str | None = Field(default=None, description="the rule's text form")


@event_type("crm.marketing.segment.updated", version=1)
class SegmentUpdated(EventPayload):
    """A segment's name or description changed."""

    segment_id: str
    name: str = Field(min_length=1, max_length=200)
    description: str | None = None


@event_type("crm.marketing.segment.rule_changed", version=1)
class SegmentRuleChanged(EventPayload):
    """A dynamic segment's rule changed (membership is re-evaluated at once)."""

    segment_id: str
    rule: dict[str, Any]
    rule_text: str


@event_type("crm.marketing.segment.archived", version=1)
class SegmentArchived(EventPayload):
    """A segment was archived: no longer evaluated, offered or changed."""

    segment_id: str


@event_type("crm.marketing.segment.member_entered", version=1)
class SegmentMemberEntered(EventPayload):
    """A customer entered a segment: its rule now holds for them, or they were added."""

    segment_id: str
    customer_id: str
    reason: Literal["rule", "added", "imported"]


@event_type("crm.marketing.segment.member_left", version=1)
class SegmentMemberLeft(EventPayload):
    """A customer left a segment: its rule no longer holds for them, or they were removed."""

    segment_id: str
    customer_id: str
    reason: Literal["rule", "removed"]


class TemplateContent(EventPayload):
    """A template's parts (Jinja2 source). E-mail: subject, html, text; SMS: text; push:
    title, body."""

    subject: str | None = None
    html: str | None = None
    text: str | None = None
    title: str | None = None
    body: str | None = None


@event_type("crm.marketing.template.created", version=1)
class TemplateCreated(EventPayload):
    """A message template (form letter) was created at revision 1."""

    template_id: str
    name: str = Field(min_length=1, max_length=200)
    channel: TemplateChannel
    content: TemplateContent
    revision: int = Field(ge=1)


@event_type("crm.marketing.template.revised", version=1)
class TemplateRevised(EventPayload):
    """A template got a new revision (its content, or its name, changed)."""

    template_id: str
    name: str = Field(min_length=1, max_length=200)
    content: TemplateContent
    revision: int = Field(ge=2)


@event_type("crm.marketing.template.archived", version=1)
class TemplateArchived(EventPayload):
    """A template was archived: it can no longer be revised or used for new sends."""

    template_id: str
