"""Settings of campaign sending, tracking and triggers (``MARKETING_*`` environment variables).

A service-local settings class: the shared ``Settings`` keeps what every service needs. Tests
and benchmarks replace them per app with ``use_settings(ctx, DeliverySettings(...))``.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from crm_runtime.context import ServiceContext
from crm_runtime.settings import Settings

_KEY = "marketing.delivery_settings"


class DeliverySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MARKETING_", extra="ignore")

    public_base_url: str | None = Field(
        default=None,
        description="where recipients reach this service: tracking and unsubscribe links "
        "(the same variable as the audience's confirmation links); default "
        "http://<HTTP_HOST>:<port>",
    )
    tracking_secret: str | None = Field(
        default=None,
        description="HMAC key of tracking links; default derived from JWT_SECRET",
    )
    send_rate: float = Field(
        default=50.0, ge=0, description="messages per second per sender; 0 = unthrottled"
    )
    frequency_cap: int = Field(
        default=3, ge=0, description="marketing messages per customer per window; 0 = no cap"
    )
    frequency_window_hours: float = Field(default=168.0, gt=0)
    quiet_hours_start: time | None = Field(default=time(21, 0), description="local time")
    quiet_hours_end: time | None = Field(default=time(8, 0), description="local time")
    default_timezone: str = Field(default="UTC", description="for customers without one")
    batch_size: int = Field(default=200, ge=1, le=5000)
    lease_seconds: float = Field(
        default=300.0, gt=0, description="a claimed message whose sender vanished is resent after"
    )
    max_attempts: int = Field(default=5, ge=1)
    retry_seconds: float = Field(default=60.0, ge=0, description="backoff per failed attempt")
    sender_interval: float = Field(default=1.0, gt=0, description="seconds between sender polls")
    smtp_timeout: float = Field(default=30.0, gt=0)
    smtp_worker: bool = Field(
        default=True,
        description="hold the SMTP conversation in a process of its own (the sender's process "
        "composes and records the next messages meanwhile); false: in the sender's process",
    )

    @field_validator("default_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @property
    def frequency_window(self) -> timedelta:
        return timedelta(hours=self.frequency_window_hours)

    def base_url(self, settings: Settings) -> str:
        if self.public_base_url:
            return self.public_base_url.rstrip("/")
        return f"http://{settings.http_host}:{settings.port}"

    def tracking_key(self, settings: Settings) -> bytes:
        if self.tracking_secret:
            return self.tracking_secret.encode()
        return hmac.new(
            settings.jwt_secret.encode(), b"crm-marketing-tracking", hashlib.sha256
        ).digest()


def delivery_settings(ctx: ServiceContext) -> DeliverySettings:
    found = ctx.extras.get(_KEY)
    if isinstance(found, DeliverySettings):
        return found
    made = DeliverySettings()
    ctx.extras[_KEY] = made
    return made


def use_settings(ctx: ServiceContext, settings: DeliverySettings) -> None:
    ctx.extras[_KEY] = settings
