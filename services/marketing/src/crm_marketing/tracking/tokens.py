"""Signed tracking tokens: (kind, message id, link index) under an HMAC-SHA256 tag.

``kind`` is bound into the tag, so an open token cannot be replayed as a click or unsubscribe
token. The token carries no personal data: a message id is a random UUID. Verification is
constant-time and says nothing about why a token failed.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
from typing import Literal
from uuid import UUID

Kind = Literal["o", "c", "u", "v"]  # open, click, unsubscribe, view in browser
_KINDS: dict[str, int] = {"o": 1, "c": 2, "u": 3, "v": 4}
_TAG = 12  # bytes of the truncated HMAC (96 bits)
_BODY = 1 + 16 + 2


@functools.lru_cache(maxsize=8)
def _keyed(key: bytes) -> hmac.HMAC:
    """An HMAC-SHA256 with the key already taken in: each token copies it (a message signs
    several), rather than hashing the key's pads again."""
    return hmac.new(key, digestmod=hashlib.sha256)


def sign(key: bytes, kind: Kind, message_id: UUID, index: int = 0) -> str:
    if not 0 <= index < 65536:
        raise ValueError("link index out of range")
    body = bytes((_KINDS[kind],)) + message_id.bytes + index.to_bytes(2, "big")
    mac = _keyed(key).copy()
    mac.update(body)
    return base64.urlsafe_b64encode(body + mac.digest()[:_TAG]).decode().rstrip("=")


def verify(key: bytes, kind: Kind, token: str) -> tuple[UUID, int] | None:
    """``(message id, link index)`` of a genuine token of ``kind``, else None."""
    if len(token) > 64:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(raw) != _BODY + _TAG:
        return None
    body, tag = raw[:_BODY], raw[_BODY:]
    expected = hmac.new(key, body, hashlib.sha256).digest()[:_TAG]
    if not hmac.compare_digest(tag, expected) or body[0] != _KINDS[kind]:
        return None
    return UUID(bytes=body[1:17]), int.from_bytes(body[17:19], "big")
