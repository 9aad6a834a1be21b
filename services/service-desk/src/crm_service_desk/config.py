"""Settings of the service desk alone (environment variables ``SERVICE_DESK_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DeskSettings(BaseSettings):
    """Inbound mail, portal, customer links, surveys. Each field: ``SERVICE_DESK_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="SERVICE_DESK_", extra="ignore")

    support_address: str = Field(
        default="support@localhost",
        description="From address of ticket mail; customers reply to it (the inbound endpoint)",
    )
    inbound_smtp_enabled: bool | None = Field(
        default=None, description="run the inbound SMTP endpoint; default on, off when CRM_ENV=test"
    )
    inbound_smtp_host: str = "127.0.0.1"
    inbound_smtp_port: int = Field(default=2525, ge=0, le=65535)
    inbound_max_bytes: int = Field(
        default=5 * 1024 * 1024, ge=1024, description="larger messages are refused (552)"
    )
    acknowledge_new_tickets: bool = Field(
        default=True, description="mail the customer the ticket token and link on a new ticket"
    )
    public_base_url: str = Field(
        default="http://127.0.0.1:8003", description="base of the links mailed to customers"
    )
    link_secret: str | None = Field(
        default=None, description="HMAC key of customer links and surveys (default: JWT_SECRET)"
    )
    ticket_link_days: int = Field(default=90, ge=1)
    survey_link_days: int = Field(default=30, ge=1)
    portal_sites: dict[str, list[str]] = Field(
        default_factory=dict,
        description='site key -> allowed origins, e.g. {"site-abc": ["https://example.com"]}',
    )
    portal_rate_limit: int = Field(default=5, ge=1, description="tickets per client and window")
    portal_rate_window_seconds: int = Field(default=600, ge=1)
    portal_trust_forwarded_for: bool = Field(
        default=False,
        description="rate limit by the right-most X-Forwarded-For address (the one the proxy "
        "appended); only behind a trusted reverse proxy, else clients could pick their own",
    )
    portal_max_bytes: int = Field(default=32 * 1024, ge=256)
    auto_close_days: int = Field(default=7, ge=1, description="resolved this long: closed")
