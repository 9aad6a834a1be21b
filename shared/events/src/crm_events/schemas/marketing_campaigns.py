"""Event payloads of campaigns, messages, tracking and triggers (``crm.marketing.*``).

A campaign sends one template to a segment over a channel. Every recipient gets a message
(stream ``message-<id>``, subject = customer id) whose events are the touchpoints the customer
timeline shows: sent, delivered, bounced, opened, clicked, unsubscribed — or skipped, with why.
Addresses never appear here: a message names the customer, not where it went.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from crm_events.registry import EventPayload, event_type

Channel = Literal["email", "sms", "push"]
SkipReason = Literal[
    "no_consent",
    "no_contact_point",
    "frequency_cap",
    "consent_withdrawn",
    "cancelled",
    "no_longer_qualifies",
    "render_failed",
    "delivery_failed",
]


# --- campaigns --------------------------------------------------------------------------------


@event_type("crm.marketing.campaign.created", version=1)
class CampaignCreated(EventPayload):
    """A campaign was drafted: one template to one segment over one channel."""

    campaign_id: str
    name: str = Field(min_length=1, max_length=200)
    template_id: str
    segment_id: str
    channel: Channel


@event_type("crm.marketing.campaign.scheduled", version=1)
class CampaignScheduled(EventPayload):
    """A campaign was scheduled to start sending at a time (now, or later)."""

    campaign_id: str
    send_at: datetime


@event_type("crm.marketing.campaign.sending_started", version=1)
class CampaignSendingStarted(EventPayload):
    """The segment's members at this moment became the campaign's recipients."""

    campaign_id: str
    members: int = Field(ge=0, description="segment members when sending started")
    queued: int = Field(ge=0, description="recipients with consent and a contact point")
    skipped: dict[str, int] = Field(
        default_factory=dict, description="members not queued, by reason"
    )


@event_type("crm.marketing.campaign.sent", version=1)
class CampaignSent(EventPayload):
    """Every recipient of the campaign was handled (sent, bounced or skipped)."""

    campaign_id: str
    sent: int = Field(ge=0)
    bounced: int = Field(ge=0)
    skipped: int = Field(ge=0)


@event_type("crm.marketing.campaign.cancelled", version=1)
class CampaignCancelled(EventPayload):
    """A campaign was cancelled; recipients not yet sent to get nothing."""

    campaign_id: str
    reason: str | None = Field(default=None, max_length=500)
    unsent: int = Field(default=0, ge=0, description="queued recipients that were dropped")


# --- messages (one per recipient; subject = customer id) --------------------------------------


class MessageRef(EventPayload):
    """What every message event names: the message, its customer and where it came from."""

    message_id: str
    customer_id: str
    channel: Channel
    campaign_id: str | None = None
    trigger_id: str | None = None


@event_type("crm.marketing.message.sent", version=1)
class MessageSent(MessageRef):
    """A marketing message was handed to the mail server or provider."""

    template_id: str
    provider_message_id: str | None = Field(
        default=None, description="the e-mail Message-ID or the provider's message id"
    )


@event_type("crm.marketing.message.skipped", version=1)
class MessageSkipped(MessageRef):
    """A recipient got nothing, and why (no consent, the frequency cap, ...)."""

    reason: SkipReason


@event_type("crm.marketing.message.delivered", version=1)
class MessageDelivered(MessageRef):
    """The provider confirmed delivery to the device or phone."""


@event_type("crm.marketing.message.bounced", version=1)
class MessageBounced(MessageRef):
    """The mail server or provider refused the message for good."""

    code: int | None = Field(default=None, description="the SMTP reply code, e.g. 550")
    reason: str = Field(max_length=500, description="the server's reply, without the address")


@event_type("crm.marketing.message.opened", version=1)
class MessageOpened(MessageRef):
    """The recipient opened the message (first time; the open pixel was loaded)."""


@event_type("crm.marketing.message.clicked", version=1)
class MessageClicked(MessageRef):
    """The recipient followed a link of the message (first time for that link)."""

    link_index: int = Field(ge=0)
    url: str


@event_type("crm.marketing.message.unsubscribed", version=1)
class MessageUnsubscribed(MessageRef):
    """The recipient unsubscribed through the message's link (consent withdrawn)."""


# --- triggers ---------------------------------------------------------------------------------


class TriggerRule(EventPayload):
    """When a known customer views products of ``category`` at least ``min_views`` times within
    ``within_seconds`` and has not bought one (in that window), send after ``delay_seconds``."""

    category: str = Field(min_length=1, max_length=200)
    min_views: int = Field(ge=1, le=1000)
    within_seconds: int = Field(ge=60, le=366 * 86400)
    require_no_purchase: bool = True
    template_id: str
    channel: Channel
    delay_seconds: int = Field(default=0, ge=0, le=30 * 86400)
    cooldown_seconds: int = Field(
        default=0, ge=0, le=366 * 86400, description="no second firing for a customer this soon"
    )


@event_type("crm.marketing.trigger.defined", version=1)
class TriggerDefined(EventPayload):
    """An event-based trigger was defined (active from now on)."""

    trigger_id: str
    name: str = Field(min_length=1, max_length=200)
    rule: TriggerRule


@event_type("crm.marketing.trigger.changed", version=1)
class TriggerChanged(EventPayload):
    """A trigger's name or rule was changed."""

    trigger_id: str
    name: str = Field(min_length=1, max_length=200)
    rule: TriggerRule


@event_type("crm.marketing.trigger.paused", version=1)
class TriggerPaused(EventPayload):
    """A trigger stopped firing; open episodes end."""

    trigger_id: str


@event_type("crm.marketing.trigger.resumed", version=1)
class TriggerResumed(EventPayload):
    """A paused trigger fires again."""

    trigger_id: str


@event_type("crm.marketing.trigger.fired", version=1)
class TriggerFired(EventPayload):
    """A customer's behaviour matched a trigger (once per qualifying episode)."""

    trigger_id: str
    customer_id: str
    episode_id: str
    views: int = Field(ge=0, description="qualifying product views in the window")
    message_id: str | None = Field(
        default=None, description="the queued message; none when the cooldown suppressed it"
    )
    send_at: datetime | None = None
