"""Correlation ids: the one a request brings (``X-Correlation-ID``, if well formed) or a new one."""

from __future__ import annotations

import os
import re

from starlette.types import Scope

CID_HEADER = b"x-correlation-id"  # ASGI header names are lower-case
_CID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))  # version and variant bits
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)  # version 4, RFC 4122 variant


def new_correlation_id() -> str:
    """A random (version 4) UUID in its text form, as ``str(uuid.uuid4())`` but cheaper."""
    n = int.from_bytes(os.urandom(16)) & _UUID4_CLEAR | _UUID4_SET
    h = n.to_bytes(16).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def correlation_id_of(scope: Scope) -> str:
    """The request's own correlation id if it sent a well-formed one, else a new one."""
    for name, value in scope["headers"]:
        if name == CID_HEADER:
            given: str = value.decode("latin-1")
            return given if _CID.match(given) else new_correlation_id()
    return new_correlation_id()
