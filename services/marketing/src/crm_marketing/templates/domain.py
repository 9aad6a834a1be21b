"""The Template aggregate: a named message for one channel, revised over time. No I/O.

Content is checked (sandbox, variables, channel limits) before it gets here; every revision is
kept in the stream, so any revision can be rendered and the history read.
"""

from __future__ import annotations

from crm_events.schemas.marketing_segments import (
    TemplateArchived,
    TemplateChannel,
    TemplateContent,
    TemplateCreated,
    TemplateRevised,
)
from crm_runtime.aggregate import Aggregate, applies
from crm_runtime.errors import DomainError


class Template(Aggregate):
    stream_type = "template"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.name = ""
        self.channel: TemplateChannel = "email"
        self.content = TemplateContent()
        self.revision = 0
        self.revisions: dict[int, TemplateContent] = {}
        self.archived = False

    @classmethod
    def create(
        cls, template_id: str, *, name: str, channel: TemplateChannel, content: TemplateContent
    ) -> Template:
        template = cls(template_id)
        template.record(
            TemplateCreated(
                template_id=template_id, name=name, channel=channel, content=content, revision=1
            )
        )
        return template

    def revise(self, *, name: str, content: TemplateContent) -> bool:
        """A new revision when the name or the content changed; False when nothing did."""
        if self.archived:
            raise DomainError(f"template {self.id} is archived")
        if name == self.name and content == self.content:
            return False
        self.record(
            TemplateRevised(
                template_id=self.id, name=name, content=content, revision=self.revision + 1
            )
        )
        return True

    def archive(self) -> None:
        if self.archived:
            raise DomainError(f"template {self.id} is already archived")
        self.record(TemplateArchived(template_id=self.id))

    @applies(TemplateCreated)
    def _created(self, e: TemplateCreated) -> None:
        self.name = e.name
        self.channel = e.channel
        self.content = e.content
        self.revision = e.revision
        self.revisions[e.revision] = e.content

    @applies(TemplateRevised)
    def _revised(self, e: TemplateRevised) -> None:
        self.name = e.name
        self.content = e.content
        self.revision = e.revision
        self.revisions[e.revision] = e.content

    @applies(TemplateArchived)
    def _archived(self, _: TemplateArchived) -> None:
        self.archived = True
