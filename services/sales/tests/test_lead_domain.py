"""Lead aggregate: given events, when a command, then events or a domain error."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crm_events.schemas.sales import LeadCaptured, LeadDisqualified, LeadQualified
from crm_runtime.errors import DomainError
from crm_sales.domain.lead import Lead


def captured_lead() -> Lead:
    lead = Lead.capture("l1", "c1", name="Ada", source="manual", email=" Ada@Example.COM ")
    return Lead.rehydrate("l1", [(lead.pending[0], 1)])


def test_capture_records_one_event_and_normalises_email() -> None:
    lead = Lead.capture("l1", "c1", name="Ada", source="web_form", email=" Ada@Example.COM ")
    assert len(lead.pending) == 1
    event = lead.pending[0]
    assert isinstance(event, LeadCaptured)
    assert event.email == "ada@example.com"
    assert lead.subject == "c1"


def test_qualify_then_disqualify() -> None:
    lead = captured_lead()
    lead.qualify(70, "budget confirmed")
    lead.disqualify("went with a competitor")
    assert [type(e) for e in lead.pending] == [LeadQualified, LeadDisqualified]
    assert lead.status == "disqualified"


def test_disqualified_lead_cannot_be_qualified_or_disqualified_again() -> None:
    lead = captured_lead()
    lead.disqualify("spam")
    lead.pending.clear()
    with pytest.raises(DomainError):
        lead.qualify(50)
    with pytest.raises(DomainError):
        lead.disqualify("again")
    assert lead.pending == []


@given(st.lists(st.sampled_from(["qualify", "disqualify"]), max_size=12))
def test_no_command_sequence_leaves_a_disqualified_lead(commands: list[str]) -> None:
    """Once disqualified, a lead stays disqualified; rehydrating gives the same state."""
    lead = captured_lead()
    was_disqualified = False
    for cmd in commands:
        try:
            lead.qualify(10) if cmd == "qualify" else lead.disqualify("r")
        except DomainError:
            assert was_disqualified
        was_disqualified = was_disqualified or lead.status == "disqualified"
        assert (lead.status == "disqualified") == was_disqualified
    replayed = Lead.rehydrate("l1", [(e, i + 2) for i, e in enumerate(lead.pending)])
    if lead.pending:
        assert replayed.status == lead.status
