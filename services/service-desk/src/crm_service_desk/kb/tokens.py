"""Signed feedback links: a customer without an account says whether an article helped.

A token names the article, optionally the customer and the ticket it was sent for, a random
nonce and an expiry, signed with HMAC-SHA256 under a key derived from the service's JWT secret
(a separate key: a feedback token is never a bearer token, nor the other way round). Feedback is
counted once per customer when the token names one, else once per token (its nonce).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from crm_runtime.errors import InvalidInput

_PURPOSE = b"crm.service.kb.feedback-link.v1"


def _key(secret: str) -> bytes:
    return hmac.new(secret.encode(), _PURPOSE, hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class FeedbackToken:
    article_id: str
    customer_id: str | None
    ticket_id: str | None
    nonce: str
    expires_at: datetime


def sign(
    secret: str,
    article_id: str,
    *,
    customer_id: str | None,
    ticket_id: str | None,
    expires_at: datetime,
) -> str:
    claims = {
        "a": article_id,
        "c": customer_id,
        "t": ticket_id,
        "n": secrets.token_urlsafe(12),
        "e": int(expires_at.timestamp()),
    }
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    mac = _b64(hmac.new(_key(secret), body.encode(), hashlib.sha256).digest())
    return f"{body}.{mac}"


def verify(secret: str, token: str, article_id: str, now: datetime) -> FeedbackToken:
    """The token's claims; 422 on ``token`` when forged, for another article or expired."""
    body, _, mac = token.partition(".")
    expected = _b64(hmac.new(_key(secret), body.encode(), hashlib.sha256).digest())
    if not mac or not hmac.compare_digest(mac, expected):
        raise InvalidInput("token", "is not a valid feedback link")
    try:
        claims = json.loads(_unb64(body))
        parsed = FeedbackToken(
            article_id=str(claims["a"]),
            customer_id=claims.get("c"),
            ticket_id=claims.get("t"),
            nonce=str(claims["n"]),
            expires_at=datetime.fromtimestamp(int(claims["e"]), UTC),
        )
    except (ValueError, KeyError, TypeError):
        raise InvalidInput("token", "is not a valid feedback link") from None
    if parsed.article_id != article_id:
        raise InvalidInput("token", "was issued for another article")
    if parsed.expires_at <= now:
        raise InvalidInput("token", "has expired")
    return parsed
