"""Signed links for customers: their ticket (read and reply) and the satisfaction survey.

A link carries a token: a JWT (HS256) with the ticket id, the purpose and an expiry, signed with
a key derived from ``SERVICE_DESK_LINK_SECRET`` (default: ``JWT_SECRET``), so a link token is
never a bearer token and a ticket link never opens the survey (or the other way round).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Literal

import jwt

from crm_runtime.errors import Forbidden
from crm_runtime.settings import Settings
from crm_service_desk.config import DeskSettings

Purpose = Literal["ticket", "survey"]
_AUDIENCE = "crm-service-desk-link"


class Links:
    def __init__(self, secret: str, base_url: str, ticket_days: int, survey_days: int) -> None:
        self._key = hmac.new(secret.encode(), b"crm-service-desk-links/v1", hashlib.sha256).digest()
        self.base_url = base_url.rstrip("/")
        self.ttl: dict[Purpose, int] = {
            "ticket": ticket_days * 86400,
            "survey": survey_days * 86400,
        }

    @classmethod
    def of(cls, settings: Settings, desk: DeskSettings) -> Links:
        return cls(
            desk.link_secret or settings.jwt_secret,
            desk.public_base_url,
            desk.ticket_link_days,
            desk.survey_link_days,
        )

    def sign(self, ticket_id: str, purpose: Purpose, now: float | None = None) -> str:
        issued = int(now if now is not None else time.time())
        claims = {
            "sub": ticket_id,
            "pur": purpose,
            "aud": _AUDIENCE,
            "iat": issued,
            "exp": issued + self.ttl[purpose],
        }
        return jwt.encode(claims, self._key, algorithm="HS256")

    def verify(self, token: str, purpose: Purpose) -> str:
        """The ticket id the token was signed for; Forbidden if forged, expired or misused."""
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=["HS256"],
                audience=_AUDIENCE,
                options={"require": ["exp", "sub", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Forbidden("this link has expired; ask the service desk for a new one") from None
        except jwt.PyJWTError:
            raise Forbidden("this link is not valid") from None
        if claims.get("pur") != purpose:
            raise Forbidden("this link is not valid here")
        return str(claims["sub"])

    def ticket_url(self, ticket_id: str) -> str:
        return f"{self.base_url}/customer/tickets/{self.sign(ticket_id, 'ticket')}"

    def survey_url(self, ticket_id: str) -> str:
        return f"{self.base_url}/survey/{self.sign(ticket_id, 'survey')}"
