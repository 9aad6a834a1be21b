"""Template limits (``MARKETING_*`` variables): SMS segments, push title and body lengths."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from crm_marketing.templates.rendering import Limits


class TemplateSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MARKETING_", extra="ignore")

    sms_max_segments: int = Field(
        default=3, ge=1, le=10, description="an SMS that renders to more segments is refused"
    )
    push_title_max_chars: int = Field(default=65, ge=10, le=200)
    push_body_max_chars: int = Field(default=240, ge=20, le=4000)


@lru_cache(maxsize=1)
def limits() -> Limits:
    s = TemplateSettings()
    return Limits(s.sms_max_segments, s.push_title_max_chars, s.push_body_max_chars)
