"""Event payloads of the marketing context's audience and website part (``crm.marketing.*``).

Profiles, consent per channel, push devices and purchases have the customer id as subject (the
stream is ``profile-<customer id>``). Site keys and forms have no subject. Website activity is
anonymous (subject none) until its visitor is identified; the visitor id is a random id the
site's script made, not personal data. Client IP addresses never appear in any event.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from crm_events.registry import EventPayload, event_type

Channel = Literal["email", "sms", "push"]
ProfileSource = Literal["sales", "form", "api"]
ProfileAttribute = Literal[
    "email",
    "phone",
    "first_name",
    "last_name",
    "company",
    "country",
    "city",
    "language",
    "age_band",
    "industry",
    "company_size",
    "timezone",
]


class ProfileValues(EventPayload):
    """Values of a profile's attributes; an event sets those it names in ``changed``."""

    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    company: str | None = None
    country: str | None = Field(default=None, description="ISO 3166-1 alpha-2")
    city: str | None = None
    language: str | None = Field(default=None, description="BCP 47 language tag, e.g. de or pt-BR")
    age_band: str | None = Field(default=None, description="e.g. 25-34")
    industry: str | None = None
    company_size: str | None = Field(default=None, description="e.g. 11-50")
    timezone: str | None = Field(default=None, description="IANA zone, e.g. Europe/Berlin")


class ConsentState(EventPayload):
    """A channel's consent as it stood (folded into a survivor on a merge)."""

    channel: Channel
    status: Literal["pending", "granted", "withdrawn"]
    address: str | None = None


class PushDevice(EventPayload):
    token: str = Field(min_length=1, max_length=4096)
    platform: Literal["ios", "android", "web"]


# --- profiles -----------------------------------------------------------------------------------


@event_type("crm.marketing.profile.created", version=1)
class ProfileCreated(EventPayload):
    """Marketing started a profile of a customer (from sales' events, a form or the API)."""

    customer_id: str
    source: ProfileSource
    values: ProfileValues


@event_type("crm.marketing.profile.updated", version=1)
class ProfileUpdated(EventPayload):
    """Attributes of the profile changed (contact data from sales, or marketing's own)."""

    customer_id: str
    source: ProfileSource
    changed: list[ProfileAttribute] = Field(min_length=1)
    values: ProfileValues = Field(description="the new values of the `changed` attributes")


@event_type("crm.marketing.profile.merged", version=1)
class ProfileMerged(EventPayload):
    """Another customer's profile was folded into this one (a merge, or an identification)."""

    customer_id: str
    merged_customer_id: str
    link_id: str = Field(description="the sales merge id, lead:<id> or identified:<alias>")
    folded: list[ProfileAttribute] = Field(description="attributes taken over (empty here)")
    values: ProfileValues
    consents: list[ConsentState] = Field(description="channels taken over (none here)")
    devices: list[PushDevice] = []


@event_type("crm.marketing.profile.merged_into", version=1)
class ProfileMergedInto(EventPayload):
    """This profile was folded into the survivor's; its id now stands for the survivor."""

    customer_id: str
    survivor_customer_id: str
    link_id: str


@event_type("crm.marketing.profile.restored", version=1)
class ProfileRestored(EventPayload):
    """A merge was undone in sales: the merged profile stands on its own again."""

    customer_id: str
    survivor_customer_id: str
    link_id: str


# --- consent and devices ------------------------------------------------------------------------


@event_type("crm.marketing.consent.requested", version=1)
class ConsentRequested(EventPayload):
    """E-mail double opt-in started: a confirmation mail with a signed link went out."""

    customer_id: str
    channel: Literal["email"]
    request_id: str
    address: str
    source: str | None = Field(default=None, description="form:<id>, api")


@event_type("crm.marketing.consent.granted", version=1, public=True)
class ConsentGranted(EventPayload):
    """The customer agreed to messages over the channel."""

    customer_id: str
    channel: Channel
    method: Literal["double_opt_in", "opt_in"]
    request_id: str | None = None
    address: str | None = Field(
        default=None,
        description="what the consent is for: the confirmed e-mail address, or the SMS number",
    )
    source: str | None = None


@event_type("crm.marketing.consent.withdrawn", version=1, public=True)
class ConsentWithdrawn(EventPayload):
    """The customer withdrew consent for the channel (or a pending request was cancelled)."""

    customer_id: str
    channel: Channel
    reason: str = Field(min_length=1, max_length=200, description="unsubscribe_link, api, …")
    source: str | None = None


@event_type("crm.marketing.push_device.registered", version=1)
class PushDeviceRegistered(EventPayload):
    """A device token for push messages was registered for the customer."""

    customer_id: str
    token: str = Field(min_length=1, max_length=4096)
    platform: Literal["ios", "android", "web"]


@event_type("crm.marketing.push_device.unregistered", version=1)
class PushDeviceUnregistered(EventPayload):
    """A device token was removed (by the app, or the provider reported it invalid)."""

    customer_id: str
    token: str
    reason: str | None = None


@event_type("crm.marketing.purchase.recorded", version=1)
class PurchaseRecorded(EventPayload):
    """A product the customer bought (a won deal's line, or a paid invoice's line)."""

    customer_id: str
    purchase_id: str
    source: Literal["deal", "invoice"]
    source_id: str = Field(description="the deal or invoice id")
    deal_id: str | None = Field(default=None, description="the deal it was sold in")
    product_id: str
    product_name: str | None = None
    category: str | None = None
    amount_minor: int | None = Field(default=None, ge=0)
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    occurred_at: datetime


# --- site keys and forms ------------------------------------------------------------------------


@event_type("crm.marketing.site_key.created", version=1)
class SiteKeyCreated(EventPayload):
    """A website may now post forms and activity with this (public) key."""

    site_key_id: str
    name: str = Field(min_length=1, max_length=200)
    allowed_origins: list[str] = Field(min_length=1)
    rate_limit_per_minute: int = Field(ge=1)


@event_type("crm.marketing.site_key.updated", version=1)
class SiteKeyUpdated(EventPayload):
    """The site key's name, allowed origins or rate limit changed."""

    site_key_id: str
    changed: list[Literal["name", "allowed_origins", "rate_limit_per_minute"]] = Field(min_length=1)
    name: str | None = None
    allowed_origins: list[str] | None = None
    rate_limit_per_minute: int | None = Field(default=None, ge=1)


@event_type("crm.marketing.site_key.revoked", version=1)
class SiteKeyRevoked(EventPayload):
    """The key no longer admits anything."""

    site_key_id: str
    reason: str | None = None


FormFieldType = Literal["text", "email", "tel", "textarea", "select", "checkbox", "hidden"]


class FormField(EventPayload):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")
    label: str = Field(min_length=1, max_length=200)
    type: FormFieldType = "text"
    required: bool = False
    max_length: int = Field(default=500, ge=1, le=5000)
    choices: list[str] = []
    maps_to: ProfileAttribute | None = Field(
        default=None, description="the profile attribute the answer sets"
    )


class FormConsent(EventPayload):
    field: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$", description="the checkbox's name")
    channel: Literal["email", "sms"]
    label: str = Field(min_length=1, max_length=500)


@event_type("crm.marketing.form.created", version=1)
class FormCreated(EventPayload):
    """A web form was defined: its fields, what they set, its consent checkboxes."""

    form_id: str
    site_key_id: str
    name: str = Field(min_length=1, max_length=200)
    fields: list[FormField] = Field(min_length=1)
    consents: list[FormConsent] = []
    honeypot_field: str = Field(
        default="website", description="a hidden field people leave empty; bots fill it"
    )


@event_type("crm.marketing.form.updated", version=1)
class FormUpdated(EventPayload):
    """The form's name, fields, consent checkboxes or honeypot field changed."""

    form_id: str
    changed: list[Literal["name", "fields", "consents", "honeypot_field"]] = Field(min_length=1)
    name: str | None = None
    fields: list[FormField] | None = None
    consents: list[FormConsent] | None = None
    honeypot_field: str | None = None


@event_type("crm.marketing.form.archived", version=1)
class FormArchived(EventPayload):
    """The form no longer takes submissions."""

    form_id: str


@event_type("crm.marketing.form.submitted", version=1, public=True)
class FormSubmitted(EventPayload):
    """A person submitted a web form (subject: their customer id)."""

    form_id: str
    submission_id: str
    customer_id: str
    new_person: bool = Field(description="nobody knew the address: a provisional id was minted")
    visitor_id: str | None = None
    values: dict[str, str] = Field(description="the answers, by field name")
    consents_requested: list[Literal["email", "sms"]] = []
    attribution: dict[str, str] | None = None


# --- website activity ---------------------------------------------------------------------------


class WebActivity(EventPayload):
    site_key_id: str
    visitor_id: str = Field(description="the site script's random visitor id (not personal data)")
    customer_id: str | None = Field(default=None, description="known once the visitor identified")
    url: str | None = Field(default=None, max_length=2000)


@event_type("crm.marketing.web.page_viewed", version=1)
class PageViewed(WebActivity):
    """A visitor viewed a page of the website."""

    url: str = Field(max_length=2000)
    title: str | None = Field(default=None, max_length=300)


@event_type("crm.marketing.web.product_viewed", version=1)
class ProductViewed(WebActivity):
    """A visitor viewed a product (with its category)."""

    product_id: str = Field(min_length=1, max_length=100)
    category: str | None = Field(default=None, max_length=100)


@event_type("crm.marketing.web.searched", version=1)
class Searched(WebActivity):
    """A visitor searched the website."""

    query: str = Field(min_length=1, max_length=300)


@event_type("crm.marketing.web.added_to_cart", version=1)
class AddedToCart(WebActivity):
    """A visitor put a product in the cart."""

    product_id: str = Field(min_length=1, max_length=100)
    category: str | None = Field(default=None, max_length=100)
    quantity: int = Field(default=1, ge=1, le=10_000)


@event_type("crm.marketing.visitor.identified", version=1)
class VisitorIdentified(EventPayload):
    """An anonymous visitor turned out to be a customer; their earlier activity joins them."""

    visitor_id: str
    customer_id: str
    via: Literal["form", "email_click"]
    joined_activity: int = Field(ge=0, description="earlier anonymous activity now linked")
