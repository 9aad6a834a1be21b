"""Command handlers of the knowledge base: load, decide, save and write the read model, all in
the caller's transaction (see ``crm_runtime.http.commands.run_command``)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from crm_events.schemas.service_kb import KbArticleCreated, KbArticleRevised
from crm_runtime import people
from crm_runtime.aggregate import Aggregate
from crm_runtime.db import Conn
from crm_runtime.errors import Conflict, InvalidInput, NotFound
from crm_runtime.eventstore import EventStore, Metadata
from crm_runtime.repository import Repository, check_version
from crm_service_desk.kb import views
from crm_service_desk.kb.domain import (
    Article,
    ArticleLink,
    Category,
    Feedback,
    Voter,
    make_content,
)

A = TypeVar("A", bound=Aggregate)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class FeedbackResult:
    article_id: str
    helped: bool
    revision: int
    helpful_count: int
    not_helpful_count: int


async def _lock(conn: Conn, key: str) -> None:
    """Serialise commands on one stream that may not exist yet (first writer wins cleanly)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", key)


class KbHandlers:
    def __init__(self, store: EventStore, clock: Callable[[], datetime] = _now) -> None:
        self.store = store
        self.clock = clock
        self.articles = Repository(store, Article)
        self.categories = Repository(store, Category)
        self.links = Repository(store, ArticleLink)
        self.feedback = Repository(store, Feedback)

    def now(self) -> datetime:
        return self.clock().astimezone(UTC)

    async def _load_or_new(self, conn: Conn, repo: Repository[A], key: str) -> A:
        await _lock(conn, repo.stream_id(key))
        try:
            return await repo.load(key, conn=conn)
        except NotFound:
            return repo.factory(key)

    # --- categories -----------------------------------------------------------------------

    async def _check_parent(self, conn: Conn, category_id: str, parent_id: str | None) -> None:
        if parent_id is None:
            return
        if not await views.category_exists(conn, parent_id):
            raise InvalidInput("parent_id", f"category {parent_id} does not exist")
        if category_id in await views.category_ancestors(conn, parent_id):
            raise InvalidInput("parent_id", "would make the category its own ancestor")

    async def create_category(
        self,
        conn: Conn,
        name: str,
        description: str | None,
        parent_id: str | None,
        meta: Metadata,
    ) -> Category:
        category_id = str(uuid.uuid4())
        await self._check_parent(conn, category_id, parent_id)
        category = Category.create(category_id, name, description, parent_id)
        await self.categories.save(conn, category, meta)
        await views.upsert_category(conn, category, self.now())
        return category

    async def update_category(
        self,
        conn: Conn,
        category: Category,
        values: dict[str, Any],
        meta: Metadata,
        expected: int | None,
    ) -> Category:
        check_version(expected, category.version)
        if "parent_id" in values:
            await self._check_parent(conn, category.id, values["parent_id"])
        if category.update(values):
            await self.categories.save(conn, category, meta)
            await views.upsert_category(conn, category, self.now())
        return category

    # --- articles -------------------------------------------------------------------------

    async def _check_category(self, conn: Conn, category_id: str | None) -> None:
        if category_id is not None and not await views.category_exists(conn, category_id):
            raise InvalidInput("category_id", f"category {category_id} does not exist")

    async def _saved(self, conn: Conn, article: Article, meta: Metadata) -> Article:
        new_revisions = [
            e.revision
            for e in article.pending
            if isinstance(e, KbArticleCreated | KbArticleRevised)
        ]
        await self.articles.save(conn, article, meta)
        at = self.now()
        for number in new_revisions:
            await views.insert_revision(conn, article, number, meta.actor, at)
        await views.upsert_article(conn, article, at)
        return article

    async def create_article(
        self, conn: Conn, values: dict[str, Any], meta: Metadata, *, publish: bool = False
    ) -> Article:
        content = make_content(values)
        await self._check_category(conn, content.category_id)
        article = Article.create(str(uuid.uuid4()), content)
        if publish:
            article.publish()
        return await self._saved(conn, article, meta)

    async def revise_article(
        self,
        conn: Conn,
        article: Article,
        values: dict[str, Any],
        note: str | None,
        meta: Metadata,
        expected: int | None,
        *,
        publish: bool = False,
    ) -> Article:
        check_version(expected, article.version)
        if values.get("category_id") is not None:
            await self._check_category(conn, values["category_id"])
        article.revise(values, note)
        if publish and article.published_revision != article.latest_revision:
            article.publish()
        if article.pending:
            await self._saved(conn, article, meta)
        return article

    async def publish(
        self,
        conn: Conn,
        article: Article,
        revision: int | None,
        meta: Metadata,
        expected: int | None,
    ) -> Article:
        check_version(expected, article.version)
        article.publish(revision)
        return await self._saved(conn, article, meta)

    async def archive(
        self, conn: Conn, article: Article, reason: str | None, meta: Metadata, expected: int | None
    ) -> Article:
        check_version(expected, article.version)
        article.archive(reason)
        return await self._saved(conn, article, meta)

    async def restore(
        self, conn: Conn, article: Article, meta: Metadata, expected: int | None
    ) -> Article:
        check_version(expected, article.version)
        article.restore()
        return await self._saved(conn, article, meta)

    # --- links ----------------------------------------------------------------------------

    async def _ticket(self, conn: Conn, ticket_id: str) -> views.TicketRef:
        ticket = await views.ticket(conn, ticket_id)
        if ticket is None:
            raise NotFound(f"ticket {ticket_id} does not exist")
        return ticket

    async def _customer(self, conn: Conn, customer_id: str | None) -> str | None:
        return None if customer_id is None else await people.canonical(conn, customer_id)

    async def link(
        self, conn: Conn, article: Article, ticket_id: str, meta: Metadata
    ) -> ArticleLink:
        if article.state != "published" or article.published_revision is None:
            raise Conflict("only a published article can be linked to a ticket")
        ticket = await self._ticket(conn, ticket_id)
        link = await self._load_or_new(
            conn, self.links, ArticleLink.stream_key(article.id, ticket_id)
        )
        link.link(
            article.id,
            ticket_id,
            article.published_revision,
            await self._customer(conn, ticket.customer_id),
        )
        await self.links.save(conn, link, meta)
        await views.insert_link(
            conn, article.id, ticket_id, article.published_revision, meta.actor, self.now()
        )
        return link

    async def unlink(self, conn: Conn, article_id: str, ticket_id: str, meta: Metadata) -> None:
        link = await self._load_or_new(
            conn, self.links, ArticleLink.stream_key(article_id, ticket_id)
        )
        if not link.linked:
            raise NotFound(f"article {article_id} is not linked to ticket {ticket_id}")
        ticket = await views.ticket(conn, ticket_id)
        link.unlink(await self._customer(conn, ticket.customer_id if ticket else None))
        await self.links.save(conn, link, meta)
        await views.delete_link(conn, article_id, ticket_id)

    async def ticket_customer(self, conn: Conn, ticket_id: str) -> str | None:
        return await self._customer(conn, (await self._ticket(conn, ticket_id)).customer_id)

    # --- feedback -------------------------------------------------------------------------

    async def give_feedback(
        self,
        conn: Conn,
        article: Article,
        voter: Voter,
        helped: bool,
        *,
        channel: Literal["api", "signed_link"],
        ticket_id: str | None,
        comment: str | None,
        meta: Metadata,
    ) -> FeedbackResult:
        if voter.customer_id is not None:
            canonical = await people.canonical(conn, voter.customer_id)
            voter = Voter(
                voter.kind, canonical if voter.kind == "customer" else voter.key, canonical
            )
        fb = await self._load_or_new(conn, self.feedback, Feedback.stream_key(article.id, voter))
        if fb.exists:
            who = {
                "customer": "by this customer",
                "token": "through this link",
                "user": "by you",
            }[voter.kind]
            raise Conflict(f"feedback on this article was already given {who}", helped=fb.helped)
        fb = Feedback.give(
            article, voter, helped, channel=channel, ticket_id=ticket_id, comment=comment
        )
        await self.feedback.save(conn, fb, meta)
        assert article.published_revision is not None
        helpful, not_helpful = await views.insert_feedback(
            conn,
            article_id=article.id,
            voter=voter.ref,
            helped=helped,
            revision=article.published_revision,
            channel=channel,
            customer_id=voter.customer_id,
            ticket_id=ticket_id,
            comment=comment,
            at=self.now(),
        )
        return FeedbackResult(article.id, helped, article.published_revision, helpful, not_helpful)
