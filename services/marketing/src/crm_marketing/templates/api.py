"""What templates offer the rest of the service: ``render`` for one recipient.

``await render(conn, template_id, channel, variables)`` returns a :class:`RenderedMessage`
(e-mail: subject, html, text; SMS: text; push: title, body). ``variables`` are the
personalisation values (``audience.api.profile_variables`` plus ``unsubscribe_url`` and
``view_in_browser_url``); a variable the template uses but ``variables`` lacks is an error
(StrictUndefined), a ``None`` value renders empty (``| default(...)`` stands in for it). Errors:
NotFound (no such template or revision), Conflict (the template is for another channel),
TemplateRenderError (422: which part and why, e.g. an SMS over the segment limit or the render
budget for these values).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from crm_marketing.templates import adapters
from crm_marketing.templates.rendering import (
    VARIABLES,
    Channel,
    Compiled,
    TemplateProblem,
    compile_template,
    render_compiled,
)
from crm_marketing.templates.settings import limits
from crm_runtime.db import Conn
from crm_runtime.errors import Conflict, InvalidInput, NotFound

__all__ = ["VARIABLES", "RenderedMessage", "TemplateRenderError", "render"]


class TemplateRenderError(InvalidInput):
    """The template cannot be rendered with these values (422 naming the part)."""


@dataclass(frozen=True)
class RenderedMessage:
    template_id: str
    revision: int
    channel: Channel
    subject: str | None = None
    html: str | None = None
    text: str | None = None
    title: str | None = None
    body: str | None = None
    sms_encoding: str | None = None
    sms_segments: int | None = None
    warnings: tuple[str, ...] = ()


# Compiled templates per (id, revision): a revision never changes, so this never goes stale.
_CACHE: OrderedDict[tuple[str, int], Compiled] = OrderedDict()
_CACHE_SIZE = 256


def _compiled(
    template_id: str, revision: int, channel: Channel, content: Mapping[str, Any]
) -> Compiled:
    key = (template_id, revision)
    found = _CACHE.get(key)
    if found is not None:
        _CACHE.move_to_end(key)
        return found
    compiled = compile_template(channel, content)
    _CACHE[key] = compiled
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return compiled


def render_content(
    template_id: str,
    revision: int,
    channel: Channel,
    content: Mapping[str, Any],
    variables: Mapping[str, object],
) -> RenderedMessage:
    try:
        compiled = _compiled(template_id, revision, channel, content)
        out = render_compiled(compiled, variables, limits())
    except TemplateProblem as exc:
        raise TemplateRenderError(exc.part, exc.reason) from None
    return RenderedMessage(
        template_id=template_id,
        revision=revision,
        channel=channel,
        subject=out.subject,
        html=out.html,
        text=out.text,
        title=out.title,
        body=out.body,
        sms_encoding=out.sms.encoding if out.sms else None,
        sms_segments=out.sms.segments if out.sms else None,
        warnings=out.warnings,
    )


async def render(
    conn: Conn,
    template_id: str,
    channel: str,
    variables: dict[str, object],
    *,
    revision: int | None = None,
) -> RenderedMessage:
    """Render the template's current (or a given) revision for one recipient."""
    row = (
        await adapters.get(conn, template_id)
        if revision is None
        else await adapters.get_revision(conn, template_id, revision)
    )
    if row is None:
        what = f"template {template_id}" + (f" revision {revision}" if revision else "")
        raise NotFound(f"{what} does not exist")
    if row["channel"] != channel:
        raise Conflict(
            f"template {template_id} is a {row['channel']} template, not {channel}",
            template_channel=row["channel"],
        )
    return render_content(template_id, row["revision"], row["channel"], row["content"], variables)


async def template_status(conn: Conn, template_id: str) -> tuple[str, str] | None:
    """``(channel, status)`` of a template, or None: for checks before a send is planned."""
    row = await conn.fetchrow(
        "SELECT channel, status FROM templates WHERE template_id = $1", template_id
    )
    return None if row is None else (row["channel"], row["status"])
