"""Settings of the marketing service beyond the shared ones (``MARKETING_*`` variables)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from crm_runtime.context import ServiceContext


class MarketingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MARKETING_", extra="ignore")

    public_base_url: str | None = Field(
        default=None,
        description="where people reach this service's public links (confirmation, tracking); "
        "default http://<HTTP_HOST>:<port>",
    )
    public_form_max_bytes: int = Field(default=16_384, ge=256, description="413 above this")
    public_activity_max_bytes: int = Field(default=65_536, ge=256, description="413 above this")
    activity_max_events: int = Field(default=100, ge=1, description="events per activity batch")
    trust_forwarded_for: bool = Field(
        default=False,
        description="take the client IP from X-Forwarded-For (only behind a trusted proxy)",
    )
    consent_link_ttl_hours: int = Field(default=168, ge=1, description="opt-in link validity")


def marketing_settings(ctx: ServiceContext) -> MarketingSettings:
    """The service's marketing settings (read from the environment once per context)."""
    found = ctx.extras.get("marketing_settings")
    if not isinstance(found, MarketingSettings):
        found = MarketingSettings()
        ctx.extras["marketing_settings"] = found
    return found


def public_base_url(ctx: ServiceContext) -> str:
    configured = marketing_settings(ctx).public_base_url
    if configured:
        return configured.rstrip("/")
    return f"http://{ctx.settings.http_host}:{ctx.settings.port}"


class Clock(Protocol):
    def now(self) -> datetime: ...


def now(ctx: ServiceContext) -> datetime:
    """The service's time: ``ctx.extras["marketing_clock"]`` if a test set one, else now."""
    clock = ctx.extras.get("marketing_clock")
    if clock is not None:
        return clock.now()  # type: ignore[attr-defined,no-any-return]
    return datetime.now(UTC)
