"""Turn a template into one recipient's message: personalised, links tracked, open pixel added.

Deterministic for a message: composing it again (a resend after a crash, "view in browser")
gives the same links and the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from uuid import UUID

from crm_marketing.delivery import ports
from crm_marketing.tracking import tokens
from crm_marketing.tracking.links import LinkTable, add_pixel, rewrite_html, rewrite_text
from crm_runtime.db import Conn


@dataclass(frozen=True)
class Tracker:
    """Builds the signed tracking URLs of messages."""

    base_url: str
    key: bytes
    prefix: str = field(init=False, repr=False)  # "<base>/t/"

    def __post_init__(self) -> None:
        object.__setattr__(self, "prefix", self.base_url.rstrip("/") + "/t/")

    def url(self, kind: tokens.Kind, message_id: UUID, index: int = 0) -> str:
        token = tokens.sign(self.key, kind, message_id, index)
        suffix = ".gif" if kind == "o" else ""
        return f"{self.prefix}{kind}/{token}{suffix}"

    def is_ours(self, url: str) -> bool:
        return url.startswith(self.prefix)


@dataclass(frozen=True)
class Composed:
    subject: str
    text: str
    html: str | None = None
    title: str | None = None
    links: list[str] = field(default_factory=list)
    unsubscribe_url: str | None = None


def compose_rendered(
    tracker: Tracker,
    render: ports.Renderer,
    variables: dict[str, object],
    *,
    message_id: UUID,
    channel: str,
    track: bool = True,
) -> Composed:
    variables = dict(variables)
    unsubscribe = tracker.url("u", message_id)
    variables["unsubscribe_url"] = unsubscribe
    variables["view_in_browser_url"] = tracker.url("v", message_id)
    rendered = render(variables)
    if channel == "sms":
        return Composed(subject="", text=rendered.text or "")
    if channel == "push":
        return Composed(subject="", title=rendered.title or "", text=rendered.body or "")
    links = LinkTable(keep=lambda url: not tracker.is_ours(url))
    html, text = rendered.html, rendered.text or ""
    if track:
        clicks: dict[int, str] = {}  # a link in both parts is signed once

        def click(index: int) -> str:
            url = clicks.get(index)
            if url is None:
                url = clicks[index] = tracker.url("c", message_id, index)
            return url

        if html is not None:
            html = add_pixel(rewrite_html(html, links, click), tracker.url("o", message_id))
        text = rewrite_text(text, links, click)
    return Composed(
        subject=rendered.subject or "",
        text=text,
        html=html,
        links=links.urls,
        unsubscribe_url=unsubscribe,
    )


RendererKey = tuple[str, int | None, str]
"""(template id, revision or None for the current one, channel)"""


class BatchComposer:
    """Composes a batch of messages with one read of its profiles and templates."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self.variables: dict[str, dict[str, object]] = {}
        self.renderers: dict[RendererKey, ports.Renderer | Exception] = {}

    async def load(self, conn: Conn, targets: list[tuple[str, str, str, int | None]]) -> None:
        """``targets``: (customer id, template id, channel, template revision) of the batch."""
        self.variables = await ports.profile_variables_many(conn, [t[0] for t in targets])
        for _, template_id, channel, revision in targets:
            key = (template_id, revision, channel)
            if key not in self.renderers:
                try:
                    self.renderers[key] = await ports.template_renderer(
                        conn, template_id, channel, revision
                    )
                except Exception as exc:  # every message of it fails to render
                    self.renderers[key] = exc

    def compose(
        self,
        *,
        message_id: UUID,
        customer_id: str,
        template_id: str,
        channel: str,
        revision: int | None = None,
    ) -> Composed:
        render = self.renderers[template_id, revision, channel]
        if isinstance(render, Exception):
            raise render
        return compose_rendered(
            self.tracker,
            render,
            self.variables[customer_id],
            message_id=message_id,
            channel=channel,
        )


async def compose(
    conn: Conn,
    tracker: Tracker,
    *,
    message_id: UUID,
    customer_id: str,
    template_id: str,
    channel: str,
    track: bool = True,
    revision: int | None = None,
) -> Composed:
    """One message (e.g. "view in browser"), with the template revision it was sent with
    (``revision``, else the one recorded on the message, else the current one)."""
    if revision is None:
        revision = await conn.fetchval(
            "SELECT template_revision FROM messages WHERE message_id = $1", message_id
        )
    variables = await ports.profile_variables(conn, customer_id)
    render = await ports.template_renderer(conn, template_id, channel, revision)
    return compose_rendered(
        tracker, render, variables, message_id=message_id, channel=channel, track=track
    )
