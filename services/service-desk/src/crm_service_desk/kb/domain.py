"""Knowledge-base aggregates: articles (revisions, publish, archive), categories, links, feedback.

Pure: no I/O. An article's every edit is a new numbered revision holding the whole content;
publishing picks the revision readers see, so an edit of a published article stays a draft
revision until it is published in turn (and publishing an older revision rolls back).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from crm_events.schemas.service_kb import (
    ArticleContent,
    KbArticleArchived,
    KbArticleCreated,
    KbArticleLinked,
    KbArticlePublished,
    KbArticleRestored,
    KbArticleRevised,
    KbArticleUnlinked,
    KbCategoryCreated,
    KbCategoryUpdated,
    KbFeedbackRecorded,
)
from crm_runtime.aggregate import Aggregate, applies
from crm_runtime.errors import DomainError, InvalidInput

ArticleState = Literal["draft", "published", "archived"]
CONTENT_FIELDS = ("title", "body", "category_id", "language", "tags")
MAX_TAGS = 20

# Primary language subtag -> PostgreSQL text-search configuration. Anything else, or a
# configuration the server lacks, is searched with 'simple' (lower-cased words, no stemming).
TS_CONFIGS = {
    "ar": "arabic",
    "hy": "armenian",
    "eu": "basque",
    "ca": "catalan",
    "da": "danish",
    "nl": "dutch",
    "en": "english",
    "fi": "finnish",
    "fr": "french",
    "de": "german",
    "el": "greek",
    "hi": "hindi",
    "hu": "hungarian",
    "id": "indonesian",
    "ga": "irish",
    "it": "italian",
    "lt": "lithuanian",
    "ne": "nepali",
    "no": "norwegian",
    "nb": "norwegian",
    "nn": "norwegian",
    "pt": "portuguese",
    "ro": "romanian",
    "ru": "russian",
    "sr": "serbian",
    "es": "spanish",
    "sv": "swedish",
    "ta": "tamil",
    "tr": "turkish",
    "yi": "yiddish",
}
FALLBACK_CONFIG = "simple"
_LANGUAGE = re.compile(r"^([A-Za-z]{2,3})((?:-[A-Za-z0-9]{1,8})*)$")


def normalise_language(tag: str, field: str = "language") -> str:
    """A BCP 47 tag in its usual case: ``EN-gb`` -> ``en-GB``, ``zh-hant`` -> ``zh-Hant``."""
    m = _LANGUAGE.match(tag.strip())
    if not m:
        raise InvalidInput(field, "must be a BCP 47 language tag such as en, de or pt-BR")
    parts = [m.group(1).lower()]
    for sub in m.group(2).split("-")[1:]:
        if len(sub) == 2 and sub.isalpha():
            parts.append(sub.upper())
        elif len(sub) == 4 and sub.isalpha():
            parts.append(sub.title())
        else:
            parts.append(sub.lower())
    return "-".join(parts)


def primary_language(tag: str) -> str:
    return tag.split("-", 1)[0].lower()


def ts_config_for(language: str | None) -> str:
    """The text-search configuration of a language tag (``'simple'`` when there is none)."""
    if not language:
        return FALLBACK_CONFIG
    return TS_CONFIGS.get(primary_language(language), FALLBACK_CONFIG)


def clean_tags(tags: list[str]) -> list[str]:
    """Lower-cased, trimmed, without duplicates, in the order given."""
    out: list[str] = []
    for i, tag in enumerate(tags):
        t = tag.strip().lower()
        if not t or len(t) > 50:
            raise InvalidInput(f"tags[{i}]", "must be 1 to 50 characters")
        if t not in out:
            out.append(t)
    if len(out) > MAX_TAGS:
        raise InvalidInput("tags", f"at most {MAX_TAGS} tags")
    return out


@dataclass(frozen=True)
class Revision:
    number: int
    title: str
    body: str
    category_id: str | None
    language: str
    tags: tuple[str, ...]
    note: str | None = None

    @classmethod
    def of(cls, number: int, content: ArticleContent, note: str | None = None) -> Revision:
        return cls(
            number,
            content.title,
            content.body,
            content.category_id,
            content.language,
            tuple(content.tags),
            note,
        )

    def values(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "body": self.body,
            "category_id": self.category_id,
            "language": self.language,
            "tags": list(self.tags),
        }


def make_content(values: dict[str, Any]) -> ArticleContent:
    """Checked article content from ``title, body, category_id, language, tags``."""
    title = str(values.get("title") or "").strip()
    if not title:
        raise InvalidInput("title", "must not be empty")
    body = values.get("body")
    if body is None:
        raise InvalidInput("body", "is required")
    language = normalise_language(str(values.get("language") or ""))
    return ArticleContent(
        title=title,
        body=str(body),
        category_id=values.get("category_id"),
        language=language,
        tags=clean_tags(list(values.get("tags") or [])),
    )


class Article(Aggregate):
    stream_type = "kb_article"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.revisions: dict[int, Revision] = {}
        self.published_revision: int | None = None
        self.archived = False
        self.archive_reason: str | None = None

    # --- reading -------------------------------------------------------------------------

    @property
    def latest_revision(self) -> int:
        return max(self.revisions, default=0)

    @property
    def latest(self) -> Revision:
        return self.revisions[self.latest_revision]

    @property
    def published(self) -> Revision | None:
        if self.published_revision is None:
            return None
        return self.revisions[self.published_revision]

    @property
    def state(self) -> ArticleState:
        if self.archived:
            return "archived"
        return "published" if self.published_revision is not None else "draft"

    @property
    def presented(self) -> Revision:
        """What the article shows and is found by: the published revision, else the latest."""
        return self.published or self.latest

    @property
    def has_unpublished_changes(self) -> bool:
        return (
            self.published_revision is not None and self.latest_revision > self.published_revision
        )

    def revision(self, number: int) -> Revision:
        try:
            return self.revisions[number]
        except KeyError:
            raise InvalidInput(
                "revision", f"article has revisions 1 to {self.latest_revision}"
            ) from None

    # --- commands ------------------------------------------------------------------------

    @classmethod
    def create(cls, article_id: str, content: ArticleContent) -> Article:
        article = cls(article_id)
        article.record(KbArticleCreated(article_id=article_id, content=content))
        return article

    def revise(self, values: dict[str, Any], note: str | None = None) -> int | None:
        """Record a new revision with ``values`` over the latest; None when nothing changed."""
        if self.archived:
            raise DomainError("an archived article cannot be edited; restore it first")
        unknown = set(values) - set(CONTENT_FIELDS)
        if unknown:
            raise InvalidInput(sorted(unknown)[0], "is not an article field")
        base = self.latest
        content = make_content({**base.values(), **values})
        new = content.model_dump()
        changed = [f for f in CONTENT_FIELDS if new[f] != base.values()[f]]
        if not changed:
            return None
        number = self.latest_revision + 1
        self.record(
            KbArticleRevised(
                article_id=self.id,
                revision=number,
                based_on=base.number,
                changed=changed,
                content=content,
                note=note,
            )
        )
        return number

    def publish(self, revision: int | None = None) -> int:
        """Make ``revision`` (default: the latest) the one readers see."""
        if self.archived:
            raise DomainError("an archived article cannot be published; restore it first")
        number = self.latest_revision if revision is None else self.revision(revision).number
        if number == self.published_revision:
            raise DomainError(f"revision {number} is already the published one")
        self.record(
            KbArticlePublished(
                article_id=self.id, revision=number, previous_revision=self.published_revision
            )
        )
        return number

    def archive(self, reason: str | None = None) -> None:
        if self.archived:
            raise DomainError("the article is already archived")
        self.record(KbArticleArchived(article_id=self.id, reason=reason))

    def restore(self) -> None:
        if not self.archived:
            raise DomainError("only an archived article can be restored")
        self.record(KbArticleRestored(article_id=self.id))

    # --- mutators ------------------------------------------------------------------------

    @applies(KbArticleCreated)
    def _created(self, e: KbArticleCreated) -> None:
        self.revisions[1] = Revision.of(1, e.content)

    @applies(KbArticleRevised)
    def _revised(self, e: KbArticleRevised) -> None:
        self.revisions[e.revision] = Revision.of(e.revision, e.content, e.note)

    @applies(KbArticlePublished)
    def _published(self, e: KbArticlePublished) -> None:
        self.published_revision = e.revision

    @applies(KbArticleArchived)
    def _archived(self, e: KbArticleArchived) -> None:
        self.archived = True
        self.archive_reason = e.reason

    @applies(KbArticleRestored)
    def _restored(self, e: KbArticleRestored) -> None:
        self.archived = False
        self.archive_reason = None
        self.published_revision = None


class Category(Aggregate):
    stream_type = "kb_category"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.name = ""
        self.description: str | None = None
        self.parent_id: str | None = None

    @classmethod
    def create(
        cls, category_id: str, name: str, description: str | None, parent_id: str | None
    ) -> Category:
        name = name.strip()
        if not name:
            raise InvalidInput("name", "must not be empty")
        if parent_id == category_id:
            raise InvalidInput("parent_id", "a category cannot be its own parent")
        category = cls(category_id)
        category.record(
            KbCategoryCreated(
                category_id=category_id, name=name, description=description, parent_id=parent_id
            )
        )
        return category

    def update(self, values: dict[str, Any]) -> list[str]:
        """Set the given fields (name, description, parent_id); returns those that changed."""
        if "name" in values:
            if values["name"] is None or not str(values["name"]).strip():
                raise InvalidInput("name", "must not be empty")
            values = {**values, "name": str(values["name"]).strip()}
        if values.get("parent_id") is not None and values["parent_id"] == self.id:
            raise InvalidInput("parent_id", "a category cannot be its own parent")
        changed = [
            f
            for f in ("name", "description", "parent_id")
            if f in values and getattr(self, f) != values[f]
        ]
        if changed:
            self.record(
                KbCategoryUpdated(
                    category_id=self.id,
                    changed=changed,
                    **{f: values[f] for f in changed},
                )
            )
        return [str(f) for f in changed]

    @applies(KbCategoryCreated)
    def _created(self, e: KbCategoryCreated) -> None:
        self.name, self.description, self.parent_id = e.name, e.description, e.parent_id

    @applies(KbCategoryUpdated)
    def _updated(self, e: KbCategoryUpdated) -> None:
        for name in e.changed:
            setattr(self, name, getattr(e, name))


def pair_id(*parts: str) -> str:
    """A short stable id for a pair of ids, fit for a stream id (no personal data in it)."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


class ArticleLink(Aggregate):
    """The link between one article and one ticket (its own stream: linking never races with
    an edit of the article). The subject is the ticket's customer, when known."""

    stream_type = "kb_article_link"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.article_id = ""
        self.ticket_id = ""
        self.linked = False
        self.revision: int | None = None

    @classmethod
    def stream_key(cls, article_id: str, ticket_id: str) -> str:
        return pair_id(article_id, ticket_id)

    def link(self, article_id: str, ticket_id: str, revision: int, customer_id: str | None) -> None:
        if self.linked:
            raise DomainError("the article is already linked to this ticket")
        self.subject = customer_id
        self.record(KbArticleLinked(article_id=article_id, ticket_id=ticket_id, revision=revision))

    def unlink(self, customer_id: str | None) -> None:
        if not self.linked:
            raise DomainError("the article is not linked to this ticket")
        self.subject = customer_id
        self.record(KbArticleUnlinked(article_id=self.article_id, ticket_id=self.ticket_id))

    @applies(KbArticleLinked)
    def _linked(self, e: KbArticleLinked) -> None:
        self.article_id, self.ticket_id = e.article_id, e.ticket_id
        self.linked = True
        self.revision = e.revision

    @applies(KbArticleUnlinked)
    def _unlinked(self, e: KbArticleUnlinked) -> None:
        self.linked = False


@dataclass(frozen=True)
class Voter:
    """Who gives feedback, for the once-per-article rule: a customer, a signed link or a user."""

    kind: Literal["customer", "token", "user"]
    key: str
    customer_id: str | None = field(default=None)

    @property
    def ref(self) -> str:
        return f"{self.kind}:{self.key}"


class Feedback(Aggregate):
    """One voter's feedback on one article: the stream exists at most once, so the rule
    "once per customer (or signed link) per article" holds even for concurrent requests."""

    stream_type = "kb_feedback"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.helped: bool | None = None

    @classmethod
    def stream_key(cls, article_id: str, voter: Voter) -> str:
        return pair_id(article_id, voter.ref)

    @classmethod
    def give(
        cls,
        article: Article,
        voter: Voter,
        helped: bool,
        *,
        channel: Literal["api", "signed_link"],
        ticket_id: str | None,
        comment: str | None,
    ) -> Feedback:
        if article.state != "published" or article.published_revision is None:
            raise DomainError("feedback is only taken on a published article")
        fb = cls(cls.stream_key(article.id, voter))
        fb.subject = voter.customer_id
        fb.record(
            KbFeedbackRecorded(
                article_id=article.id,
                helped=helped,
                revision=article.published_revision,
                channel=channel,
                customer_id=voter.customer_id,
                ticket_id=ticket_id,
                comment=comment,
            )
        )
        return fb

    @applies(KbFeedbackRecorded)
    def _recorded(self, e: KbFeedbackRecorded) -> None:
        self.helped = e.helped
