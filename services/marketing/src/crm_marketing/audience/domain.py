"""The Profile aggregate: one per customer — contact data, marketing's attributes, consent.

Consent rules (nothing is sent without it):
- e-mail needs double opt-in: a request (pending, a confirmation mail with a signed link goes out)
  and its confirmation with that request's id; a stale or foreign link grants nothing;
- SMS and push are granted by an explicit opt-in; SMS consent is for the phone number it was
  given for (``address``, digits and ``+`` only) and counts only while the profile has that number;
- any channel can be withdrawn; a withdrawn channel is granted again only by a new opt-in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, get_args

from crm_events.schemas.marketing import (
    Channel,
    ConsentGranted,
    ConsentRequested,
    ConsentState,
    ConsentWithdrawn,
    ProfileAttribute,
    ProfileCreated,
    ProfileMerged,
    ProfileMergedInto,
    ProfileRestored,
    ProfileSource,
    ProfileUpdated,
    ProfileValues,
    PurchaseRecorded,
    PushDevice,
    PushDeviceRegistered,
    PushDeviceUnregistered,
)
from crm_runtime.aggregate import Aggregate, applies
from crm_runtime.errors import DomainError

ATTRIBUTES: tuple[ProfileAttribute, ...] = get_args(ProfileAttribute)
CHANNELS: tuple[Channel, ...] = get_args(Channel)
# What marketers set themselves (the rest comes from sales or the person, via forms).
MARKETING_ATTRIBUTES: tuple[ProfileAttribute, ...] = (
    "country",
    "city",
    "language",
    "age_band",
    "industry",
    "company_size",
    "timezone",
)


@dataclass
class Consent:
    status: Literal["pending", "granted", "withdrawn"]
    address: str | None = None
    request_id: str | None = None
    source: str | None = None


def _norm(email: str | None) -> str | None:
    return email.strip().lower() if email else email


def phone_key(phone: str | None) -> str | None:
    """A phone number as SMS consent records it: only its digits and ``+`` (None if none).

    The SQL readers compare ``regexp_replace(profiles.phone, '[^0-9+]', '', 'g')`` with it.
    """
    if not phone:
        return None
    return re.sub(r"[^0-9+]", "", phone) or None


class Profile(Aggregate):
    stream_type = "profile"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.subject = aggregate_id
        self.values: dict[str, str | None] = dict.fromkeys(ATTRIBUTES)
        self.consents: dict[str, Consent] = {}
        self.devices: dict[str, str] = {}  # token -> platform
        self.purchases: set[str] = set()
        self.merged_into: str | None = None

    # --- commands ------------------------------------------------------------------------------

    @classmethod
    def start(cls, customer_id: str, source: ProfileSource, values: dict[str, Any]) -> Profile:
        profile = cls(customer_id)
        clean = _clean(values)
        profile.record(
            ProfileCreated(customer_id=customer_id, source=source, values=ProfileValues(**clean))
        )
        return profile

    def ensure_active(self) -> None:
        if self.merged_into is not None:
            raise DomainError(f"profile {self.id} was merged into {self.merged_into}")

    def update(
        self, source: ProfileSource, values: dict[str, Any], *, only_empty: bool = False
    ) -> list[str]:
        """Set attributes; with ``only_empty`` only those without a value. Returns what changed."""
        self.ensure_active()
        clean = _clean(values)
        changed = [
            k
            for k, v in clean.items()
            if self.values.get(k) != v and not (only_empty and self.values.get(k))
        ]
        if changed:
            self.record(
                ProfileUpdated(
                    customer_id=self.id,
                    source=source,
                    changed=changed,
                    values=ProfileValues(**{k: clean[k] for k in changed}),
                )
            )
        return changed

    def consent(self, channel: str) -> Consent | None:
        return self.consents.get(channel)

    def email_consented(self) -> bool:
        c = self.consents.get("email")
        email = self.values.get("email")
        return (
            c is not None
            and c.status == "granted"
            and email is not None
            and (c.address is None or c.address == _norm(email))
        )

    def sms_consented(self) -> bool:
        """SMS consent is granted for the phone number the profile has now."""
        c = self.consents.get("sms")
        key = phone_key(self.values.get("phone"))
        return c is not None and c.status == "granted" and key is not None and c.address == key

    def request_email_consent(self, request_id: str, source: str | None) -> bool:
        """Start double opt-in for the current address; False if it is already confirmed."""
        self.ensure_active()
        email = self.values.get("email")
        if not email:
            raise DomainError("the profile has no e-mail address to confirm")
        if self.email_consented():
            return False
        self.record(
            ConsentRequested(
                customer_id=self.id,
                channel="email",
                request_id=request_id,
                address=_norm(email) or email,
                source=source,
            )
        )
        return True

    def confirm_email_consent(self, request_id: str) -> bool:
        """The link of the latest pending request was followed: granted. False if already so."""
        self.ensure_active()
        c = self.consents.get("email")
        if c is not None and c.status == "granted" and c.request_id == request_id:
            return False  # the same link twice
        if c is None or c.status != "pending" or c.request_id != request_id:
            raise DomainError("this confirmation link is no longer valid")
        self.record(
            ConsentGranted(
                customer_id=self.id,
                channel="email",
                method="double_opt_in",
                request_id=request_id,
                address=c.address,
                source=c.source,
            )
        )
        return True

    def opt_in(self, channel: Channel, source: str | None, *, phone: str | None = None) -> bool:
        """SMS or push opt-in. E-mail needs double opt-in. False if already granted.

        SMS consent is given for a phone number: ``phone`` (the number the person gave, e.g. on
        a form) or else the profile's. A number that is not the profile's records nothing
        (False): consent never follows a number onto someone else's profile.
        """
        self.ensure_active()
        if channel == "email":
            raise DomainError("e-mail consent needs double opt-in: request a confirmation mail")
        address: str | None = None
        if channel == "sms":
            current = phone_key(self.values.get("phone"))
            if phone is not None and phone_key(phone) != current:
                return False
            if current is None:
                raise DomainError("the profile has no phone number to opt in for SMS")
            if self.sms_consented():
                return False
            address = current
        else:
            c = self.consents.get(channel)
            if c is not None and c.status == "granted":
                return False
        self.record(
            ConsentGranted(
                customer_id=self.id,
                channel=channel,
                method="opt_in",
                address=address,
                source=source,
            )
        )
        return True

    def withdraw(self, channel: Channel, reason: str, source: str | None) -> bool:
        """Withdraw consent (or cancel a pending request). False if there was none."""
        self.ensure_active()
        c = self.consents.get(channel)
        if c is None or c.status == "withdrawn":
            return False
        self.record(
            ConsentWithdrawn(customer_id=self.id, channel=channel, reason=reason, source=source)
        )
        return True

    def register_device(self, token: str, platform: Literal["ios", "android", "web"]) -> bool:
        self.ensure_active()
        if self.devices.get(token) == platform:
            return False
        self.record(PushDeviceRegistered(customer_id=self.id, token=token, platform=platform))
        return True

    def unregister_device(self, token: str, reason: str | None) -> bool:
        self.ensure_active()
        if token not in self.devices:
            return False
        self.record(PushDeviceUnregistered(customer_id=self.id, token=token, reason=reason))
        return True

    def record_purchase(self, purchase: PurchaseRecorded) -> bool:
        if purchase.purchase_id in self.purchases:
            return False
        self.record(purchase.model_copy(update={"customer_id": self.id}))
        return True

    def absorb(self, other: Profile, link_id: str) -> None:
        """Fold ``other`` into this profile: what this one lacks, it takes over."""
        self.ensure_active()
        folded = [k for k in ATTRIBUTES if not self.values.get(k) and other.values.get(k)]
        names = {k: self.values.get(k) or other.values.get(k) for k in ("first_name", "last_name")}
        first, last = ((v or "").strip().casefold() for v in names.values())
        if first and first == last:  # one name twice ("Grace" + "Grace"): it stays as it was
            folded = [k for k in folded if k not in names]
        consents = [
            ConsentState(
                channel=ch,
                status=c.status,
                address=c.address,
            )
            for ch, c in other.consents.items()
            if ch not in self.consents or _newer_grant(c, self.consents[ch])
        ]
        devices = [
            PushDevice(token=t, platform=p)
            for t, p in other.devices.items()
            if t not in self.devices
        ]
        self.record(
            ProfileMerged(
                customer_id=self.id,
                merged_customer_id=other.id,
                link_id=link_id,
                folded=folded,
                values=ProfileValues(**{k: other.values[k] for k in folded}),
                consents=consents,
                devices=devices,
            )
        )

    def fold_into(self, survivor_id: str, link_id: str) -> None:
        self.ensure_active()
        self.record(
            ProfileMergedInto(
                customer_id=self.id, survivor_customer_id=survivor_id, link_id=link_id
            )
        )

    def restore(self, link_id: str) -> bool:
        if self.merged_into is None:
            return False
        self.record(
            ProfileRestored(
                customer_id=self.id, survivor_customer_id=self.merged_into, link_id=link_id
            )
        )
        return True

    # --- mutators ------------------------------------------------------------------------------

    @applies(ProfileCreated)
    def _created(self, e: ProfileCreated) -> None:
        self.values.update(e.values.model_dump())

    @applies(ProfileUpdated)
    def _updated(self, e: ProfileUpdated) -> None:
        dumped = e.values.model_dump()
        for k in e.changed:
            self.values[k] = dumped[k]

    @applies(ProfileMerged)
    def _merged(self, e: ProfileMerged) -> None:
        dumped = e.values.model_dump()
        for k in e.folded:
            self.values[k] = dumped[k]
        for c in e.consents:
            address = c.address
            if c.channel == "sms" and c.status == "granted" and address is None:
                address = phone_key(self.values.get("phone"))  # recorded before numbers were
            self.consents[c.channel] = Consent(
                c.status, address, source=f"merge:{e.merged_customer_id}"
            )
        for d in e.devices:
            self.devices[d.token] = d.platform

    @applies(ProfileMergedInto)
    def _merged_into(self, e: ProfileMergedInto) -> None:
        self.merged_into = e.survivor_customer_id

    @applies(ProfileRestored)
    def _restored(self, e: ProfileRestored) -> None:
        self.merged_into = None

    @applies(ConsentRequested)
    def _requested(self, e: ConsentRequested) -> None:
        self.consents[e.channel] = Consent(
            "pending", e.address, request_id=e.request_id, source=e.source
        )

    @applies(ConsentGranted)
    def _granted(self, e: ConsentGranted) -> None:
        address = e.address
        if e.channel == "sms" and address is None:
            # an SMS grant recorded before grants named their number: the number of the time
            address = phone_key(self.values.get("phone"))
        self.consents[e.channel] = Consent(
            "granted", address, request_id=e.request_id, source=e.source
        )

    @applies(ConsentWithdrawn)
    def _withdrawn(self, e: ConsentWithdrawn) -> None:
        self.consents[e.channel] = Consent("withdrawn", None, source=e.source)

    @applies(PushDeviceRegistered)
    def _device(self, e: PushDeviceRegistered) -> None:
        self.devices[e.token] = e.platform

    @applies(PushDeviceUnregistered)
    def _device_gone(self, e: PushDeviceUnregistered) -> None:
        self.devices.pop(e.token, None)

    @applies(PurchaseRecorded)
    def _purchase(self, e: PurchaseRecorded) -> None:
        self.purchases.add(e.purchase_id)


def _newer_grant(theirs: Consent, ours: Consent) -> bool:
    """A merged profile's consent replaces ours only if ours never granted and theirs is later."""
    return ours.status == "pending" and theirs.status != "pending"


def _clean(values: dict[str, Any]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for k, v in values.items():
        if k not in ATTRIBUTES:
            raise ValueError(f"unknown profile attribute {k!r}")
        text = v.strip() if isinstance(v, str) else v
        text = text or None
        if k == "email" and text:
            text = text.lower()
        if k == "country" and text:
            text = text.upper()
        out[k] = text
    return out
