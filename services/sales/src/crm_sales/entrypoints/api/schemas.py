"""Request and response bodies of the sales API (kept apart from the domain objects)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    HttpUrl,
    StrictBool,
    StrictInt,
    model_validator,
)

from crm_events.schemas.sales import AccountDetails, AccountTier, ContactDetails, LeadSource
from crm_runtime.http.inputs import ClientDate, Name, NotBlank, Tag
from crm_sales.domain.lead import Lead, LeadStatus
from crm_sales.entrypoints.api.inputs import Currency, Reason


class LeadCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "Ada Lovelace",
                    "email": "ada@example.com",
                    "company": "Analytical Engines Ltd",
                    "source": "web_form",
                    "source_detail": "form:contact-us",
                }
            ]
        },
    )

    name: Name
    email: EmailStr | None = None
    phone: str | None = Field(default=None, max_length=40, pattern=r"^\+?[0-9 ()./-]{3,40}$")
    company: Name | None = Field(default=None, description="becomes the account's name")
    source: LeadSource = "manual"
    source_detail: str | None = Field(default=None, max_length=200)
    owner_id: str | None = Field(
        default=None,
        max_length=100,
        description="a rep's own leads are its own; a manager's without owner are routed by "
        "the assignment rules",
    )
    region: str | None = Field(default=None, max_length=100, description="for routing")
    product_line: str | None = Field(default=None, max_length=100, description="for routing")


class LeadAssign(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"owner_id": "bob"}]})

    owner_id: str | None = Field(max_length=100, description="null puts it back in the queue")
    team_id: str | None = Field(default=None, max_length=100)


class LeadQualify(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"score": 80}]})

    score: int = Field(ge=0, le=100)
    notes: str | None = Field(default=None, max_length=5000)


class LeadDisqualify(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"reason": "No budget this year"}]}
    )

    reason: Reason


class LeadPublic(BaseModel):
    id: str
    customer_id: str
    name: str
    email: str | None
    phone: str | None = None
    company: str | None
    source: LeadSource
    source_detail: str | None = None
    status: LeadStatus
    score: int | None
    owner_id: str | None
    team_id: str | None = None
    region: str | None = None
    product_line: str | None = None
    attribution: dict[str, str] | None = Field(
        default=None, description="utm_source, utm_medium, utm_campaign… of a web lead"
    )
    version: int

    @classmethod
    def of(cls, lead: Lead) -> LeadPublic:
        return cls(
            id=lead.id,
            customer_id=lead.customer_id,
            name=lead.name,
            email=lead.email,
            phone=lead.phone,
            company=lead.company,
            source=lead.source,
            source_detail=lead.source_detail,
            status=lead.status,
            score=lead.score,
            owner_id=lead.owner_id,
            team_id=lead.team_id,
            region=lead.region,
            product_line=lead.product_line,
            attribution=lead.attribution,
            version=lead.version,
        )


class LeadSummary(BaseModel):
    id: str
    customer_id: str
    name: str
    email: str | None
    company: str | None
    source: str
    status: str
    score: int | None
    owner_id: str | None
    team_id: str | None = None
    region: str | None = None
    product_line: str | None = None
    version: int
    created_at: datetime
    updated_at: datetime


class HistoryEntry(BaseModel):
    version: int
    event_id: str
    type: str
    schema_version: int
    occurred_at: datetime
    recorded_at: datetime
    actor: str | None
    correlation_id: str | None
    data: dict[str, Any]


# --- contacts and accounts ------------------------------------------------------------------

Phone = Annotated[str, Field(max_length=40, pattern=r"^\+?[0-9 ()./-]{3,40}$")]
CustomKey = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,49}$")]
ShortText = Name
CustomFields = dict[
    CustomKey, StrictBool | StrictInt | float | Annotated[str, Field(max_length=2000)]
]


class AddressIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    street: str | None = Field(default=None, max_length=300)
    city: str | None = Field(default=None, max_length=100)
    region: str | None = Field(default=None, max_length=100)
    postal_code: str | None = Field(default=None, max_length=20)
    country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$", description="ISO 3166-1")


class ContactFields(BaseModel):
    """Every changeable contact field; on PATCH only the fields you send change (null clears)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"title": "CEO", "tags": ["vip", "board"], "phones": None}]
        },
    )

    first_name: ShortText | None = None
    last_name: ShortText | None = None
    emails: list[EmailStr] | None = Field(default=None, max_length=10)
    phones: list[Phone] | None = Field(default=None, max_length=10)
    title: ShortText | None = None
    account_id: str | None = Field(default=None, max_length=100)
    address: AddressIn | None = None
    region: ShortText | None = None
    industry: ShortText | None = None
    social_profiles: list[HttpUrl] | None = Field(default=None, max_length=10)
    tags: list[Tag] | None = Field(default=None, max_length=50)
    custom_fields: CustomFields | None = None

    def details(self) -> ContactDetails:
        return ContactDetails.model_validate(self.model_dump(mode="json"))


class ContactCreate(ContactFields):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "first_name": "Ada",
                    "last_name": "Lovelace",
                    "emails": ["ada@example.com"],
                    "phones": ["+44 20 7946 0000"],
                    "title": "CTO",
                    "region": "EMEA",
                    "tags": ["vip"],
                    "social_profiles": ["https://www.linkedin.com/in/ada"],
                    "custom_fields": {"newsletter": True, "employees": 12},
                }
            ]
        },
    )

    last_name: ShortText
    owner_id: str | None = Field(default=None, max_length=100)

    @model_validator(mode="before")
    @classmethod
    def _single_email_and_phone(cls, data: Any) -> Any:
        """Accept ``email`` / ``phone`` (as on leads) as the first of ``emails`` / ``phones``."""
        if isinstance(data, dict):
            data = dict(data)
            for one, many in (("email", "emails"), ("phone", "phones")):
                if one in data:
                    value = data.pop(one)
                    rest = data.get(many) or []
                    data[many] = ([value] if value is not None else []) + list(rest)
        return data


class AccountFields(BaseModel):
    """Every changeable account field; on PATCH only the fields you send change (null clears)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"tier": "top", "industry": "Retail"}]}
    )

    name: ShortText | None = None
    domain: str | None = Field(
        default=None, max_length=253, pattern=r"^(https?://)?[A-Za-z0-9.-]+\.[A-Za-z]{2,}(/.*)?$"
    )
    website: HttpUrl | None = None
    phones: list[Phone] | None = Field(default=None, max_length=10)
    industry: ShortText | None = None
    region: ShortText | None = None
    tier: AccountTier | None = Field(default=None, description="top customers get reminders")
    address: AddressIn | None = None
    social_profiles: list[HttpUrl] | None = Field(default=None, max_length=10)
    tags: list[Tag] | None = Field(default=None, max_length=50)
    custom_fields: CustomFields | None = None

    def details(self) -> AccountDetails:
        return AccountDetails.model_validate(self.model_dump(mode="json"))


class AccountCreate(AccountFields):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "Analytical Engines Ltd",
                    "domain": "analytical-engines.example",
                    "industry": "Manufacturing",
                    "region": "EMEA",
                    "tier": "top",
                }
            ]
        },
    )

    name: ShortText
    owner_id: str | None = Field(default=None, max_length=100)


class Reassign(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"owner_id": "bob"}]})

    owner_id: str | None = Field(max_length=100)
    team_id: str | None = Field(default=None, max_length=100)


class MergeRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"merged_id": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"}]},
    )

    merged_id: str = Field(description="the record that is merged into the one in the path")


class PartyPublic(BaseModel):
    id: str
    customer_id: str
    owner_id: str | None
    team_id: str | None
    merged_into: str | None = Field(description="set when this record was merged away")
    active_merges: list[str] = Field(description="merge ids that can be undone")
    version: int


Scalar = StrictBool | StrictInt | float | str


class ContactPublic(PartyPublic):
    """A contact as stored (no input limits: a merge may hold more than one request may send)."""

    model_config = ConfigDict(extra="ignore")

    first_name: str | None = None
    last_name: str | None = None
    emails: list[str] | None = None
    phones: list[str] | None = None
    title: str | None = None
    account_id: str | None = None
    address: dict[str, str | None] | None = None
    region: str | None = None
    industry: str | None = None
    social_profiles: list[str] | None = None
    tags: list[str] | None = None
    custom_fields: dict[str, Scalar] | None = None
    display_name: str
    lead_id: str | None


class AccountPublic(PartyPublic):
    """An account as stored."""

    model_config = ConfigDict(extra="ignore")

    name: str | None = None
    domain: str | None = None
    website: str | None = None
    phones: list[str] | None = None
    industry: str | None = None
    region: str | None = None
    tier: AccountTier | None = None
    address: dict[str, str | None] | None = None
    social_profiles: list[str] | None = None
    tags: list[str] | None = None
    custom_fields: dict[str, Scalar] | None = None
    lead_id: str | None


class MergeResult(BaseModel):
    merge_id: str
    survivor: dict[str, Any]


class UndoResult(BaseModel):
    survivor: dict[str, Any]
    restored: dict[str, Any]


# --- pipelines, deals, exchange rates -------------------------------------------------------

StageName = Annotated[str, Field(min_length=1, max_length=100), NotBlank]


class StageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")
    name: StageName
    probability: int = Field(ge=0, le=100)
    outcome: Literal["open", "won", "lost"] = "open"


class PipelineCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "Self-serve",
                    "stages": [
                        {"key": "new", "name": "New", "probability": 20},
                        {"key": "trial", "name": "Trial", "probability": 50},
                        {"key": "won", "name": "Won", "probability": 100, "outcome": "won"},
                        {"key": "lost", "name": "Lost", "probability": 0, "outcome": "lost"},
                    ],
                }
            ]
        },
    )

    name: StageName
    stages: list[StageIn] = Field(min_length=2, max_length=30)


class PipelineStages(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "stages": [
                        {"key": "new", "name": "New", "probability": 20},
                        {"key": "trial", "name": "Trial", "probability": 50},
                        {"key": "won", "name": "Won", "probability": 100, "outcome": "won"},
                        {"key": "lost", "name": "Lost", "probability": 0, "outcome": "lost"},
                    ]
                }
            ]
        },
    )

    stages: list[StageIn] = Field(min_length=2, max_length=30)


class StageOut(BaseModel):
    """A stage as stored (see :class:`LineOut`)."""

    key: str
    name: str
    probability: int
    outcome: Literal["open", "won", "lost"] = "open"


class PipelinePublic(BaseModel):
    id: str
    name: str
    stages: list[StageOut]
    version: int


class BoardColumn(BaseModel):
    stage: str
    name: str
    probability: int
    outcome: str
    deals: int
    amount_base_minor: int
    weighted_base_minor: int


class Board(BaseModel):
    pipeline_id: str
    base_currency: str
    columns: list[BoardColumn]


class LineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    product_id: str | None = Field(
        default=None, max_length=100, description="a product of the price book"
    )
    name: Name | None = Field(default=None, description="default: the product's name")
    quantity: int = Field(ge=1, le=1_000_000)
    unit_price_minor: int | None = Field(
        default=None,
        ge=0,
        le=10**11,
        description="default: the product's price in the deal currency (at most 10^11)",
    )


class LineOut(BaseModel):
    """A deal line as stored (the input rules of :class:`LineIn` do not apply on the way out:
    a record kept before a rule was added still reads)."""

    product_id: str | None = None
    name: str | None = None
    quantity: int
    unit_price_minor: int | None = None


class DealCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "Analytical Engines — 40 seats",
                    "contact_id": "6c1f…",
                    "amount_minor": 4800000,
                    "currency": "EUR",
                    "expected_close": "2027-03-31",
                }
            ]
        },
    )

    name: Name
    contact_id: str | None = None
    account_id: str | None = None
    amount_minor: int = Field(
        default=0, ge=0, le=10**15, description="in the currency's minor unit (at most 10^15)"
    )
    currency: Currency
    expected_close: ClientDate | None = None
    lines: list[LineIn] = Field(default_factory=list, max_length=200)
    pipeline_id: str | None = Field(default=None, description="default pipeline if omitted")
    stage: str | None = Field(default=None, description="first open stage if omitted")
    owner_id: str | None = Field(
        default=None,
        max_length=100,
        description="a rep's deals are its own; a manager's without owner are routed",
    )
    product_line: str | None = Field(default=None, max_length=100, description="for routing")


class DealTerms(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"amount_minor": 5500000, "expected_close": "2027-04-30"}]},
    )

    name: Name | None = None
    amount_minor: int | None = Field(default=None, ge=0, le=10**15)
    currency: Currency | None = None
    expected_close: ClientDate | None = None
    lines: list[LineIn] | None = None


class StageMove(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"stage": "demo"}, {"stage": "lost", "reason": "budget"}]},
    )

    stage: str = Field(min_length=1, max_length=40)
    reason: str | None = Field(default=None, max_length=1000)


class StageSpanOut(BaseModel):
    stage: str
    entered_at: datetime
    left_at: datetime | None
    seconds: float


class DealPublic(BaseModel):
    id: str
    customer_id: str
    name: str
    pipeline_id: str
    stage: str
    status: str
    probability: int
    amount_minor: int
    currency: str
    base_currency: str
    exchange_rate: str
    expected_close: date | None
    owner_id: str | None
    team_id: str | None
    account_id: str | None
    contact_id: str | None
    lead_id: str | None
    source: str | None
    lines: list[LineOut]
    close_reason: str | None
    stage_history: list[StageSpanOut] | None = Field(
        default=None, description="time in each stage; on GET /deals/{id} (not on commands)"
    )
    version: int


class RateIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"rate": "0.92"}]})

    rate: Decimal = Field(gt=0, max_digits=18, decimal_places=10, description="1 unit in base")


class ConvertDeal(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    amount_minor: int = Field(default=0, ge=0, le=10**15)
    currency: Currency
    pipeline_id: str | None = None
    stage: str | None = None
    expected_close: ClientDate | None = None


class LeadConvert(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "account_domain": "analytical-engines.example",
                    "deal": {"amount_minor": 1200000, "currency": "EUR"},
                }
            ]
        },
    )

    contact_id: str | None = Field(default=None, description="attach to an existing contact")
    account_id: str | None = Field(default=None, description="attach to an existing account")
    account_name: Name | None = None
    account_domain: str | None = Field(default=None, max_length=253)
    create_account: bool = Field(default=True, description="create an account from the company")
    deal: ConvertDeal | None = None
    owner_id: str | None = Field(default=None, max_length=100)


class ConversionOut(BaseModel):
    lead_id: str
    customer_id: str
    contact_id: str
    account_id: str | None
    deal_id: str | None
