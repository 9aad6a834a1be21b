"""The CloudEvents envelope: our encoding round-trips, and the official SDK reads it."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from cloudevents.v1 import kafka as ce_kafka
from hypothesis import given
from hypothesis import strategies as st

from crm_events import CloudEvent, EnvelopeError, context_topic, public_topic

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4)
    ),
    max_leaves=12,
)


def make_event(**over: Any) -> CloudEvent:
    fields: dict[str, Any] = {
        "id": uuid.uuid4(),
        "source": "/crm/sales",
        "type": "crm.sales.lead.captured",
        "time": datetime(2026, 11, 25, 12, 0, tzinfo=UTC),
        "subject": str(uuid.uuid4()),
        "streamid": f"lead-{uuid.uuid4()}",
        "streamversion": 1,
        "schemaversion": 1,
        "correlationid": "req-1",
        "data": {"lead_id": "l1", "name": "Ada"},
    }
    fields.update(over)
    return CloudEvent(**fields)


@given(
    data=st.dictionaries(st.text(min_size=1, max_size=10), json_values, max_size=6),
    version=st.integers(1, 10**6),
    subject=st.one_of(st.none(), st.uuids().map(str)),
    correlation=st.one_of(st.none(), st.text(min_size=1, max_size=30).filter(str.isprintable)),
)
def test_binary_mode_round_trips(
    data: dict[str, Any], version: int, subject: str | None, correlation: str | None
) -> None:
    event = make_event(data=data, streamversion=version, subject=subject, correlationid=correlation)
    record = event.to_kafka()
    assert CloudEvent.from_kafka(record.key, record.value, record.headers) == event


def test_key_is_the_customer_id_and_headers_carry_no_payload() -> None:
    event = make_event(data={"lead_id": "l1", "name": "Ada Lovelace", "email": "ada@example.com"})
    record = event.to_kafka()
    assert record.key == event.subject.encode()  # type: ignore[union-attr]
    header_text = b" ".join(v for _, v in record.headers)
    assert b"Ada" not in header_text and b"example.com" not in header_text
    assert dict(record.headers)["ce_specversion"] == b"1.0"


def test_without_subject_the_stream_id_is_the_key() -> None:
    event = make_event(subject=None)
    assert event.to_kafka().key == event.streamid.encode()


def test_the_cloudevents_sdk_decodes_our_records() -> None:
    event = make_event()
    record = event.to_kafka()
    sdk = ce_kafka.from_binary(
        ce_kafka.KafkaMessage(headers=dict(record.headers), key=record.key, value=record.value)
    )
    assert sdk["specversion"] == "1.0"
    assert sdk["id"] == str(event.id)
    assert sdk["type"] == event.type
    assert sdk["source"] == event.source
    assert sdk["subject"] == event.subject
    assert sdk["streamid"] == event.streamid
    assert sdk["correlationid"] == "req-1"
    assert sdk.get_data() == event.data


def test_we_decode_what_the_cloudevents_sdk_writes() -> None:
    from cloudevents.v1.http import CloudEvent as SdkEvent

    attrs = {
        "id": str(uuid.uuid4()),
        "source": "/elsewhere",
        "type": "crm.sales.lead.qualified",
        "subject": "cust-1",
        "time": "2026-11-25T12:00:00+00:00",
        "streamid": "lead-1",
        "streamversion": "2",
        "schemaversion": "1",
        "datacontenttype": "application/json",
    }
    for to in (ce_kafka.to_binary, ce_kafka.to_structured):
        msg = to(SdkEvent(attrs, {"lead_id": "l1", "score": 70}))
        event = CloudEvent.from_kafka(
            msg.key if isinstance(msg.key, bytes) else None, msg.value, list(msg.headers.items())
        )
        assert event.type == "crm.sales.lead.qualified"
        assert event.streamversion == 2
        assert event.data == {"lead_id": "l1", "score": 70}


@pytest.mark.parametrize(
    ("value", "headers", "reason"),
    [
        (b"not json", [("ce_specversion", b"1.0")], "not JSON"),
        (b'{"a":1}', [], "no ce_specversion"),
        (b"[1,2]", [("ce_specversion", b"1.0")], "not a JSON object"),
        (None, [("ce_specversion", b"1.0")], "no value"),
        (b"{}", [("ce_specversion", b"1.0"), ("ce_id", b"x")], "invalid CloudEvent attributes"),
        (b"{}", [("ce_specversion", b"\xff")], "not UTF-8"),
    ],
)
def test_bad_records_are_rejected_with_the_reason(
    value: bytes | None, headers: list[tuple[str, bytes]], reason: str
) -> None:
    with pytest.raises(EnvelopeError, match=reason):
        CloudEvent.from_kafka(None, value, headers)


def test_type_names_follow_the_convention() -> None:
    with pytest.raises(ValueError, match="type"):
        make_event(type="LeadCaptured")
    with pytest.raises(ValueError, match="unexpected"):
        make_event(unexpected="x")


def test_topic_names() -> None:
    assert context_topic("sales") == "crm.sales.events"
    assert public_topic() == "crm.public.customer-events"


def test_structured_mode_is_accepted() -> None:
    event = make_event()
    body = json.loads(event.model_dump_json())
    decoded = CloudEvent.from_kafka(
        None,
        json.dumps(body).encode(),
        [("content-type", b"application/cloudevents+json; charset=utf-8")],
    )
    assert decoded == event


@given(
    micro=st.integers(0, 999_999),
    subject=st.one_of(st.none(), st.uuids().map(str)),
    causation=st.one_of(st.none(), st.just("cause-1")),
)
def test_the_direct_record_builder_matches_the_model(
    micro: int, subject: str | None, causation: str | None
) -> None:
    from crm_events.envelope import binary_record

    event = make_event(
        time=datetime(2026, 11, 25, 12, 0, 0, micro, tzinfo=UTC),
        subject=subject,
        causationid=causation,
    )
    direct = binary_record(
        event_id=event.id,
        source=event.source,
        type_=event.type,
        time=event.time,
        subject=event.subject,
        streamid=event.streamid,
        streamversion=event.streamversion,
        schemaversion=event.schemaversion,
        correlationid=event.correlationid,
        causationid=event.causationid,
        value=b"{}",
    )
    # what pydantic's JSON dump of the model gives, attribute by attribute
    dumped = event.model_dump(mode="json", exclude={"data", "datacontenttype"})
    expected = [("content-type", b"application/json")] + [
        (f"ce_{k}", str(v).encode()) for k, v in dumped.items() if v is not None
    ]
    assert direct.headers == expected
    assert (
        CloudEvent.from_kafka(direct.key, b"{}", direct.headers).model_copy(
            update={"data": event.data}
        )
        == event
    )
