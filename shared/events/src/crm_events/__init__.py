"""The CRM's published language: the CloudEvents envelope and the registry of every event type."""

from crm_events.envelope import (
    CloudEvent,
    EnvelopeError,
    KafkaRecord,
    context_topic,
    public_topic,
)
from crm_events.registry import (
    EventPayload,
    EventRegistry,
    EventTypeSpec,
    SchemaValidationError,
    UnknownEventType,
    event_type,
    registry,
    upcaster,
)

# Importing the schema modules registers every event type.
from crm_events import schemas as _schemas  # noqa: F401  isort: skip

__all__ = [
    "CloudEvent",
    "EnvelopeError",
    "EventPayload",
    "EventRegistry",
    "EventTypeSpec",
    "KafkaRecord",
    "SchemaValidationError",
    "UnknownEventType",
    "context_topic",
    "event_type",
    "public_topic",
    "registry",
    "upcaster",
]
