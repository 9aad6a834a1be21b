"""Command handlers for templates: create, revise (a new revision), archive."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from crm_events.schemas.marketing_segments import TemplateChannel, TemplateContent
from crm_marketing.templates import adapters
from crm_marketing.templates.domain import Template
from crm_marketing.templates.rendering import Rendered, TemplateProblem, problems_of, validate
from crm_marketing.templates.settings import limits
from crm_runtime.db import Conn
from crm_runtime.errors import CrmError, InvalidInput, NotFound
from crm_runtime.eventstore import EventStore, Metadata
from crm_runtime.repository import Repository, check_version


class InvalidContent(InvalidInput):
    """422 with one entry in ``errors`` per bad part (``content.<part>`` and the reason)."""

    def __init__(self, problems: list[TemplateProblem]) -> None:
        errors = [{"field": f"content.{p.part}", "reason": p.reason} for p in problems]
        CrmError.__init__(
            self, "; ".join(f"{e['field']}: {e['reason']}" for e in errors), errors=errors
        )


def check_content(channel: TemplateChannel, content: TemplateContent) -> Rendered:
    """The save-time check (syntax, variables, safety, channel limits with sample values):
    422 naming each bad ``content.<part>`` and the reason."""
    try:
        return validate(channel, content.model_dump(), limits())
    except TemplateProblem as exc:
        raise InvalidContent(problems_of(exc)) from None


@dataclass(frozen=True)
class CreateTemplate:
    name: str
    channel: TemplateChannel
    content: TemplateContent


@dataclass(frozen=True)
class ReviseTemplate:
    template_id: str
    name: str | None = None
    content: TemplateContent | None = None
    expected_version: int | None = None


class TemplateHandlers:
    def __init__(self, store: EventStore) -> None:
        self.templates = Repository(store, Template)

    async def create(
        self, conn: Conn, cmd: CreateTemplate, meta: Metadata, now: datetime
    ) -> Template:
        check_content(cmd.channel, cmd.content)
        template = Template.create(
            str(uuid.uuid4()), name=cmd.name, channel=cmd.channel, content=cmd.content
        )
        await self.templates.save(conn, template, meta)
        await adapters.upsert(conn, template, now, meta.actor)
        return template

    async def revise(
        self, conn: Conn, cmd: ReviseTemplate, meta: Metadata, now: datetime
    ) -> Template:
        template = await self.load(cmd.template_id, conn)
        check_version(cmd.expected_version, template.version)
        content = cmd.content if cmd.content is not None else template.content
        if cmd.content is not None:
            check_content(template.channel, content)
        if template.revise(name=cmd.name or template.name, content=content):
            await self.templates.save(conn, template, meta)
            await adapters.upsert(conn, template, now, meta.actor)
        return template

    async def archive(
        self, conn: Conn, template_id: str, expected: int | None, meta: Metadata, now: datetime
    ) -> Template:
        template = await self.load(template_id, conn)
        check_version(expected, template.version)
        template.archive()
        await self.templates.save(conn, template, meta)
        await adapters.upsert(conn, template, now, meta.actor)
        return template

    async def load(self, template_id: str, conn: Conn | None = None) -> Template:
        try:
            return await self.templates.load(template_id, conn=conn)
        except NotFound:
            raise NotFound(f"template {template_id} does not exist") from None
