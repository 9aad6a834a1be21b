"""Knowledge-base events of the service context (``crm.service.kb_*``).

Articles and categories are not about a customer: their events carry no subject. Feedback from
a known customer and a link from an article to a customer's ticket take that customer id as
their subject (set by the aggregate), so they appear on the customer's timeline.

Every edit of an article records a complete new *revision* (title, body, category, language,
tags), numbered 1, 2, 3, ...; publishing names the revision that readers see.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from crm_events.registry import EventPayload, event_type

ArticleContentField = Literal["title", "body", "category_id", "language", "tags"]
FeedbackChannel = Literal["api", "signed_link"]


# --- categories -------------------------------------------------------------------------------


@event_type("crm.service.kb_category.created", version=1)
class KbCategoryCreated(EventPayload):
    """A knowledge-base category was created."""

    category_id: str
    name: str = Field(min_length=1, max_length=120)
    description: str | None = None
    parent_id: str | None = Field(default=None, description="the enclosing category, if any")


@event_type("crm.service.kb_category.updated", version=1)
class KbCategoryUpdated(EventPayload):
    """A category's name, description or parent was changed (``changed`` names which)."""

    category_id: str
    changed: list[Literal["name", "description", "parent_id"]] = Field(min_length=1)
    name: str | None = None
    description: str | None = None
    parent_id: str | None = None


# --- articles ---------------------------------------------------------------------------------


class ArticleContent(EventPayload):
    """The whole content of one revision of an article."""

    title: str = Field(min_length=1, max_length=300)
    body: str = Field(max_length=200_000, description="Markdown")
    category_id: str | None = None
    language: str = Field(description="BCP 47 language tag, e.g. en, de, pt-BR")
    tags: list[str] = Field(default_factory=list)


@event_type("crm.service.kb_article.created", version=1)
class KbArticleCreated(EventPayload):
    """A draft article was written: its revision 1."""

    article_id: str
    revision: Literal[1] = 1
    content: ArticleContent


@event_type("crm.service.kb_article.revised", version=1)
class KbArticleRevised(EventPayload):
    """An article was edited: a new revision with its whole content; the published one stays."""

    article_id: str
    revision: int = Field(ge=2)
    based_on: int = Field(ge=1, description="the revision the editor started from")
    changed: list[ArticleContentField] = Field(min_length=1)
    content: ArticleContent
    note: str | None = Field(default=None, description="the editor's change note")


@event_type("crm.service.kb_article.published", version=1)
class KbArticlePublished(EventPayload):
    """A revision of the article became the one readers see (a rollback names an older one)."""

    article_id: str
    revision: int = Field(ge=1)
    previous_revision: int | None = Field(default=None, description="the one published before")


@event_type("crm.service.kb_article.archived", version=1)
class KbArticleArchived(EventPayload):
    """The article was taken down: no longer readable or found except by staff."""

    article_id: str
    reason: str | None = None


@event_type("crm.service.kb_article.restored", version=1)
class KbArticleRestored(EventPayload):
    """An archived article was brought back as a draft (publish it again to show it)."""

    article_id: str


# --- links and feedback -----------------------------------------------------------------------


@event_type("crm.service.kb_article_link.created", version=1)
class KbArticleLinked(EventPayload):
    """An agent linked a published article to a ticket (e.g. sent it as the answer)."""

    article_id: str
    ticket_id: str
    revision: int = Field(ge=1, description="the article's published revision at the time")


@event_type("crm.service.kb_article_link.removed", version=1)
class KbArticleUnlinked(EventPayload):
    """The link between an article and a ticket was removed."""

    article_id: str
    ticket_id: str


@event_type("crm.service.kb_feedback.recorded", version=1, public=True)
class KbFeedbackRecorded(EventPayload):
    """Someone said whether a published article helped; once per customer (or link) per article."""

    article_id: str
    helped: bool
    revision: int = Field(ge=1, description="the published revision they read")
    channel: FeedbackChannel
    customer_id: str | None = Field(default=None, description="the customer, when known")
    ticket_id: str | None = None
    comment: str | None = Field(default=None, max_length=2000)
