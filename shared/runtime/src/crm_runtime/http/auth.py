"""Bearer JWT authentication (HS256 dev secret, or RS256 via a JWKS URL) and role checks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from crm_runtime.errors import Forbidden, Unauthorized
from crm_runtime.settings import Settings

ROLES = frozenset(
    {
        "admin",
        "sales_rep",
        "sales_manager",
        "marketer",
        "service_agent",
        "service_manager",
        "analyst",
    }
)


@dataclass(frozen=True)
class Principal:
    """The caller: an opaque user id, roles and team (never personal data)."""

    user_id: str
    roles: frozenset[str]
    team: str | None = None

    def has(self, *roles: str) -> bool:
        return "admin" in self.roles or bool(self.roles.intersection(roles))


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._jwks = jwt.PyJWKClient(settings.jwt_jwks_url) if settings.jwt_jwks_url else None
        self._verified: dict[str, tuple[Principal, float]] = {}

    async def authenticate(self, token: str) -> Principal:
        """Verify a bearer token; a verified token is remembered until it expires."""
        cached = self._verified.get(token)
        if cached is not None:
            principal, expires = cached
            if time.time() < expires:
                return principal
            del self._verified[token]
        principal, expires = await self._verify(token)
        if len(self._verified) >= 10_000:
            self._verified.clear()
        self._verified[token] = (principal, expires)
        return principal

    async def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            if self._jwks is not None:
                key = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
                claims = jwt.decode(
                    token,
                    key.key,
                    algorithms=["RS256"],
                    audience=self.settings.jwt_audience,
                    issuer=self.settings.jwt_issuer,
                    options={"require": ["exp", "sub"]},
                )
            else:
                claims = jwt.decode(
                    token,
                    self.settings.jwt_secret,
                    algorithms=["HS256"],
                    audience=self.settings.jwt_audience,
                    issuer=self.settings.jwt_issuer,
                    options={"require": ["exp", "sub"]},
                )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid bearer token: {exc}") from None
        roles = claims.get("roles", [])
        if isinstance(roles, str):
            roles = [roles]
        principal = Principal(
            str(claims["sub"]), frozenset(r for r in roles if r in ROLES), claims.get("team")
        )
        return principal, float(claims["exp"])


def mint_token(
    secret: str, user: str, roles: list[str], *, team: str | None = None, ttl: int = 12 * 3600
) -> str:
    unknown = set(roles) - ROLES
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}; choose from {sorted(ROLES)}")
    now = int(time.time())
    claims: dict[str, Any] = {"sub": user, "roles": roles, "iat": now, "exp": now + ttl}
    if team:
        claims["team"] = team
    return jwt.encode(claims, secret, algorithm="HS256")


class _BearerUser(HTTPBearer):
    """The caller of a request, from its bearer token; with ``roles``, one of them is required.

    One dependency, not two (a plain HTTPBearer under a checking function): FastAPI resolves each
    dependency level on every request. Being an HTTPBearer, it still documents the scheme in
    OpenAPI (named ``HTTPBearer``, as before).
    """

    def __init__(self, roles: tuple[str, ...] | None = None) -> None:
        super().__init__(auto_error=False, scheme_name="HTTPBearer")
        self.roles = roles
        self.needed = f"needs one of the roles: {', '.join(sorted({'admin', *(roles or ())}))}"

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        user = await current_user(request)
        if self.roles is not None and not user.has(*self.roles):
            raise Forbidden(self.needed)
        return user


async def current_user(request: Request) -> Principal:
    """The authenticated caller (401 without a valid bearer token)."""
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    token = token.strip()
    if not token or scheme.lower() != "bearer":
        raise Unauthorized("a bearer token is required")
    auth: Authenticator = request.app.state.ctx.auth
    return await auth.authenticate(token)


CurrentUser = Annotated[Principal, Depends(_BearerUser())]


def require(*roles: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that admits admins and callers holding any of ``roles``."""
    return _BearerUser(roles)
