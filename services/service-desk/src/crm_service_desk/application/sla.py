"""SLA and escalation: configuration commands and the scheduled jobs.

Where the clock's pauses come from (for SD-A): SD-B reads SD-A's ``ticket_status_spans`` table
(status, started_at, ended_at per ticket) and the ``tickets`` row; a ticket without spans gets
spans derived from its row (``waiting_since``, ``resolved_at``/``closed_at``).

Jobs (``sla_jobs(ctx)``, merged into the service's scheduler by ``jobs.py``):

- ``sla.evaluate``: measures each open ticket's targets in business minutes and upserts
  ``sla_states``; records ``crm.service.sla.at_risk_flagged`` / ``crm.service.sla.breached``
  once per target and episode (the ``sla-<ticket>`` stream is the authority; a per-ticket
  advisory lock serialises evaluations, each of which reads the ticket under that lock). A
  breach that an ``sla_breach`` escalation rule covers escalates in the same transaction.
  The ticket commands that move a clock (opening, a status change, the first public reply, a
  priority change) run the same evaluation for their ticket in their own transaction
  (``evaluate_ticket``), so the SLA state is there with the command; the job is what notices
  time passing (at risk, breached) and catches up policy and calendar changes. An evaluation
  never measures at a time earlier than the ticket's last one (nor overwrites a newer state).
- ``sla.escalate``: ``no_public_answer`` rules over open tickets, each decided from the ticket
  as read under the same per-ticket lock (a public reply committed meanwhile is seen).
- ``sla.escalation_mail``: e-mails the rule's managers after the commit; a failure is retried
  on later ticks (up to ``MAX_MAIL_ATTEMPTS``).

Escalation fires once per rule and episode: the unique ``escalations`` row is claimed in the
transaction that appends ``crm.service.ticket.escalated``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from crm_events.schemas.service_routing import (
    EscalationRule,
    Holiday,
    SlaAtRiskFlagged,
    SlaBreached,
    SlaPolicySet,
    TicketEscalated,
    WorkingHours,
)
from crm_runtime.context import ServiceContext
from crm_runtime.db import Conn
from crm_runtime.errors import InvalidInput, NotFound
from crm_runtime.eventstore import EventStore, Metadata
from crm_runtime.mail import Mailer, MailError, OutgoingMail
from crm_runtime.repository import Repository, check_version
from crm_runtime.scheduler import Job
from crm_service_desk.adapters import sla_view
from crm_service_desk.adapters.sla_view import TicketRow
from crm_service_desk.domain.calendar import BusinessCalendar, Calendar, CalendarError
from crm_service_desk.domain.escalation import (
    RULES_ID,
    EscalationRules,
    TicketEscalations,
    TicketFacts,
    breach_escalates,
    unanswered_episode,
)
from crm_service_desk.domain.sla import (
    Fired,
    Measurement,
    SlaPolicy,
    TicketSla,
    due_at,
    measure,
    signals,
    target_minutes,
)

SYSTEM = Metadata(actor="system:sla")
MAX_MAIL_ATTEMPTS = 10


def _now() -> datetime:
    return datetime.now(UTC)


# --- configuration ----------------------------------------------------------------------------


async def set_calendar(
    conn: Conn,
    store: EventStore,
    calendar_id: str,
    meta: Metadata,
    *,
    name: str,
    timezone: str,
    hours: list[WorkingHours],
    holidays: list[Holiday],
    expected: int | None,
) -> tuple[Calendar, bool]:
    repo = Repository(store, Calendar)
    try:
        calendar = await repo.load(calendar_id, conn=conn)
    except NotFound:
        calendar = Calendar(calendar_id)
    created = not calendar.exists
    check_version(expected, calendar.version)
    try:
        calendar.set(name=name, timezone=timezone, hours=hours, holidays=holidays)
    except CalendarError as exc:
        raise exc.as_input_error() from None
    if calendar.pending:
        await repo.save(conn, calendar, meta)
        await sla_view.upsert_calendar(conn, calendar, _now())
    return calendar, created


async def set_policy(
    conn: Conn,
    store: EventStore,
    priority: str,
    meta: Metadata,
    *,
    calendar_id: str,
    first_response_minutes: int,
    resolution_minutes: int,
    at_risk_percent: int,
    expected: int | None,
) -> tuple[SlaPolicy, bool]:
    if first_response_minutes > resolution_minutes:
        raise InvalidInput(
            "first_response_minutes",
            f"{first_response_minutes} is longer than resolution_minutes"
            f" ({resolution_minutes}): the first response cannot be due after the resolution",
        )
    if not await sla_view.calendar_exists(conn, calendar_id):
        raise InvalidInput("calendar_id", f"calendar {calendar_id} does not exist")
    repo = Repository(store, SlaPolicy)
    try:
        policy = await repo.load(priority, conn=conn)
    except NotFound:
        policy = SlaPolicy(priority)
    created = not policy.exists
    check_version(expected, policy.version)
    policy.set(
        calendar_id=calendar_id,
        first_response_minutes=first_response_minutes,
        resolution_minutes=resolution_minutes,
        at_risk_percent=at_risk_percent,
    )
    if policy.pending:
        await repo.save(conn, policy, meta)
        assert policy.policy is not None
        await sla_view.upsert_policy(conn, policy.policy, policy.version, _now())
    return policy, created


async def escalation_rules(conn: Conn, store: EventStore) -> EscalationRules:
    try:
        return await Repository(store, EscalationRules).load(RULES_ID, conn=conn)
    except NotFound:
        return EscalationRules(RULES_ID)


async def set_escalation_rules(
    conn: Conn,
    store: EventStore,
    rules: list[EscalationRule],
    meta: Metadata,
    expected: int | None,
) -> EscalationRules:
    for i, rule in enumerate(rules):
        if rule.kind == "no_public_answer" and rule.after_days is None:
            raise InvalidInput(f"rules.{i}.after_days", "a no_public_answer rule needs after_days")
        if rule.kind == "sla_breach" and rule.after_days is not None:
            raise InvalidInput(f"rules.{i}.after_days", "only no_public_answer rules wait days")
        if not rule.notify_emails and not rule.notify_account_owner:
            raise InvalidInput(
                f"rules.{i}.notify_emails", "name someone to notify (or notify_account_owner)"
            )
    current = await escalation_rules(conn, store)
    check_version(expected, current.version)
    current.replace(rules)
    if current.pending:
        await Repository(store, EscalationRules).save(conn, current, meta)
    return current


# --- the SLA evaluation job --------------------------------------------------------------------


def _facts(t: TicketRow) -> TicketFacts:
    return TicketFacts(
        ticket_id=t.ticket_id,
        status=t.status,
        priority=t.priority,
        customer_tier=t.customer_tier,
        created_at=t.created_at,
        last_customer_message_at=t.last_customer_message_at,
        last_agent_reply_at=t.last_agent_reply_at,
    )


def _status(m: Measurement, at_risk_at: datetime | None, breached_at: datetime | None) -> str:
    if breached_at is not None:
        return "breached"
    if m.stopped_at is not None:
        return "met"
    if m.paused:
        return "paused"
    return "at_risk" if at_risk_at is not None else "running"


async def evaluate_slas(pool: asyncpg.Pool, store: EventStore, now: datetime) -> int:
    """Measure every open ticket's SLA targets; return how many signals were recorded."""
    async with pool.acquire() as conn:
        policies = await sla_view.policies(conn)
        tickets = await sla_view.tickets_to_evaluate(conn, list(policies))
        if not tickets:
            return 0
        cals = await sla_view.calendars(conn)
        rules = (await escalation_rules(conn, store)).rules
    recorded = 0
    for t in tickets:
        async with pool.acquire() as conn, conn.transaction():
            recorded += await _evaluate_ticket(conn, store, t.ticket_id, policies, cals, rules, now)
    return recorded


async def evaluate_ticket(conn: Conn, store: EventStore, ticket_id: str, now: datetime) -> int:
    """Measure one ticket's SLA targets now, in the caller's transaction: what a ticket command
    that starts, stops, pauses or changes a clock (opening, a priority change, a status change,
    the first public reply) runs after writing the ``tickets`` row and status spans, so that
    ``sla_states`` (due times, status) is there with the command, not a scheduler tick later.

    The same evaluation as the ``sla.evaluate`` job's, under the same per-ticket lock: it records
    the same ``at_risk_flagged`` / ``breached`` events (the ``sla-<ticket>`` stream keeps each at
    most once per target and episode, whichever path sees it first) and escalates a breach the
    same way. Returns how many signals were recorded (0 without a policy for the priority)."""
    # The lock first, also without a policy: a ``no_public_answer`` escalation re-reads the
    # ticket under it, so it waits for this command (a public reply, say) to commit.
    await lock_ticket(conn, ticket_id)
    policies = await sla_view.policies(conn)
    if not policies:
        return 0
    rules = (await escalation_rules(conn, store)).rules
    return await _evaluate_ticket(conn, store, ticket_id, policies, None, rules, now)


async def lock_ticket(conn: Conn, ticket_id: str) -> None:
    """The per-ticket SLA lock (``sla:<ticket id>``, held until the transaction ends; taking it
    again in the same transaction is free): SLA evaluations and escalation decisions of one
    ticket run one at a time, each reading the ticket once it holds the lock."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"sla:{ticket_id}")


async def _evaluate_ticket(
    conn: Conn,
    store: EventStore,
    ticket_id: str,
    policies: dict[str, SlaPolicySet],
    calendars: dict[str, BusinessCalendar] | None,
    rules: list[EscalationRule],
    now: datetime,
) -> int:
    await lock_ticket(conn, ticket_id)
    # The ticket as it is now that the lock is held (not as when a tick listed it): a ticket
    # command that changed it meanwhile has committed, with its own evaluation.
    t = await sla_view.ticket(conn, ticket_id)
    if t is None or t.priority not in policies:
        return 0
    # Time never runs backwards for a ticket. ``now`` was read before the lock was taken: the
    # job's once per tick (a long tick reaches a ticket minutes later), a command's when its
    # request came in. An evaluation with a later time may have committed meanwhile (typically a
    # ticket command during a tick). Measured at our earlier time, this evaluation would
    # overwrite that fresher state with an older picture (a pause or stop not yet in force,
    # less elapsed time, the deadline projected from a past instant) and would decide at-risk
    # and breach on a time already superseded. So it measures at the later of the two: that
    # time has been reached, and the ticket as read under the lock holds every change up to
    # it. Skipping the ticket instead would be wrong for a command, whose change (a pause, a
    # stop, a new priority) must reach the state, and would leave a policy or calendar change
    # for the job to apply a tick later. ``sla_view.upsert_state`` also refuses to go back in
    # time, should anything write without this.
    states = await sla_view.states_of(conn, t.ticket_id)
    now = max([now, *(s["evaluated_at"] for s in states.values())])
    policy = policies[t.priority]
    if calendars is None:
        calendars = await sla_view.calendars(conn, only=policy.calendar_id)
    calendar = calendars.get(policy.calendar_id) or BusinessCalendar.always()
    timeline = (await sla_view.timelines(conn, [t]))[t.ticket_id]
    measurements = measure(timeline, calendar, now)
    repo = Repository(store, TicketSla)
    sla: TicketSla | None = None
    breaches: list[Measurement] = []
    for m in measurements:
        prev = states.get((m.target, m.episode))
        at_risk_at = prev["at_risk_at"] if prev else None
        breached_at = prev["breached_at"] if prev else None
        if prev and prev["stopped_at"] is not None and prev["status"] in ("met", "breached"):
            continue  # final
        target = target_minutes(policy, m.target)
        fired = Fired(at_risk=at_risk_at is not None, breached=breached_at is not None)
        due = due_at(m, target, calendar, now)
        for signal in signals(m, target, policy.at_risk_percent, fired):
            if sla is None:
                try:
                    sla = await repo.load(t.ticket_id, conn=conn)
                except NotFound:
                    sla = TicketSla(t.ticket_id)
                sla.subject = t.customer_id
            event: SlaAtRiskFlagged | SlaBreached
            if signal == "breached":
                event = SlaBreached(
                    ticket_id=t.ticket_id,
                    target=m.target,
                    episode=m.episode,
                    priority=t.priority,
                    elapsed_minutes=round(m.elapsed_minutes, 2),
                    target_minutes=target,
                    started_at=m.started_at,
                    queue_id=t.queue_id,
                    assignee_id=t.assignee_id,
                    customer_tier=t.customer_tier,
                )
                breached_at = now
            else:
                event = SlaAtRiskFlagged(
                    ticket_id=t.ticket_id,
                    target=m.target,
                    episode=m.episode,
                    priority=t.priority,
                    elapsed_minutes=round(m.elapsed_minutes, 2),
                    target_minutes=target,
                    at_risk_percent=policy.at_risk_percent,
                    started_at=m.started_at,
                    due_at=due,
                    queue_id=t.queue_id,
                    assignee_id=t.assignee_id,
                )
                at_risk_at = now
            if sla.flag(event) and signal == "breached":
                breaches.append(m)
        await sla_view.upsert_state(
            conn,
            {
                "ticket_id": t.ticket_id,
                "target": m.target,
                "episode": m.episode,
                "priority": t.priority,
                "status": _status(m, at_risk_at, breached_at),
                "started_at": m.started_at,
                "stopped_at": m.stopped_at,
                "elapsed_minutes": m.elapsed_minutes,
                "target_minutes": target,
                "at_risk_percent": policy.at_risk_percent,
                "due_at": due,
                "at_risk_at": at_risk_at,
                "breached_at": breached_at,
                "evaluated_at": now,
            },
        )
    recorded = 0
    if sla is not None and sla.pending:
        recorded = len(sla.pending)
        await repo.save(conn, sla, SYSTEM)
    for m in breaches:
        for rule in rules:
            if breach_escalates(rule, _facts(t), m.target):
                await _escalate(
                    conn,
                    store,
                    t,
                    rule,
                    episode=f"{m.target}#{m.episode}",
                    reason=f"SLA {m.target.replace('_', ' ')} target breached"
                    + (f" (episode {m.episode})" if m.episode > 1 else "")
                    + f": {m.elapsed_minutes:.0f} of {target_minutes(policy, m.target)}"
                    " business minutes",
                    target=m.target,
                    waiting_since=None,
                    now=now,
                )
    return recorded


# --- escalations ------------------------------------------------------------------------------


async def _escalate(
    conn: Conn,
    store: EventStore,
    t: TicketRow,
    rule: EscalationRule,
    *,
    episode: str,
    reason: str,
    target: Any,
    waiting_since: datetime | None,
    now: datetime,
) -> bool:
    claimed = await sla_view.claim_escalation(
        conn,
        escalation_id=str(uuid.uuid4()),
        ticket_id=t.ticket_id,
        rule_id=rule.rule_id,
        episode=episode,
        kind=rule.kind,
        customer_id=t.customer_id,
        reason=reason,
        recipients=list(rule.notify_emails),
        now=now,
        max_attempts=MAX_MAIL_ATTEMPTS,
    )
    if not claimed:
        return False
    repo = Repository(store, TicketEscalations)
    try:
        escalations = await repo.load(t.ticket_id, conn=conn)
    except NotFound:
        escalations = TicketEscalations(t.ticket_id)
    escalations.subject = t.customer_id
    escalations.escalate(
        TicketEscalated(
            ticket_id=t.ticket_id,
            customer_id=t.customer_id,
            rule_id=rule.rule_id,
            rule_kind=rule.kind,
            episode=episode,
            reason=reason,
            customer_tier=t.customer_tier,
            priority=t.priority,
            queue_id=t.queue_id,
            assignee_id=t.assignee_id,
            target=target,
            waiting_since=waiting_since,
            notify_account_owner=rule.notify_account_owner,
            notified_emails=list(rule.notify_emails),
        )
    )
    if escalations.pending:
        await repo.save(conn, escalations, SYSTEM)
    return True


async def escalate_unanswered(pool: asyncpg.Pool, store: EventStore, now: datetime) -> int:
    """Apply the ``no_public_answer`` rules to open tickets; return how many escalated.

    The list of open tickets is only a list of candidates: it is read once, outside any lock,
    and an agent may answer a candidate publicly before its turn comes. Each candidate is
    decided from the ticket as it is once the per-ticket SLA lock is held, in the transaction
    that records the escalation; a public reply takes that lock too (``evaluate_ticket`` in
    the reply's transaction), so the reply is either committed and seen here, or waits and
    comes after the escalation."""
    async with pool.acquire() as conn:
        rules = [
            r for r in (await escalation_rules(conn, store)).rules if r.kind == "no_public_answer"
        ]
        if not rules:
            return 0
        snapshot = await sla_view.open_tickets(conn)
    candidates = [
        t.ticket_id
        for t in snapshot
        if any(unanswered_episode(rule, _facts(t), now) is not None for rule in rules)
    ]
    escalated = 0
    for ticket_id in candidates:
        async with pool.acquire() as conn, conn.transaction():
            await lock_ticket(conn, ticket_id)
            t = await sla_view.ticket(conn, ticket_id)
            if t is None:
                continue
            for rule in rules:
                since = unanswered_episode(rule, _facts(t), now)
                if since is None:
                    continue
                days = (now - since).total_seconds() / 86400
                if await _escalate(
                    conn,
                    store,
                    t,
                    rule,
                    episode=since.astimezone(UTC).isoformat(),
                    reason=f"no public answer to the customer for {days:.1f} days"
                    f" (rule: {rule.after_days:g} days)",
                    target=None,
                    waiting_since=since,
                    now=now,
                ):
                    escalated += 1
    return escalated


async def send_escalation_mail(pool: asyncpg.Pool, mailer: Mailer, now: datetime) -> int:
    """E-mail pending escalations to their rule's recipients; return how many were sent."""
    async with pool.acquire() as conn:
        pending = await sla_view.pending_mail(conn, MAX_MAIL_ATTEMPTS)
    sent = 0
    for e in pending:
        subject = " ".join(str(e.get("subject") or e["ticket_id"]).split())  # one header line
        text = (
            f"Ticket {e['ticket_id']} was escalated by rule {e['rule_id']}.\n\n"
            f"Why: {e['reason']}\n"
            f"Subject: {subject}\n"
            f"Priority: {e.get('priority') or '-'}\n"
            f"Queue: {e.get('queue_id') or '-'}\n"
            f"Assignee: {e.get('assignee_id') or 'nobody'}\n\n"
            f"Ticket: /tickets/{e['ticket_id']}\n"
        )
        try:
            await mailer.send(
                OutgoingMail(
                    to=list(e["recipients"]),
                    subject=f"Escalation: ticket {e['ticket_id']} - {subject}"[:200],
                    text=text,
                )
            )
        except (MailError, ValueError) as exc:  # ValueError: an address the message refuses
            async with pool.acquire() as conn:
                await sla_view.mark_mail(conn, e["escalation_id"], None, str(exc)[:500])
            continue
        async with pool.acquire() as conn:
            await sla_view.mark_mail(conn, e["escalation_id"], now, None)
        sent += 1
    return sent


def sla_jobs(ctx: ServiceContext) -> dict[str, Job]:
    """The SLA and escalation jobs, in the order a tick runs them."""
    mailer = Mailer(ctx.settings.smtp_url, ctx.settings.mail_from)

    async def evaluate(pool: asyncpg.Pool, now: datetime) -> int:
        return await evaluate_slas(pool, ctx.store, now)

    async def escalate(pool: asyncpg.Pool, now: datetime) -> int:
        return await escalate_unanswered(pool, ctx.store, now)

    async def mail(pool: asyncpg.Pool, now: datetime) -> int:
        return await send_escalation_mail(pool, mailer, now)

    return {"sla.evaluate": evaluate, "sla.escalate": escalate, "sla.escalation_mail": mail}
