"""Aggregates without I/O: given events, when a command, then events or an error."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crm_events.schemas.sales import (
    AccountDetails,
    ContactDetails,
    ContactMerged,
    ContactMergedInto,
    ContactMergeUndone,
    DealLost,
    DealStageChanged,
    DealWon,
)
from crm_runtime.errors import DomainError
from crm_sales.domain.account import Account, normalise_domain
from crm_sales.domain.contact import Contact
from crm_sales.domain.deal import Deal, Terms
from crm_sales.domain.lead import Lead
from crm_sales.domain.pipeline import DEFAULT_STAGES, Pipeline


def pipeline() -> Pipeline:
    p = Pipeline.define("default", "Sales", DEFAULT_STAGES)
    p.pending.clear()
    return p


def opened_events() -> list[Any]:
    d = Deal.open(
        "d1", "c1", pipeline(), Terms("x", 100, "EUR", "1", None, []), base_currency="EUR"
    )
    return list(d.pending)


def deal() -> Deal:
    return Deal.rehydrate("d1", [(e, 1) for e in opened_events()])


def contact(cid: str, **details: object) -> Contact:
    c = Contact.create(
        cid, f"cust-{cid}", ContactDetails.model_validate({"last_name": cid, **details})
    )
    c.pending.clear()
    return c


def test_moving_to_won_records_the_stage_change_and_the_win() -> None:
    d = deal()
    d.move(pipeline(), "won", "fit")
    assert [type(e) for e in d.pending] == [DealStageChanged, DealWon]
    assert d.status == "won" and d.probability == 100


def test_lost_needs_a_reason_and_closes() -> None:
    d = deal()
    with pytest.raises(DomainError, match="reason"):
        d.move(pipeline(), "lost")
    assert d.pending == []
    d.move(pipeline(), "lost", "budget")
    assert isinstance(d.pending[-1], DealLost)
    with pytest.raises(DomainError, match="closed"):
        d.move(pipeline(), "demo")


stage_keys = st.sampled_from([s.key for s in DEFAULT_STAGES] + ["nowhere"])


@settings(max_examples=200, deadline=None)
@given(moves=st.lists(st.tuples(stage_keys, st.booleans()), max_size=12))
def test_any_sequence_of_moves_keeps_the_deal_consistent(moves: list[tuple[str, bool]]) -> None:
    p = pipeline()
    d = deal()
    closes = 0
    for key, with_reason in moves:
        before = len(d.pending)
        try:
            d.move(p, key, "why" if with_reason else None)
        except DomainError:
            assert len(d.pending) == before  # a refused command records nothing
            continue
        closes += sum(isinstance(e, (DealWon, DealLost)) for e in d.pending[before:])
    assert closes <= 1
    assert d.probability == p.stage(d.stage).probability
    assert (d.status != "open") == (closes == 1)
    # rebuilding from the recorded events gives the same state
    history = opened_events() + list(d.pending)
    replay = Deal.rehydrate("d1", [(e, i + 1) for i, e in enumerate(history)])
    assert (replay.stage, replay.status, replay.probability) == (d.stage, d.status, d.probability)


def test_merge_then_undo_gives_both_back() -> None:
    a = contact("a", emails=["a@x.org"], tags=["vip"])
    b = contact("b", emails=["b@x.org"], title="CTO", tags=["vip", "new"], custom_fields={"k": 1})
    a_before, b_before = dict(a.details), dict(b.details)
    a.merge(b, "m1")
    assert isinstance(a.pending[0], ContactMerged) and isinstance(b.pending[0], ContactMergedInto)
    assert a.details["emails"] == ["a@x.org", "b@x.org"] and a.details["title"] == "CTO"
    with pytest.raises(DomainError, match="merged into a"):
        b.update(ContactDetails(title="x"), ["title"])
    a.undo_merge(b, "m1")
    assert isinstance(b.pending[-1], ContactMergeUndone)
    assert a.details == a_before and b.details == b_before and b.merged_into is None
    with pytest.raises(DomainError):
        a.undo_merge(b, "m1")


email = st.sampled_from(["a@x.org", "b@x.org", "c@x.org", "d@x.org"])
tag = st.sampled_from(["vip", "new", "churn"])


@settings(max_examples=200, deadline=None)
@given(
    a_emails=st.lists(email, max_size=3, unique=True),
    b_emails=st.lists(email, max_size=3, unique=True),
    a_tags=st.lists(tag, max_size=3, unique=True),
    b_tags=st.lists(tag, max_size=3, unique=True),
    a_title=st.none() | st.just("CEO"),
    b_title=st.none() | st.just("CTO"),
)
def test_undo_after_merge_is_exact(
    a_emails: list[str],
    b_emails: list[str],
    a_tags: list[str],
    b_tags: list[str],
    a_title: str | None,
    b_title: str | None,
) -> None:
    a = contact("a", emails=a_emails, tags=a_tags, title=a_title)
    b = contact("b", emails=b_emails, tags=b_tags, title=b_title)
    before = (dict(a.details), dict(b.details))
    a.merge(b, "m")
    assert set(a.details["emails"]) == set(a_emails) | set(b_emails)
    a.undo_merge(b, "m")
    assert (a.details, b.details) == before


def test_changes_after_a_merge_survive_its_undo() -> None:
    a = contact("a")
    b = contact("b", title="CTO", region="EMEA")
    a.merge(b, "m")
    a.update(ContactDetails(title="CEO"), ["title"])  # overrides what was absorbed
    a.undo_merge(b, "m")
    assert a.details["title"] == "CEO"  # a change made since stays
    assert a.details["region"] is None  # what came only from b goes back


def test_account_domain_is_normalised() -> None:
    assert normalise_domain("https://www.Example.COM:443/about") == "example.com"
    a = Account.create("a", "c", AccountDetails(name="A", domain="WWW.A.io"))
    assert a.details["domain"] == "a.io" and a.tier == "standard"


def test_a_converted_lead_cannot_be_converted_or_qualified() -> None:
    lead = Lead.capture("l1", "c1", name="A B", source="manual")
    lead.convert(customer_id="c1", contact_id="k1", account_id=None, deal_id=None)
    with pytest.raises(DomainError, match="converted into contact k1"):
        lead.convert(customer_id="c1", contact_id="k2", account_id=None, deal_id=None)
    with pytest.raises(DomainError):
        lead.qualify(50)
    dq = Lead.capture("l2", "c2", name="A", source="manual")
    dq.disqualify("spam")
    with pytest.raises(DomainError, match="disqualified"):
        dq.ensure_convertible()


def test_pipeline_needs_one_won_one_lost_and_an_open_stage() -> None:
    with pytest.raises(DomainError, match="won stage"):
        Pipeline.define("p", "P", DEFAULT_STAGES[:5])
    p = pipeline()
    with pytest.raises(DomainError, match="open deals"):
        p.change_stages([s for s in DEFAULT_STAGES if s.key != "demo"], {"demo"})
