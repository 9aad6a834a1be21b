"""Settings shared by every service, read from the environment (one pydantic-settings class)."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_JWT_SECRET = "crm-dev-secret-do-not-use-in-production-0000"  # noqa: S105  # the known dev default

DEFAULT_PORTS = {"sales": 8001, "marketing": 8002, "service-desk": 8003, "analytics": 8004}


class Settings(BaseSettings):
    """Process settings. Every field can be set by an upper-case environment variable."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    crm_env: Literal["development", "test", "production"] = "development"
    service_name: str = "sales"

    database_url: str | None = Field(
        default=None,
        description="Server URL (postgresql://user:pass@host:port/db); the service uses its own "
        "database crm_<service> on that server unless <SERVICE>_DATABASE_URL is set.",
    )
    service_database_url: str | None = None

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_idempotence: bool | None = Field(
        default=None,
        description="Idempotent producer; default on, except on the embedded broker (Tansu), "
        "which does not implement InitProducerId.",
    )
    kafka_embedded: bool = False
    kafka_fetch_max_wait_ms: int | None = Field(
        default=None,
        ge=1,
        description="Consumer long-poll wait. Default 500 ms. On the embedded broker, which "
        "answers a fetch only when the wait ends, not when records arrive: 10 ms for the "
        "analytics worker (the timeline), 50 ms for the services' own consumers.",
    )
    kafka_partitions: int = Field(default=6, ge=1)
    kafka_replication_factor: int = Field(default=1, ge=1)

    smtp_url: str = "smtp://127.0.0.1:1025"
    mail_from: str = "crm@localhost"

    jwt_secret: str = DEV_JWT_SECRET
    jwt_jwks_url: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None

    http_host: str = "127.0.0.1"
    http_port: int | None = None

    relay_batch_size: int = Field(default=500, ge=1)
    relay_poll_interval: float = Field(default=1.0, gt=0)
    relay_history_check_interval: float = Field(default=10.0, gt=0)

    analytics_app_id: str = Field(
        default="crm-analytics", description="faust app id = consumer group of the processors"
    )

    base_currency: str = Field(
        default="EUR",
        pattern=r"^[A-Z]{3}$",
        description="Currency that deal amounts are converted into for pipeline totals",
    )

    scheduler_enabled: bool = Field(
        default=True, description="run time-based rules (reminders, overdue invoices) in-process"
    )
    consumers_enabled: bool = Field(
        default=True,
        description="run the service's Kafka consumers (e.g. the people directory) beside the API",
    )
    scheduler_interval: float = Field(default=60.0, gt=0, description="seconds between ticks")
    reminder_inactive_days: int = Field(
        default=30, ge=1, description="a top-tier account without activity this long: remind"
    )

    log_level: str = "INFO"
    otel_tracing: bool = Field(
        default=False,
        description="FastAPI's OpenTelemetry spans and request metrics, for a process that "
        "configures an OpenTelemetry SDK. Off: nothing is checked per request. FastAPI's "
        "exception log records stay off either way (they carry error messages, which may "
        "quote personal data).",
    )

    @model_validator(mode="after")
    def _refuse_default_secret(self) -> Settings:
        weak = self.jwt_secret == DEV_JWT_SECRET or len(self.jwt_secret) < 32
        if self.crm_env == "production" and self.jwt_jwks_url is None and weak:
            raise ValueError(
                "JWT_SECRET must be a secret of at least 32 characters (or set JWT_JWKS_URL) "
                "when CRM_ENV=production; refusing to start with the development default"
            )
        return self

    @classmethod
    def for_service(cls, name: str, **overrides: object) -> Settings:
        """Settings of one service: ``<SERVICE>_DATABASE_URL`` and ``<SERVICE>_PORT`` apply."""
        prefix = name.upper().replace("-", "_")
        values: dict[str, object] = {"service_name": name}
        if url := os.environ.get(f"{prefix}_DATABASE_URL"):
            values["service_database_url"] = url
        if port := os.environ.get(f"{prefix}_PORT"):
            values["http_port"] = int(port)
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    @property
    def producer_idempotence(self) -> bool:
        if self.kafka_idempotence is not None:
            return self.kafka_idempotence
        return not self.kafka_embedded

    @property
    def fetch_max_wait_ms(self) -> int:
        if self.kafka_fetch_max_wait_ms is not None:
            return self.kafka_fetch_max_wait_ms
        if not self.kafka_embedded:
            return 500  # a real broker answers as soon as records arrive
        # Every wait on the embedded broker is a fetch it answers empty: 10 ms across the
        # platform's consumers cost ~40% of a core in the broker at idle. Only the timeline
        # (the analytics worker) is worth it.
        return 10 if self.service_name == "analytics" else 50

    @property
    def database_name(self) -> str:
        return "crm_" + self.service_name.replace("-", "_")

    @property
    def port(self) -> int:
        return self.http_port or DEFAULT_PORTS.get(self.service_name, 8000)
