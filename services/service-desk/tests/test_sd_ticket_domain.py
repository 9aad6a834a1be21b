"""The Ticket aggregate: lifecycle, conversation, returns, merge, rating; hypothesis over
sequences of commands (never an illegal state or move; the history rebuilds the same ticket)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crm_events import registry
from crm_events.schemas.service import (
    ProductReturn,
    TicketAssigned,
    TicketClosed,
    TicketMergedInto,
    TicketReopened,
    TicketResolved,
    TicketStatusChanged,
)
from crm_runtime.errors import DomainError
from crm_service_desk.domain.ticket import (
    MOVES,
    OPEN,
    Details,
    Ticket,
    find_token,
    new_ticket_id,
    token,
)

STATUSES = {"new", "assigned", "in_progress", "waiting_on_customer", "resolved", "closed", "merged"}
# The lifecycle of issue 5, written out independently of the domain's table.
EXPECTED_EDGES = {
    ("new", "assigned"),
    ("new", "in_progress"),
    ("new", "waiting_on_customer"),
    ("new", "resolved"),
    ("new", "merged"),
    ("assigned", "new"),
    ("assigned", "assigned"),
    ("assigned", "in_progress"),
    ("assigned", "waiting_on_customer"),
    ("assigned", "resolved"),
    ("assigned", "merged"),
    ("in_progress", "new"),
    ("in_progress", "assigned"),
    ("in_progress", "waiting_on_customer"),
    ("in_progress", "resolved"),
    ("in_progress", "merged"),
    ("waiting_on_customer", "in_progress"),
    ("waiting_on_customer", "resolved"),
    ("waiting_on_customer", "merged"),
    ("resolved", "new"),
    ("resolved", "assigned"),
    ("resolved", "closed"),
}


def opened(**kw: Any) -> Ticket:
    args: dict[str, Any] = {
        "kind": "incident",
        "subject": "Checkout fails",
        "channel": "email",
        "customer_email": "Ada@Example.com",
    }
    args.update(kw)
    return Ticket.open(new_ticket_id(), "cust-1", **args)


def saved(t: Ticket) -> Ticket:
    """Pretend the pending events were stored (as the repository does)."""
    t.version += len(t.pending)
    t.pending.clear()
    return t


def test_token_round_trip() -> None:
    tid = new_ticket_id()
    assert find_token(f"Re: Help {token(tid)} please") == tid
    assert find_token("Re: [#T-abc]") is None
    assert find_token("") is None


def test_open_lifecycle_and_conversation() -> None:
    t = opened()
    assert t.subject == "cust-1" and t.title == "Checkout fails" and t.status == "new"
    assert t.customer_email == "ada@example.com"
    assert t.assign("billing", "ann", rule_id="r1")
    assert t.status == "assigned"
    assert not t.assign("billing", "ann")  # nothing changes: no event
    t.reply("c1", "ann", "Looking into it", "<m1@x>")
    assert t.status == "in_progress" and t.responded
    first = t.pending[-2]
    assert first.first_response is True  # type: ignore[attr-defined]
    t.reply("c2", "ann", "Send the order number?", "<m2@x>", wait_on_customer=True)
    assert t.status == "waiting_on_customer"
    assert t.pending[-2].first_response is False  # type: ignore[attr-defined]
    t.customer_reply("c3", "SO-1", "email", message_id="<in@y>")
    assert t.status == "in_progress"
    t.add_note("n1", "ann", "courier damage")
    t.resolve("replaced")
    assert t.status == "resolved"
    t.customer_reply("c4", "still broken", "email")
    assert t.status == "assigned"  # reopened to its agent
    assert isinstance(t.pending[-1], TicketReopened)
    t.resolve()
    t.rate(4, "ok")
    with pytest.raises(DomainError, match="rated already"):
        t.rate(5)
    t.close()
    with pytest.raises(DomainError, match="closed"):
        t.reply("c5", "ann", "hi", "<m3@x>")
    with pytest.raises(DomainError, match="closed"):
        t.customer_reply("c6", "hello?", "link")
    t.add_note("n2", "ann", "notes are fine on a closed ticket")


def test_illegal_moves_record_nothing() -> None:
    t = saved(opened())
    for bad in (t.close, t.reopen):
        with pytest.raises(DomainError):
            bad()
    with pytest.raises(DomainError, match="rated once it is resolved"):
        t.rate(5)
    t.start()
    with pytest.raises(DomainError, match="already"):
        t.start()
    assert [type(e).__name__ for e in t.pending] == ["TicketStatusChanged"]


def test_unassigning_goes_back_to_new() -> None:
    t = opened()
    t.assign("q", "ann")
    t.start()
    t.assign("q", None)
    assert t.status == "new" and t.assignee_id is None
    t.assign("q", "bob")
    assert t.status == "assigned"


def test_product_return_moves_in_order_and_refund_once() -> None:
    with pytest.raises(DomainError, match="product return needs"):
        opened(kind="product_return")
    with pytest.raises(DomainError, match="only a product_return"):
        opened(product_return=ProductReturn(order_ref="o", product_ref="p", reason="r"))
    t = opened(
        kind="product_return",
        product_return=ProductReturn(order_ref="SO-1", product_ref="BLX", reason="broken"),
    )
    assert t.return_status == "requested"
    with pytest.raises(DomainError, match="can move to approved"):
        t.move_return("refunded")
    t.move_return("approved")
    t.move_return("received")
    t.move_return("refunded")
    with pytest.raises(DomainError, match="final"):
        t.move_return("refunded")
    with pytest.raises(DomainError, match="final"):
        t.move_return("replaced")
    with pytest.raises(DomainError, match="only a product_return"):
        opened().move_return("approved")


def test_merge_a_duplicate() -> None:
    a, b = opened(), opened()
    b.merge_into(a)
    assert b.status == "merged" and b.merged_into == a.id and a.duplicates == [b.id]
    with pytest.raises(DomainError, match="merged into"):
        b.reply("c", "ann", "x", "<m@x>")
    with pytest.raises(DomainError, match="merged"):
        b.merge_into(a)
    with pytest.raises(DomainError, match="itself"):
        a.merge_into(a)
    c = opened()
    a.resolve()
    a.close()
    with pytest.raises(DomainError, match="merge into an open one"):
        c.merge_into(a)


def test_update_names_what_changed() -> None:
    t = opened()
    d = t.details()
    assert t.update(d) == []
    changed = t.update(
        Details(d.subject + "!", "urgent", d.product, "de", d.region, d.customer_tier)
    )
    assert changed == ["subject", "priority", "language"]
    assert (t.title, t.priority, t.language) == ("Checkout fails!", "urgent", "de")
    assert t.subject == "cust-1"  # the event subject stays the customer


def test_reply_needs_an_address() -> None:
    t = Ticket.open(new_ticket_id(), "c", kind="query", subject="s", channel="api")
    with pytest.raises(DomainError, match="no customer e-mail"):
        t.reply("c", "ann", "hi", "<m@x>")


# --- property: any sequence of commands ---------------------------------------------------------

COMMANDS = st.lists(
    st.one_of(
        st.tuples(
            st.just("assign"),
            st.sampled_from([None, "q1", "q2"]),
            st.sampled_from([None, "ann", "bob"]),
        ),
        st.tuples(st.just("start")),
        st.tuples(st.just("wait")),
        st.tuples(st.just("reply"), st.booleans()),
        st.tuples(st.just("note")),
        st.tuples(st.just("customer_reply")),
        st.tuples(st.just("resolve")),
        st.tuples(st.just("reopen")),
        st.tuples(st.just("close")),
        st.tuples(st.just("merge")),
        st.tuples(st.just("rate"), st.integers(1, 5)),
        st.tuples(st.just("update"), st.sampled_from(["low", "normal", "high", "urgent"])),
    ),
    max_size=40,
)


def _run(t: Ticket, other: Ticket, cmd: tuple[Any, ...], n: int) -> None:
    name = cmd[0]
    if name == "assign":
        t.assign(cmd[1], cmd[2])
    elif name == "start":
        t.start()
    elif name == "wait":
        t.wait_on_customer()
    elif name == "reply":
        t.reply(f"c{n}", "ann", "text", f"<m{n}@x>", wait_on_customer=cmd[1])
    elif name == "note":
        t.add_note(f"n{n}", "ann", "note")
    elif name == "customer_reply":
        t.customer_reply(f"c{n}", "hello", "email")
    elif name == "resolve":
        t.resolve()
    elif name == "reopen":
        t.reopen()
    elif name == "close":
        t.close()
    elif name == "merge":
        t.merge_into(other)
    elif name == "rate":
        t.rate(cmd[1])
    elif name == "update":
        d = t.details()
        t.update(Details(d.subject, cmd[1], d.product, d.language, d.region, d.customer_tier))


def _status_moves(events: list[Any]) -> list[tuple[str, str]]:
    moves = []
    for e in events:
        if isinstance(e, TicketAssigned | TicketStatusChanged) and e.from_status != e.to_status:
            moves.append((e.from_status, e.to_status))
        elif isinstance(e, TicketResolved):
            moves.append((e.from_status, "resolved"))
        elif isinstance(e, TicketMergedInto):
            moves.append((e.from_status, "merged"))
    return moves


@settings(max_examples=300, deadline=None)
@given(COMMANDS)
def test_any_command_sequence_keeps_the_lifecycle_legal(commands: list[tuple[Any, ...]]) -> None:
    ticket = opened()
    other = opened()
    all_events: list[Any] = list(ticket.pending)
    ratings = 0
    for n, cmd in enumerate(commands):
        before = ticket.status
        pending_before = len(ticket.pending)
        try:
            _run(ticket, other, cmd, n)
        except DomainError:
            assert len(ticket.pending) == pending_before, "a refused command recorded events"
            assert ticket.status == before
            continue
        new = ticket.pending[pending_before:]
        all_events.extend(new)
        assert ticket.status in STATUSES
        if before in ("closed", "merged"):
            assert ticket.status == before  # terminal
            allowed = {"TicketNoteAdded", "TicketRated"} if before == "closed" else set()
            assert {type(e).__name__ for e in new} <= allowed
        prev = before
        for frm, to in _status_moves(new):
            assert frm == prev
            assert (frm, to) in EXPECTED_EDGES and to in MOVES[frm]
            prev = to
        for e in new:
            if isinstance(e, TicketReopened | TicketClosed):
                assert before == "resolved"
        ratings += sum(type(e).__name__ == "TicketRated" for e in new)
    assert ratings <= 1
    # history rebuilds the same ticket (through the JSON the store keeps)
    stored = [
        (registry.decode(*registry.type_of(e), e.model_dump(mode="json")), i + 1)
        for i, e in enumerate(all_events)
    ]
    rebuilt = Ticket.rehydrate(ticket.id, stored)
    live = {k: v for k, v in vars(ticket).items() if k not in ("pending", "version")}
    again = {k: v for k, v in vars(rebuilt).items() if k not in ("pending", "version")}
    assert again == live
    assert (ticket.status in OPEN) == (ticket.status not in ("resolved", "closed", "merged"))
