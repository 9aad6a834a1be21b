"""Request and response bodies of the knowledge-base API (/kb, /tickets/{id}/...)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from crm_runtime.http.inputs import NotBlank, OneLine, Tag

Id = Annotated[str, Field(min_length=1, max_length=100)]
Title = Annotated[str, Field(min_length=1, max_length=300), NotBlank, OneLine]
Body = Annotated[str, Field(max_length=200_000, description="Markdown")]
Language = Annotated[
    str,
    Field(
        min_length=2,
        max_length=35,
        pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$",
        description="BCP 47 tag; picks the text-search configuration (unknown: 'simple')",
        examples=["en", "de", "pt-BR"],
    ),
]
CategoryName = Annotated[str, Field(min_length=1, max_length=120), NotBlank]
Note = Annotated[str, Field(max_length=1000)]
Comment = Annotated[str, Field(max_length=2000)]
State = Literal["draft", "published", "archived"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- categories -----------------------------------------------------------------------------


class CategoryCreate(_In):
    name: CategoryName
    description: Annotated[str, Field(max_length=2000)] | None = None
    parent_id: Id | None = None


class CategoryPatch(_In):
    name: CategoryName | None = None
    description: Annotated[str, Field(max_length=2000)] | None = None
    parent_id: Id | None = None


class CategoryOut(BaseModel):
    id: str
    name: str
    description: str | None
    parent_id: str | None
    version: int
    article_count: int | None = Field(
        default=None, description="articles in it that you can read (not its subcategories)"
    )


class CategoryPage(BaseModel):
    items: list[CategoryOut]
    next_cursor: str | None = None


# --- articles -------------------------------------------------------------------------------


class ArticleCreate(_In):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "title": "Reset a jammed printer",
                    "body": "1. Switch the printer off.\n2. Open the front cover.",
                    "language": "en",
                    "tags": ["printer"],
                    "publish": True,
                }
            ]
        },
    )

    title: Title
    body: Body
    category_id: Id | None = None
    language: Language = "en"
    tags: Annotated[list[Tag], Field(max_length=20)] = Field(default_factory=list)
    publish: bool = Field(default=False, description="publish revision 1 at once")


class ArticlePatch(_In):
    """The fields sent make a new revision over the latest one (unchanged fields: no revision)."""

    title: Title | None = None
    body: Body | None = None
    category_id: Id | None = None
    language: Language | None = None
    tags: Annotated[list[Tag], Field(max_length=20)] | None = None
    note: Note | None = Field(default=None, description="what changed, kept with the revision")
    publish: bool = Field(default=False, description="publish the new revision at once")


class PublishIn(_In):
    revision: int | None = Field(
        default=None, ge=1, description="the revision to publish (default: the latest)"
    )


class ArchiveIn(_In):
    reason: Note | None = None


class ArticleOut(BaseModel):
    """An article as one revision of it: staff see the latest (or ``?revision=``), everyone
    else the published one."""

    id: str
    state: State
    revision: int = Field(description="the revision shown here")
    title: str
    body: str
    category_id: str | None
    language: str
    tags: list[str]
    latest_revision: int
    published_revision: int | None
    has_unpublished_changes: bool
    archive_reason: str | None = None
    helpful_count: int | None = Field(default=None, description="'this helped' answers")
    not_helpful_count: int | None = None
    version: int = Field(description="stream version; send it back as If-Match")


class ArticleSummary(BaseModel):
    id: str
    state: State
    title: str
    category_id: str | None
    language: str
    tags: list[str]
    latest_revision: int
    published_revision: int | None
    helpful_count: int
    not_helpful_count: int
    created_at: datetime
    updated_at: datetime
    version: int


class ArticlePage(BaseModel):
    items: list[ArticleSummary]
    next_cursor: str | None = None


class RevisionOut(BaseModel):
    revision: int
    title: str
    category_id: str | None
    language: str
    tags: list[str]
    note: str | None
    author: str | None
    created_at: datetime
    published: bool = Field(description="the revision readers see now")


class SearchHit(BaseModel):
    id: str
    state: State
    title: str
    snippet: str | None = Field(description="body excerpt; matched words between ** and **")
    category_id: str | None
    language: str
    tags: list[str]
    rank: float = Field(description="ts_rank_cd: title words weigh 1.0, body words 0.4")
    published_revision: int | None
    helpful_count: int
    not_helpful_count: int
    updated_at: datetime


class SearchPage(BaseModel):
    items: list[SearchHit]
    next_cursor: str | None = None


class PublicArticle(BaseModel):
    id: str
    revision: int
    title: str
    body: str
    category_id: str | None
    language: str
    tags: list[str]
    published_at: datetime | None


# --- links and feedback ---------------------------------------------------------------------


class LinkIn(_In):
    ticket_id: Id


class LinkOut(BaseModel):
    article_id: str
    ticket_id: str
    revision: int = Field(description="the article's published revision when it was linked")
    linked_by: str | None
    linked_at: datetime
    title: str | None = None
    state: State | None = None


class LinkPage(BaseModel):
    items: list[LinkOut]
    next_cursor: str | None = None


class FeedbackIn(_In):
    helped: bool
    comment: Comment | None = None
    customer_id: Id | None = Field(
        default=None,
        description="staff recording a customer's answer (once per customer); "
        "without it the feedback is yours (once per user)",
    )
    ticket_id: Id | None = None


class PublicFeedbackIn(_In):
    token: Annotated[str, Field(min_length=10, max_length=1000)]
    helped: bool
    comment: Comment | None = None


class FeedbackOut(BaseModel):
    article_id: str
    helped: bool
    revision: int
    helpful_count: int
    not_helpful_count: int


class FeedbackLinkIn(_In):
    customer_id: Id | None = None
    ticket_id: Id | None = Field(
        default=None, description="the ticket it is sent for; its customer when none is given"
    )
    valid_days: int = Field(default=30, ge=1, le=365)


class FeedbackLinkOut(BaseModel):
    token: str
    expires_at: datetime
    url: str = Field(description="POST {token, helped} here, without a bearer token")


class HistoryEntry(BaseModel):
    version: int
    event_id: str
    type: str
    schema_version: int
    occurred_at: datetime
    recorded_at: datetime
    actor: str | None
    correlation_id: str | None
    data: dict[str, Any]
