"""The registry: explicit type names, versions, and chained upcasters."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from crm_events import (
    EventPayload,
    EventRegistry,
    SchemaValidationError,
    UnknownEventType,
    event_type,
    registry,
    upcaster,
)
from crm_events.schemas.sales import LeadCaptured


def small_registry() -> EventRegistry:
    reg = EventRegistry()

    @event_type("crm.test.thing.made", 1, into=reg)
    class MadeV1(EventPayload):
        name: str

    @event_type("crm.test.thing.made", 2, into=reg)
    class MadeV2(EventPayload):
        first: str
        last: str

    @event_type("crm.test.thing.made", 3, public=True, into=reg)
    class MadeV3(EventPayload):
        first: str
        last: str
        tags: list[str]

    @upcaster("crm.test.thing.made", 1, into=reg)
    def split(data: dict[str, Any]) -> dict[str, Any]:
        first, _, last = data.pop("name").partition(" ")
        return {**data, "first": first, "last": last}

    @upcaster("crm.test.thing.made", 2, into=reg)
    def tags(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "tags": []}

    return reg


def test_old_versions_are_upcast_through_the_chain() -> None:
    reg = small_registry()
    payload = reg.decode("crm.test.thing.made", 1, {"name": "Ada Lovelace"})
    assert payload.model_dump() == {"first": "Ada", "last": "Lovelace", "tags": []}
    assert reg.current_version("crm.test.thing.made") == 3
    assert reg.is_public("crm.test.thing.made")


def test_newer_than_known_and_unknown_types_are_refused() -> None:
    reg = small_registry()
    with pytest.raises(UnknownEventType, match="newer"):
        reg.decode("crm.test.thing.made", 4, {})
    with pytest.raises(UnknownEventType):
        reg.decode("crm.test.thing.lost", 1, {})


def test_a_missing_upcaster_is_reported() -> None:
    reg = EventRegistry()

    @event_type("crm.test.a.b", 1, into=reg)
    class A1(EventPayload):
        x: int

    @event_type("crm.test.a.b", 2, into=reg)
    class A2(EventPayload):
        y: int

    with pytest.raises(UnknownEventType, match="no upcaster"):
        reg.decode("crm.test.a.b", 1, {"x": 1})


def test_schema_errors_name_the_field() -> None:
    with pytest.raises(SchemaValidationError, match="score"):
        registry.decode("crm.sales.lead.qualified", 1, {"lead_id": "l", "score": 101})
    with pytest.raises(SchemaValidationError, match="surprise"):
        registry.decode(
            "crm.sales.lead.disqualified", 1, {"lead_id": "l", "reason": "r", "surprise": 1}
        )


def test_payloads_are_frozen_and_forbid_unknown_fields() -> None:
    lead = LeadCaptured(lead_id="l", customer_id="c", name="N", source="manual")
    with pytest.raises(ValidationError):
        lead.name = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        LeadCaptured(lead_id="l", customer_id="c", name="N", source="manual", extra=1)  # type: ignore[call-arg]
    assert registry.type_of(lead) == ("crm.sales.lead.captured", 3)


def test_one_name_one_model_per_version() -> None:
    reg = small_registry()

    class Other(EventPayload):
        name: str

    with pytest.raises(ValueError, match="already registered"):
        reg.register("crm.test.thing.made", 1, Other)


def test_every_registered_type_follows_the_naming_convention() -> None:
    import re

    pattern = re.compile(r"^crm\.[a-z-]+\.[a-z_]+\.[a-z_]+$")
    for spec in registry.specs():
        assert pattern.match(spec.type), spec.type
        assert spec.summary, f"{spec.type} needs a docstring: it is the timeline summary"
