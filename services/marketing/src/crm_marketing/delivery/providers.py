"""SMS and push go through a provider. The local provider records what it was given in
``provider_outbox`` (listable at ``GET /delivery/outbox``) and reports it delivered.

A provider is called inside the transaction that marks the message sent and gets the message
id as its idempotency key: the local provider's write commits with that status, so a restarted
sender never records a message twice; a remote provider must deduplicate on the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol
from uuid import UUID

from crm_marketing.delivery.smtp import Outcome, SendResult
from crm_runtime.db import Conn

MobileChannel = Literal["sms", "push"]


@dataclass(frozen=True)
class MobileMessage:
    message_id: UUID  # idempotency key
    channel: MobileChannel
    recipient: str  # phone number or device token
    body: str
    title: str | None = None


class Provider(Protocol):
    delivers_immediately: bool

    async def send(self, conn: Conn, message: MobileMessage, now: datetime) -> SendResult: ...


class LocalProvider:
    """Records messages in the service's database instead of sending them."""

    delivers_immediately = True

    async def send(self, conn: Conn, message: MobileMessage, now: datetime) -> SendResult:
        await conn.execute(
            "INSERT INTO provider_outbox (channel, message_id, recipient, title, body, recorded_at)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (message_id) DO NOTHING",
            message.channel,
            message.message_id,
            message.recipient,
            message.title,
            message.body,
            now,
        )
        return SendResult(Outcome.ACCEPTED, None, "recorded by the local provider")
