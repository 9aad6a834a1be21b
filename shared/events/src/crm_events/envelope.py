"""CloudEvents 1.0 envelope and its Kafka protocol binding (binary content mode)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import from_json

SPEC_VERSION = "1.0"
JSON_CONTENT_TYPE = "application/json"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
PUBLIC_TOPIC = "crm.public.customer-events"
JSON_CONTENT_TYPE_B = JSON_CONTENT_TYPE.encode()
SPEC_VERSION_B = SPEC_VERSION.encode()

# Extension attributes we add to every event (CloudEvents names: lower-case letters and digits).
EXTENSIONS = ("streamid", "streamversion", "schemaversion", "correlationid", "causationid")


def context_topic(context: str) -> str:
    """The internal topic of one bounded context, e.g. ``crm.sales.events``."""
    return f"crm.{context}.events"


def public_topic() -> str:
    """The curated integration topic downstream systems subscribe to."""
    return PUBLIC_TOPIC


class EnvelopeError(ValueError):
    """A Kafka record that is not a valid CloudEvent of ours."""


@dataclass(frozen=True)
class KafkaRecord:
    """What goes on the wire: key, value and headers of one Kafka record."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)


class CloudEvent(BaseModel):
    """One domain event as published: CloudEvents context attributes plus our extensions."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: UUID
    source: str = Field(min_length=1, description="URI-reference of the producing context")
    type: str = Field(pattern=r"^crm\.[a-z_-]+\.[a-z_]+\.[a-z_]+$")
    specversion: Literal["1.0"] = "1.0"
    time: datetime
    subject: str | None = Field(default=None, description="customer id (never personal data)")
    datacontenttype: Literal["application/json"] = "application/json"
    streamid: str
    streamversion: int = Field(ge=1)
    schemaversion: int = Field(ge=1)
    correlationid: str | None = None
    causationid: str | None = None
    data: dict[str, Any]

    @property
    def context(self) -> str:
        return self.type.split(".")[1]

    def to_kafka(self) -> KafkaRecord:
        """Binary content mode: attributes in ``ce_`` headers, the payload as the record value."""
        value = json.dumps(self.data, separators=(",", ":"), sort_keys=True).encode()
        return binary_record(
            event_id=self.id,
            source=self.source,
            type_=self.type,
            time=self.time,
            subject=self.subject,
            streamid=self.streamid,
            streamversion=self.streamversion,
            schemaversion=self.schemaversion,
            correlationid=self.correlationid,
            causationid=self.causationid,
            value=value,
        )

    @classmethod
    def from_kafka(
        cls, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None
    ) -> CloudEvent:
        """Decode a record in binary or structured mode; raise EnvelopeError with the reason."""
        ce: dict[str, Any] = {}  # the ce_ headers, by attribute name
        content_type = ""
        name = ""
        try:
            for name, raw in headers or ():
                attr = _HEADER_ATTRS.get(name)
                if attr is None:
                    attr = _header_attr(name)
                text = raw.decode() if raw is not None else ""
                if attr is True:
                    content_type = text
                elif attr is not False:
                    ce[attr] = text
        except UnicodeDecodeError as exc:
            raise EnvelopeError(f"header {name!r} is not UTF-8") from exc
        if value is None:
            raise EnvelopeError("record has no value")
        try:  # JSON on the wire is UTF-8 (RFC 8259); pydantic-core's parser (Rust) checks both
            body = from_json(value)  # and refuses lone surrogates (no text column takes them)
        except ValueError as exc:
            raise EnvelopeError(f"value is not JSON: {exc}") from exc
        # Structured mode; some SDKs label it plain application/json, so also recognise the body.
        if content_type.startswith(STRUCTURED_CONTENT_TYPE) or (
            "specversion" not in ce and isinstance(body, dict) and "specversion" in body
        ):
            if not isinstance(body, dict):
                raise EnvelopeError("structured CloudEvent is not a JSON object")
            attrs: dict[str, Any] = dict(body)
        else:
            if "specversion" not in ce:
                raise EnvelopeError("not a CloudEvent: no ce_specversion header")
            attrs = ce
            attrs["data"] = body
            attrs.pop("datacontenttype", None)
        if not isinstance(attrs.get("data"), dict):
            raise EnvelopeError("event data is not a JSON object")
        attrs.pop("partitionkey", None)
        try:
            # cls.model_validate, without its Python wrapper for the class itself
            return _validate(attrs) if cls is CloudEvent else cls.model_validate(attrs)
        except ValidationError as exc:
            raise EnvelopeError(f"invalid CloudEvent attributes: {_summarise(exc)}") from exc


_validate = CloudEvent.__pydantic_validator__.validate_python
_HEADER_ATTRS: dict[str, str | bool] = {}  # header name as sent -> what it carries


def _header_attr(name: str) -> str | bool:
    """The attribute a ``ce_`` header carries (``ce_id`` -> ``id``; names are case-blind), True
    for the content type, False for any other header. Remembered."""
    lower = name.lower()
    attr: str | bool = lower[3:] if lower.startswith("ce_") else lower == "content-type"
    if len(_HEADER_ATTRS) < 256:  # names come from producers: keep the set bounded
        _HEADER_ATTRS[name] = attr
    return attr


def _summarise(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
    )


def encode_time(t: datetime) -> str:
    """RFC 3339 as CloudEvents wants it (UTC as ``Z``), matching pydantic's JSON output."""
    text = t.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def binary_record(
    *,
    event_id: UUID | str,
    source: str,
    type_: str,
    time: datetime,
    subject: str | None,
    streamid: str,
    streamversion: int,
    schemaversion: int,
    correlationid: str | None,
    causationid: str | None,
    value: bytes,
) -> KafkaRecord:
    """A Kafka record in binary content mode, built directly (the relay's hot path).

    Key = subject (customer id), or the stream id for events about no customer.
    """
    headers: list[tuple[str, bytes]] = [
        ("content-type", JSON_CONTENT_TYPE_B),
        ("ce_id", str(event_id).encode()),
        ("ce_source", source.encode()),
        ("ce_type", type_.encode()),
        ("ce_specversion", SPEC_VERSION_B),
        ("ce_time", encode_time(time).encode()),
    ]
    if subject is not None:
        headers.append(("ce_subject", subject.encode()))
    headers.append(("ce_streamid", streamid.encode()))
    headers.append(("ce_streamversion", str(streamversion).encode()))
    headers.append(("ce_schemaversion", str(schemaversion).encode()))
    if correlationid is not None:
        headers.append(("ce_correlationid", correlationid.encode()))
    if causationid is not None:
        headers.append(("ce_causationid", causationid.encode()))
    key = subject.encode() if subject else streamid.encode()
    return KafkaRecord(key=key, value=value, headers=headers)
