"""Command handlers of the audience: attributes, consent, push devices (one transaction each)."""

from __future__ import annotations

from typing import Any, Literal

from crm_marketing.audience import consent_mail
from crm_marketing.audience.domain import Profile
from crm_marketing.audience.profiles import Profiles, canonical, lock, new_request_id
from crm_runtime.db import Conn
from crm_runtime.errors import DomainError, NotFound
from crm_runtime.eventstore import EventStore, Metadata
from crm_runtime.repository import check_version

Platform = Literal["ios", "android", "web"]


class AudienceCommands:
    def __init__(self, store: EventStore) -> None:
        self.profiles = Profiles(store)

    async def update_attributes(
        self,
        conn: Conn,
        customer_id: str,
        values: dict[str, Any],
        meta: Metadata,
        *,
        expected_version: int | None = None,
    ) -> Profile:
        profile = await self.profiles.load_active(conn, customer_id)
        check_version(expected_version, profile.version)
        profile.update("api", values)
        await self.profiles.save(conn, profile, meta)
        return profile

    async def upsert_person(
        self, conn: Conn, customer_id: str, values: dict[str, Any], meta: Metadata
    ) -> Profile:
        """A person told us about themselves (a form): start the profile or fill it in.

        Anyone can submit a form with anyone's address, so for a known person the form's values
        only fill empty fields: they never overwrite a name, phone number or e-mail address.
        """
        cid = await canonical(conn, customer_id)
        await lock(conn, cid)
        profile = await self.profiles.get(conn, cid)
        if not profile.exists:
            profile = Profile.start(cid, "form", values)
        else:
            profile.update("form", {k: v for k, v in values.items() if v}, only_empty=True)
        await self.profiles.save(conn, profile, meta)
        return profile

    async def request_email_consent(
        self, conn: Conn, customer_id: str, source: str | None, meta: Metadata
    ) -> str | None:
        """Start double opt-in; queues the confirmation mail. None if already confirmed.

        consent_mail.TooManyConfirmations (nothing recorded) if the address had its hourly
        share of confirmation mails: the earlier, still pending links stay valid.
        """
        profile = await self.profiles.load_active(conn, customer_id)
        email = profile.values.get("email")
        if email and not profile.email_consented():
            await consent_mail.check_cap(conn, email.strip().lower())
        request_id = new_request_id()
        if not profile.request_email_consent(request_id, source):
            return None
        await self.profiles.save(conn, profile, meta)
        address = profile.consents["email"].address
        assert address is not None
        await consent_mail.queue(conn, request_id, profile.id, address)
        return request_id

    async def confirm_email_consent(
        self, conn: Conn, claims: consent_mail.LinkClaims, meta: Metadata
    ) -> bool:
        """The link was followed: granted. DomainError if the link is no longer valid."""
        try:
            profile = await self.profiles.load_active(conn, claims.customer_id)
        except NotFound:
            raise DomainError("this confirmation link is no longer valid") from None
        changed = profile.confirm_email_consent(claims.request_id)
        await self.profiles.save(conn, profile, meta)
        return changed

    async def opt_in(
        self,
        conn: Conn,
        customer_id: str,
        channel: Literal["email", "sms", "push"],
        source: str | None,
        meta: Metadata,
        *,
        phone: str | None = None,
    ) -> Profile:
        """Opt-in; for SMS for ``phone`` if given (nothing if it is not the profile's number)."""
        profile = await self.profiles.load_active(conn, customer_id)
        profile.opt_in(channel, source, phone=phone)
        await self.profiles.save(conn, profile, meta)
        return profile

    async def withdraw(
        self,
        conn: Conn,
        customer_id: str,
        channel: Literal["email", "sms", "push"],
        reason: str,
        source: str | None,
        meta: Metadata,
    ) -> Profile:
        profile = await self.profiles.load_active(conn, customer_id)
        profile.withdraw(channel, reason, source)
        await self.profiles.save(conn, profile, meta)
        return profile

    async def register_device(
        self, conn: Conn, customer_id: str, token: str, platform: Platform, meta: Metadata
    ) -> Profile:
        profile = await self.profiles.load_active(conn, customer_id)
        profile.register_device(token, platform)
        await self.profiles.save(conn, profile, meta)
        return profile

    async def unregister_device(
        self, conn: Conn, customer_id: str, token: str, reason: str | None, meta: Metadata
    ) -> Profile:
        profile = await self.profiles.load_active(conn, customer_id)
        if not profile.unregister_device(token, reason):
            raise NotFound("this push device is not registered for the customer")
        await self.profiles.save(conn, profile, meta)
        return profile
