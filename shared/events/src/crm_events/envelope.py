"""CloudEvents 1.0 envelope and its Kafka protocol binding (binary content mode)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError

SPEC_VERSION = "1.0"
JSON_CONTENT_TYPE = "application/json"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
PUBLIC_TOPIC = "crm.public.customer-events"

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
        headers: list[tuple[str, bytes]] = [("content-type", JSON_CONTENT_TYPE.encode())]
        attrs = self.model_dump(mode="json", exclude={"data", "datacontenttype"})
        for name, value in attrs.items():
            if value is None:
                continue
            headers.append((f"ce_{name}", str(value).encode()))
        key = self.subject.encode() if self.subject else self.streamid.encode()
        value = json.dumps(self.data, separators=(",", ":"), sort_keys=True).encode()
        return KafkaRecord(key=key, value=value, headers=headers)

    @classmethod
    def from_kafka(
        cls, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None
    ) -> CloudEvent:
        """Decode a record in binary or structured mode; raise EnvelopeError with the reason."""
        hdrs: dict[str, str] = {}
        for name, raw in headers or []:
            try:
                hdrs[name.lower()] = raw.decode() if raw is not None else ""
            except UnicodeDecodeError as exc:
                raise EnvelopeError(f"header {name!r} is not UTF-8") from exc
        if value is None:
            raise EnvelopeError("record has no value")
        try:
            body = json.loads(value)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise EnvelopeError(f"value is not JSON: {exc}") from exc
        content_type = hdrs.get("content-type", "")
        # Structured mode; some SDKs label it plain application/json, so also recognise the body.
        if content_type.startswith(STRUCTURED_CONTENT_TYPE) or (
            "ce_specversion" not in hdrs and isinstance(body, dict) and "specversion" in body
        ):
            if not isinstance(body, dict):
                raise EnvelopeError("structured CloudEvent is not a JSON object")
            attrs: dict[str, Any] = dict(body)
        else:
            if "ce_specversion" not in hdrs:
                raise EnvelopeError("not a CloudEvent: no ce_specversion header")
            attrs = {n[3:]: v for n, v in hdrs.items() if n.startswith("ce_")}
            attrs["data"] = body
            attrs.pop("datacontenttype", None)
        if not isinstance(attrs.get("data"), dict):
            raise EnvelopeError("event data is not a JSON object")
        attrs.pop("partitionkey", None)
        try:
            return cls.model_validate(attrs)
        except ValidationError as exc:
            raise EnvelopeError(f"invalid CloudEvent attributes: {_summarise(exc)}") from exc


def _summarise(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
    )
