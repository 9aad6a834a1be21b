"""The Campaign aggregate: draft → scheduled → sending → sent, or cancelled before it is sent."""

from __future__ import annotations

from datetime import datetime

from crm_events.schemas.marketing_campaigns import (
    CampaignCancelled,
    CampaignCreated,
    CampaignScheduled,
    CampaignSendingStarted,
    CampaignSent,
    Channel,
)
from crm_runtime.aggregate import Aggregate, applies
from crm_runtime.errors import DomainError

STATUSES = ("draft", "scheduled", "sending", "sent", "cancelled")


class Campaign(Aggregate):
    stream_type = "campaign"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.name = ""
        self.template_id = ""
        self.segment_id = ""
        self.channel: Channel = "email"
        self.status = "draft"
        self.send_at: datetime | None = None
        self.members: int | None = None

    @classmethod
    def create(
        cls, campaign_id: str, *, name: str, template_id: str, segment_id: str, channel: Channel
    ) -> Campaign:
        campaign = cls(campaign_id)
        campaign.record(
            CampaignCreated(
                campaign_id=campaign_id,
                name=name,
                template_id=template_id,
                segment_id=segment_id,
                channel=channel,
            )
        )
        return campaign

    def schedule(self, send_at: datetime) -> None:
        if self.status not in ("draft", "scheduled"):
            raise DomainError(f"a {self.status} campaign cannot be scheduled")
        self.record(CampaignScheduled(campaign_id=self.id, send_at=send_at))

    def start(self, *, members: int, queued: int, skipped: dict[str, int]) -> None:
        if self.status != "scheduled":
            raise DomainError(f"a {self.status} campaign cannot start sending")
        self.record(
            CampaignSendingStarted(
                campaign_id=self.id, members=members, queued=queued, skipped=skipped
            )
        )

    def finish(self, *, sent: int, bounced: int, skipped: int) -> None:
        if self.status != "sending":
            raise DomainError(f"a {self.status} campaign cannot finish sending")
        self.record(CampaignSent(campaign_id=self.id, sent=sent, bounced=bounced, skipped=skipped))

    def cancel(self, reason: str | None, unsent: int) -> None:
        if self.status in ("sent", "cancelled"):
            raise DomainError(f"a {self.status} campaign cannot be cancelled")
        self.record(CampaignCancelled(campaign_id=self.id, reason=reason, unsent=unsent))

    @applies(CampaignCreated)
    def _created(self, e: CampaignCreated) -> None:
        self.name = e.name
        self.template_id = e.template_id
        self.segment_id = e.segment_id
        self.channel = e.channel

    @applies(CampaignScheduled)
    def _scheduled(self, e: CampaignScheduled) -> None:
        self.status = "scheduled"
        self.send_at = e.send_at

    @applies(CampaignSendingStarted)
    def _started(self, e: CampaignSendingStarted) -> None:
        self.status = "sending"
        self.members = e.members

    @applies(CampaignSent)
    def _sent(self, e: CampaignSent) -> None:
        self.status = "sent"

    @applies(CampaignCancelled)
    def _cancelled(self, e: CampaignCancelled) -> None:
        self.status = "cancelled"
