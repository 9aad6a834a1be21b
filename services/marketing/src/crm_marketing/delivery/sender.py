"""The sender: claims due messages in the database, sends them, records what happened.

Exactly once, also across a crash of the sender:

1. **Claim** (one transaction): due ``queued`` rows are locked ``FOR UPDATE SKIP LOCKED`` (any
   number of senders, on any replica, take disjoint rows), checked — consent and contact point,
   quiet hours (deferred), the per-customer frequency cap (under a per-customer advisory lock,
   so two senders cannot both let a customer's N+1-th message through) — and moved to
   ``sending`` with a lease and a stable Message-ID ``<message id@domain>``; committed.
2. **Send** over one SMTP connection, held by the SMTP worker process (``smtp_worker``; in
   this process with ``MARKETING_SMTP_WORKER=false``), or through a provider.
3. **Record** (one transaction per group: what was answered within ``GROUP_WINDOW``):
   ``sending`` → ``sent`` / ``bounced``, with the event. A message whose lease ran out while
   still ``sending`` (its sender died) is claimed again and resent with the same Message-ID,
   so a receiving system that already took it can drop the copy (RFC 5322 §3.6.4). Only a
   crash between the server's 250 and step 3's commit (at most ``GROUP_WINDOW`` plus a commit)
   leaves a message in doubt; everything before is never sent (the worker dies with the
   sender's process), everything after never again.

The three steps overlap (a pipeline): the next batch is claimed while one is sent, the next
messages are composed while one is on the wire, outcomes are recorded while the next go out.

For SMS and push the provider is called inside step 3's transaction (the local provider writes
its record there), so those are recorded exactly once outright.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

import asyncpg

from crm_events import EventPayload
from crm_events.schemas.marketing_campaigns import (
    MessageBounced,
    MessageDelivered,
    MessageSent,
    MessageSkipped,
    SkipReason,
)
from crm_marketing.campaigns.policy import FrequencyCap, QuietHours
from crm_marketing.delivery import messages
from crm_marketing.delivery.compose import BatchComposer, Composed, Tracker
from crm_marketing.delivery.messages import MessageKey
from crm_marketing.delivery.providers import LocalProvider, MobileMessage, Provider
from crm_marketing.delivery.settings import DeliverySettings
from crm_marketing.delivery.smtp import Email, Outcome, SendResult, SmtpSender, build_email
from crm_marketing.delivery.smtp_worker import SmtpWorker
from crm_runtime.db import Conn
from crm_runtime.eventstore import EventStore, Metadata
from crm_runtime.settings import Settings

log = logging.getLogger(__name__)

SYSTEM = Metadata(actor="system:delivery")
PIPELINE_DEPTH = 16  # messages composed ahead of the one on the wire
GROUP_COMMIT = 500  # outcomes recorded per transaction, at most
GROUP_WINDOW = 0.2  # seconds an outcome may wait for others to share its commit


class Throttle:
    """At most ``rate`` calls of ``wait`` per second (0: no limit), smoothed, no bursts."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0

    @property
    def paced(self) -> bool:
        return self.interval > 0

    async def wait(self) -> None:
        if self.interval <= 0:
            return
        now = time.monotonic()
        if self._next > now:
            await asyncio.sleep(self._next - now)
            now = self._next
        self._next = max(self._next, now) + self.interval


@dataclass
class Claim:
    key: MessageKey
    template_id: str
    provider_id: str
    address: str
    attempts: int
    revision: int | None = None  # of the template; None: it does not exist (fails to render)
    again: bool = False  # claimed after another sender's lease ran out (it may have been sent)


@dataclass
class Finish:
    claim: Claim
    result: SendResult
    composed: Composed | None = None
    skip: SkipReason | None = None
    raw: bytes | None = None  # an e-mail ready to go out


@dataclass
class ClaimReport:
    claimed: list[Claim] = field(default_factory=list)
    skipped: int = 0
    deferred: int = 0


@dataclass
class Batch:
    """A claimed batch, with what composing it needs read (None: read it when sending)."""

    claims: list[Claim]
    skipped: int
    composer: BatchComposer | None = None


def _targets(claims: list[Claim]) -> list[tuple[str, str, str, int | None]]:
    return [(c.key.customer_id, c.template_id, c.key.channel, c.revision) for c in claims]


class Outcomes:
    """What the sender hands to the recorder, taken in groups: one commit (one WAL flush) for
    what finished within ``window`` seconds of the group's first outcome, at most ``limit``.
    One timer per group, not one per outcome."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self.items: list[Finish] = []
        self.closed = False
        self._first = 0.0  # when the oldest waiting outcome came
        self._wake = asyncio.Event()

    def put(self, item: Finish) -> None:
        self.items.append(item)
        if len(self.items) == 1:
            self._first = time.monotonic()
            self._wake.set()
        elif len(self.items) >= self.limit:
            self._wake.set()

    def close(self) -> None:
        """No more outcomes: what waits is taken at once."""
        self.closed = True
        self._wake.set()

    async def take(self) -> list[Finish] | None:
        """The next group; None once closed and everything was taken."""
        while not self.items:
            if self.closed:
                return None
            self._wake.clear()
            await self._wake.wait()
        left = self._first + self.window - time.monotonic()
        if left > 0 and not self.closed and len(self.items) < self.limit:
            self._wake.clear()
            timer = asyncio.get_running_loop().call_later(left, self._wake.set)
            try:
                await self._wake.wait()
            finally:
                timer.cancel()
        group, self.items = self.items[: self.limit], self.items[self.limit :]
        self._first = time.monotonic() - self.window  # the rest has waited already
        return group


_COLUMNS = (
    "message_id, customer_id, channel, campaign_id, trigger_id, template_id, status,"
    " provider_id, version, attempts, template_revision"
)


class Recorder:
    """The record stage of a pipeline: a task that commits the outcomes put to it in groups,
    on a connection of its own (taken when the first outcome comes)."""

    def __init__(self, deliverer: Deliverer, now: datetime) -> None:
        self.deliverer = deliverer
        self.now = now
        self.outcomes = Outcomes(GROUP_COMMIT, GROUP_WINDOW)
        self.task: asyncio.Task[None] | None = None

    @property
    def failed(self) -> bool:
        return self.task is not None and self.task.done()

    def put(self, item: Finish) -> None:
        if self.outcomes.closed:  # only after a cancelled wait: sent again after its lease
            log.warning(
                "outcome after the recorder stopped",
                extra={"message_id": str(item.claim.key.message_id)},
            )
            return
        if self.task is None:
            self.task = asyncio.create_task(self.deliverer._record_all(self.outcomes, self.now))
        self.outcomes.put(item)

    async def finish(self) -> None:
        """Record what is left; raises what stopped the recorder."""
        self.outcomes.close()
        if self.task is not None:
            await self.task


def _answered(item: Finish, recorder: Recorder, sent: asyncio.Future[SendResult]) -> None:
    if sent.cancelled() or sent.exception() is not None:
        return  # the worker died (logged): in doubt, the message is sent again after its lease
    recorder.put(Finish(item.claim, sent.result(), item.composed))


class Deliverer:
    """Sends due messages. One per sender loop; safe to run on every replica at once."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        store: EventStore,
        settings: Settings,
        cfg: DeliverySettings,
        *,
        smtp: SmtpSender | None = None,
        provider: Provider | None = None,
    ) -> None:
        self.pool = pool
        self.store = store
        self.cfg = cfg
        self.smtp = smtp or SmtpSender(settings.smtp_url, timeout=cfg.smtp_timeout)
        self.worker: SmtpWorker | None = None  # None: SMTP in this process, through ``smtp``
        if smtp is None and cfg.smtp_worker:
            self.worker = SmtpWorker(settings.smtp_url, timeout=cfg.smtp_timeout)
        self.provider: Provider = provider or LocalProvider()
        self.mail_from = settings.mail_from
        self.domain = settings.mail_from.rpartition("@")[2] or "localhost"
        self.tracker = Tracker(cfg.base_url(settings), cfg.tracking_key(settings))
        self.throttle = Throttle(cfg.send_rate)
        self.cap = FrequencyCap(cfg.frequency_cap, cfg.frequency_window)
        self.quiet = QuietHours(cfg.quiet_hours_start, cfg.quiet_hours_end, cfg.default_timezone)

    async def close(self) -> None:
        try:
            if self.worker is not None:
                await self.worker.close()
        finally:
            await self.smtp.close()

    # -- the loop ---------------------------------------------------------------------------

    async def run_once(self, now: datetime) -> int:
        """Claim one batch of due messages and send it; returns how many were handled."""
        report = await self.claim(now)
        if report.claimed:
            await self.send(report.claimed, now)
        return len(report.claimed) + report.skipped

    async def drain(self, now: datetime, max_batches: int = 1000) -> int:
        """Send everything due at ``now``; returns how many messages were handled.

        One pipeline for all batches: the next batch is claimed (and its profiles and templates
        read) while the current one is being sent, and outcomes are recorded across batch ends,
        so the SMTP connection does not wait for the database between batches.
        """
        total = 0
        recorder = Recorder(self, now)
        ahead: asyncio.Task[Batch] | None = asyncio.create_task(self._prepare(now))
        try:
            for i in range(max_batches):
                assert ahead is not None
                claiming, ahead = ahead, None
                batch = await claiming
                done = len(batch.claims) + batch.skipped
                if done == 0:
                    break
                total += done
                if i + 1 < max_batches:
                    ahead = asyncio.create_task(self._prepare(now))
                if batch.claims:
                    await self._send(batch.claims, batch.composer, recorder)
                if recorder.failed:
                    break  # its error is raised below
        finally:
            try:
                if ahead is not None:
                    await self._abandon(ahead)
            finally:
                await self._finish(recorder)
        return total

    async def _prepare(self, now: datetime) -> Batch:
        """Claim a batch and read what composing it needs."""
        report = await self.claim(now)
        batch = Batch(report.claimed, report.skipped)
        if batch.claims:
            composer = BatchComposer(self.tracker)
            try:
                async with self.pool.acquire() as conn:
                    await composer.load(conn, _targets(batch.claims))
                batch.composer = composer
            except Exception:  # sending reads them again
                log.exception("reading a batch's profiles and templates failed")
        return batch

    async def _abandon(self, ahead: asyncio.Task[Batch]) -> None:
        """A batch claimed ahead that will not be sent now (drain stopped early): put what was
        claimed from the queue back, so it goes out without waiting for its lease to run out
        (a message claimed again after a lease ran out keeps its lease: it may have been sent)."""
        if not ahead.done():
            ahead.cancel()
        try:
            batch = await ahead
        except asyncio.CancelledError:
            return  # its transaction was rolled back (or it never started)
        except Exception:
            log.exception("claiming ahead failed")
            return
        fresh = [c.key.message_id for c in batch.claims if not c.again]
        if not fresh:
            return
        try:
            async with self.pool.acquire() as conn:
                await conn.execute(
                    "UPDATE messages SET status = 'queued', counted_at = NULL,"
                    " claimed_until = NULL, attempts = attempts - 1"
                    " WHERE message_id = ANY($1::uuid[]) AND status = 'sending'",
                    fresh,
                )
        except Exception:  # they are sent when their lease runs out
            log.exception("could not release messages claimed ahead")

    # -- 1. claim ---------------------------------------------------------------------------

    async def claim(self, now: datetime) -> ClaimReport:
        limit = self.cfg.batch_size
        report = ClaimReport()
        async with self.pool.acquire() as conn, conn.transaction():
            recovered = await conn.fetch(
                f"SELECT {_COLUMNS} FROM messages WHERE status = 'sending' AND claimed_until < $1"
                " ORDER BY claimed_until LIMIT $2 FOR UPDATE SKIP LOCKED",
                now,
                limit,
            )
            queued = await conn.fetch(
                f"SELECT {_COLUMNS} FROM messages WHERE status = 'queued' AND due_at <= $1"
                " ORDER BY due_at, message_id LIMIT $2 FOR UPDATE SKIP LOCKED",
                now,
                limit - len(recovered),
            )
            rows = [*recovered, *queued]
            if not rows:
                return report
            if queued:  # the cap: one sender at a time decides for a customer
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended('mkc-cap:' || c, 0))"
                    " FROM (SELECT DISTINCT c FROM unnest($1::text[]) AS c ORDER BY c) AS s",
                    [r["customer_id"] for r in queued],
                )
            reach = await messages.reach(conn, [(r["customer_id"], r["channel"]) for r in rows])
            recent = await self._recent(conn, {r["customer_id"] for r in queued}, now)
            revisions = await self._revisions(conn, rows)
            lease = now + timedelta(seconds=self.cfg.lease_seconds)
            skipped: list[tuple[MessageKey, SkipReason]] = []
            deferred: list[tuple[UUID, datetime]] = []
            claimed_new: list[UUID] = []
            claimed_again: list[UUID] = []
            for row, where in zip(rows, reach, strict=True):
                key = MessageKey.of(row)
                in_flight = row["status"] == "sending"
                reason = where.skip_reason()
                if reason is not None:
                    skipped.append((key, reason))
                    continue
                if not in_flight:
                    later = self.quiet.defer_until(now, where.timezone)
                    if later is not None:
                        deferred.append((key.message_id, later))
                        continue
                    if not self.cap.allows(recent[key.customer_id]):
                        skipped.append((key, "frequency_cap"))
                        continue
                    recent[key.customer_id] += 1
                    claimed_new.append(key.message_id)
                else:
                    claimed_again.append(key.message_id)
                assert where.address is not None
                report.claimed.append(
                    Claim(
                        key=key,
                        template_id=row["template_id"],
                        provider_id=row["provider_id"] or self._message_id(key.message_id),
                        address=where.address,
                        attempts=row["attempts"] + 1,
                        revision=revisions.get(key.message_id),
                        again=in_flight,
                    )
                )
            if claimed_new:
                await conn.execute(
                    "UPDATE messages SET status = 'sending', counted_at = $2, claimed_until = $3,"
                    " attempts = attempts + 1,"
                    " provider_id = coalesce(provider_id, '<' || message_id || '@' || $4 || '>')"
                    " WHERE message_id = ANY($1::uuid[])",
                    claimed_new,
                    now,
                    lease,
                    self.domain,
                )
            if claimed_again:
                await conn.execute(
                    "UPDATE messages SET claimed_until = $2, attempts = attempts + 1"
                    " WHERE message_id = ANY($1::uuid[])",
                    claimed_again,
                    lease,
                )
            fixed = [
                (r["message_id"], revisions[r["message_id"]])
                for r in rows
                if r["template_revision"] is None and r["message_id"] in revisions
            ]
            claimed = {c.key.message_id for c in report.claimed}
            fixed = [f for f in fixed if f[0] in claimed]
            if fixed:  # what a resend of it renders, too
                await conn.execute(
                    "UPDATE messages m SET template_revision = u.rev"
                    " FROM unnest($1::uuid[], $2::int[]) AS u(id, rev) WHERE m.message_id = u.id",
                    [f[0] for f in fixed],
                    [f[1] for f in fixed],
                )
            if deferred:
                await conn.execute(
                    "UPDATE messages m SET due_at = u.due"
                    " FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, due)"
                    " WHERE m.message_id = u.id",
                    [d[0] for d in deferred],
                    [d[1] for d in deferred],
                )
            if skipped:
                await self._skip(conn, skipped, rows)
            report.skipped = len(skipped)
            report.deferred = len(deferred)
        return report

    async def _revisions(self, conn: Conn, rows: list[asyncpg.Record]) -> dict[UUID, int]:
        """The template revision each message is rendered with: the one recorded on it, else
        (a message from before revisions were recorded) the template's current one, which the
        claim then records, so a resend renders the same revision."""
        missing = list({r["template_id"] for r in rows if r["template_revision"] is None})
        current: dict[str, int] = {}
        if missing:
            found = await conn.fetch(
                "SELECT template_id, revision FROM templates WHERE template_id = ANY($1::text[])",
                missing,
            )
            current = {r["template_id"]: int(r["revision"]) for r in found}
        out: dict[UUID, int] = {}
        for r in rows:
            revision = r["template_revision"]
            if revision is None:
                revision = current.get(r["template_id"])
            if revision is not None:
                out[r["message_id"]] = int(revision)
        return out

    def _message_id(self, message_id: UUID) -> str:
        return f"<{message_id}@{self.domain}>"

    async def _recent(self, conn: Conn, customers: set[str], now: datetime) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        if not customers or self.cap.limit <= 0:
            return counts
        rows = await conn.fetch(
            "SELECT customer_id, count(*) AS n FROM messages"
            " WHERE customer_id = ANY($1::text[]) AND counted_at > $2 AND counted_at <= $3"
            " GROUP BY customer_id",
            list(customers),
            now - self.cap.window,
            now,
        )
        counts.update({r["customer_id"]: int(r["n"]) for r in rows})
        return counts

    async def _skip(
        self,
        conn: Conn,
        skipped: list[tuple[MessageKey, SkipReason]],
        rows: list[asyncpg.Record],
    ) -> None:
        versions = {r["message_id"]: r["version"] for r in rows}
        await conn.execute(
            "UPDATE messages m SET status = 'skipped', skip_reason = u.reason,"
            " version = m.version + 1, claimed_until = NULL"
            " FROM unnest($1::uuid[], $2::text[]) AS u(id, reason) WHERE m.message_id = u.id",
            [k.message_id for k, _ in skipped],
            [reason for _, reason in skipped],
        )
        fresh = [(k, r) for k, r in skipped if versions[k.message_id] == 0]
        await messages.skip_new(conn, self.store, fresh, SYSTEM)
        for key, reason in skipped:
            if versions[key.message_id] != 0:
                await messages.append(
                    conn,
                    self.store,
                    key,
                    versions[key.message_id],
                    [MessageSkipped(**key.ref(), reason=reason)],
                    SYSTEM,
                )

    # -- 2. send, 3. record -----------------------------------------------------------------

    async def send(
        self, claims: list[Claim], now: datetime, composer: BatchComposer | None = None
    ) -> None:
        """Send claimed messages through a pipeline of three stages that overlap: compose the
        next messages (database reads unless ``composer`` has them, templates), send over one
        SMTP connection, record what happened (group commits)."""
        recorder = Recorder(self, now)
        try:
            await self._send(claims, composer, recorder)
        finally:
            await self._finish(recorder)

    async def _finish(self, recorder: Recorder) -> None:
        """Wait for the answers of what is still on the wire, then record what is left."""
        try:
            if self.worker is not None:
                await self.worker.flush()
        finally:
            await recorder.finish()

    async def _send(
        self, claims: list[Claim], composer: BatchComposer | None, recorder: Recorder
    ) -> None:
        prepared: asyncio.Queue[Finish | None] = asyncio.Queue(maxsize=PIPELINE_DEPTH)
        composing = asyncio.create_task(self._compose_all(claims, prepared, composer))
        try:
            while (item := await prepared.get()) is not None:
                if recorder.failed:
                    break  # its error is raised by its finish
                await self.throttle.wait()
                if self.worker is None or item.raw is None:
                    recorder.put(await self._transmit(item))
                    continue
                # Handed to the worker: composing the next message overlaps this one's SMTP
                # round trips; its outcome is recorded when the answer comes.
                sent = await self.worker.submit(
                    self.mail_from, item.claim.address, item.raw, at_once=self.throttle.paced
                )
                sent.add_done_callback(functools.partial(_answered, item, recorder))
        finally:
            composing.cancel()
            await asyncio.gather(composing, return_exceptions=True)

    async def _compose_all(
        self,
        claims: list[Claim],
        prepared: asyncio.Queue[Finish | None],
        composer: BatchComposer | None,
    ) -> None:
        try:
            if composer is None:
                composer = BatchComposer(self.tracker)
                async with self.pool.acquire() as conn:
                    await composer.load(conn, _targets(claims))
            for claim in claims:
                await prepared.put(self._compose(composer, claim))
                await asyncio.sleep(0)  # let the sender take it
        except asyncio.CancelledError:
            raise  # the sender stopped reading: it cancelled us
        except Exception:
            log.exception("composing stopped")
        await prepared.put(None)  # the end, after everything composed

    def _compose(self, composer: BatchComposer, claim: Claim) -> Finish:
        key = claim.key
        try:
            composed = composer.compose(
                message_id=key.message_id,
                customer_id=key.customer_id,
                template_id=claim.template_id,
                channel=key.channel,
                revision=claim.revision,
            )
        except Exception as exc:  # a template that cannot be rendered for this customer
            log.warning(
                "message not rendered",
                extra={"message_id": str(key.message_id), "error": type(exc).__name__},
            )
            return Finish(claim, SendResult(Outcome.BOUNCED), skip="render_failed")
        if key.channel != "email":
            return Finish(claim, SendResult(Outcome.ACCEPTED), composed)  # provider: at record
        try:
            raw = build_email(
                Email(
                    message_id=claim.provider_id,
                    sender=self.mail_from,
                    to=claim.address,
                    subject=composed.subject,
                    text=composed.text,
                    html=composed.html,
                    unsubscribe_url=composed.unsubscribe_url,
                )
            )
        except ValueError:
            return Finish(claim, SendResult(Outcome.BOUNCED, None, "unusable address"), composed)
        return Finish(claim, SendResult(Outcome.RETRY), composed, raw=raw)

    async def _transmit(self, item: Finish) -> Finish:
        if item.raw is None:
            return item
        result = await self.smtp.send(self.mail_from, item.claim.address, item.raw)
        return Finish(item.claim, result, item.composed)

    async def _record_all(self, outcomes: Outcomes, now: datetime) -> None:
        async with self.pool.acquire() as conn:
            while (items := await outcomes.take()) is not None:
                try:
                    async with conn.transaction():
                        await self._record_group(conn, items, now)
                except Exception:  # one bad record must not undo the others: one at a time
                    log.exception("group commit failed; recording one by one")
                    for f in items:
                        try:
                            async with conn.transaction():
                                await self._record(conn, f, now)
                        except Exception:
                            log.exception(
                                "message outcome not recorded",
                                extra={"message_id": str(f.claim.key.message_id)},
                            )

    async def _record_group(self, conn: Conn, items: list[Finish], now: datetime) -> None:
        """E-mails accepted by the server (nearly all) in two statements for the group."""
        hot: list[Finish] = []
        for f in items:
            if (
                f.claim.key.channel == "email"
                and f.skip is None
                and f.result.outcome is Outcome.ACCEPTED
            ):
                hot.append(f)
            else:
                await self._record(conn, f, now)
        if not hot:
            return
        rows = await conn.fetch(
            "UPDATE messages m SET status = 'sent', sent_at = $3, links = u.links,"
            " version = m.version + 1, claimed_until = NULL, last_error = NULL"
            " FROM unnest($1::uuid[], $2::jsonb[]) AS u(id, links)"
            " WHERE m.message_id = u.id AND m.status = 'sending'"
            " RETURNING m.message_id, m.version - 1 AS before",
            [f.claim.key.message_id for f in hot],
            [messages.links_json(f.composed.links if f.composed else []) for f in hot],
            now,
        )
        before = {r["message_id"]: int(r["before"]) for r in rows}
        first: list[tuple[MessageKey, EventPayload]] = []
        for f in hot:
            key = f.claim.key
            if key.message_id not in before:
                continue  # another sender took over after our lease ran out, and recorded it
            sent = MessageSent(
                **key.ref(),
                template_id=f.claim.template_id,
                provider_message_id=f.claim.provider_id,
            )
            if before[key.message_id] == 0:
                first.append((key, sent))
            else:
                await messages.append(conn, self.store, key, before[key.message_id], [sent], SYSTEM)
        await messages.start_streams(conn, self.store, first, SYSTEM)

    async def _record(self, conn: Conn, finish: Finish, now: datetime) -> None:
        claim, result, key = finish.claim, finish.result, finish.claim.key
        row = await conn.fetchrow(
            "SELECT version FROM messages WHERE message_id = $1 AND status = 'sending' FOR UPDATE",
            key.message_id,
        )
        if row is None:
            return  # another sender took over after our lease ran out, and recorded it
        version = int(row["version"])
        if finish.skip is not None:
            await self._final_skip(conn, key, version, finish.skip)
            return
        delivered = False
        if key.channel != "email" and finish.composed is not None:
            result = await self.provider.send(
                conn,
                MobileMessage(
                    message_id=key.message_id,
                    channel="sms" if key.channel == "sms" else "push",
                    recipient=claim.address,
                    body=finish.composed.text,
                    title=finish.composed.title,
                ),
                now,
            )
            delivered = result.outcome is Outcome.ACCEPTED and self.provider.delivers_immediately
        if result.outcome is Outcome.ACCEPTED:
            sent = MessageSent(
                **key.ref(),
                template_id=claim.template_id,
                provider_message_id=claim.provider_id,
            )
            events = [sent, MessageDelivered(**key.ref())] if delivered else [sent]
            new_version = await messages.append(conn, self.store, key, version, events, SYSTEM)
            await conn.execute(
                "UPDATE messages SET status = $2, sent_at = $3, delivered_at = $4,"
                " links = $5::jsonb, version = $6, claimed_until = NULL, last_error = NULL"
                " WHERE message_id = $1",
                key.message_id,
                "delivered" if delivered else "sent",
                now,
                now if delivered else None,
                messages.links_json(finish.composed.links if finish.composed else []),
                new_version,
            )
        elif result.outcome is Outcome.BOUNCED:
            bounced = MessageBounced(
                **key.ref(),
                code=result.code,
                reason=result.reason or "refused",
            )
            new_version = await messages.append(conn, self.store, key, version, [bounced], SYSTEM)
            await conn.execute(
                "UPDATE messages SET status = 'bounced', bounced_at = $2, version = $3,"
                " claimed_until = NULL, last_error = $4 WHERE message_id = $1",
                key.message_id,
                now,
                new_version,
                result.reason[:500],
            )
        elif claim.attempts >= self.cfg.max_attempts:
            await self._final_skip(conn, key, version, "delivery_failed", result.reason)
        else:  # try again later; it was not sent, so it no longer counts against the cap
            await conn.execute(
                "UPDATE messages SET status = 'queued', due_at = $2, counted_at = NULL,"
                " claimed_until = NULL, last_error = $3 WHERE message_id = $1",
                key.message_id,
                now + timedelta(seconds=self.cfg.retry_seconds * claim.attempts),
                result.reason[:500],
            )

    async def _final_skip(
        self, conn: Conn, key: MessageKey, version: int, reason: SkipReason, error: str = ""
    ) -> None:
        skipped = MessageSkipped(**key.ref(), reason=reason)
        new_version = await messages.append(conn, self.store, key, version, [skipped], SYSTEM)
        await conn.execute(
            "UPDATE messages SET status = 'skipped', skip_reason = $2, version = $3,"
            " claimed_until = NULL, counted_at = NULL, last_error = nullif($4, '')"
            " WHERE message_id = $1",
            key.message_id,
            reason,
            new_version,
            error[:500],
        )
