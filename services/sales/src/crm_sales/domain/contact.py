"""The Contact aggregate: a person the company deals with; sales is its system of record."""

from __future__ import annotations

from crm_events.schemas.sales import (
    ContactCreated,
    ContactDetails,
    ContactMerged,
    ContactMergedInto,
    ContactMergeUndone,
    ContactReassigned,
    ContactUpdated,
)
from crm_runtime.aggregate import applies
from crm_runtime.errors import DomainError
from crm_sales.domain.party import Party, PartyEvents


def normalise_email(email: str) -> str:
    return email.strip().lower()


class Contact(Party):
    stream_type = "contact"
    kind = "contact"
    events = PartyEvents(
        details=ContactDetails,
        updated=ContactUpdated,
        reassigned=ContactReassigned,
        merged=ContactMerged,
        merged_into=ContactMergedInto,
        merge_undone=ContactMergeUndone,
    )

    @property
    def display_name(self) -> str:
        first, last = self.details.get("first_name"), self.details.get("last_name")
        return " ".join(p for p in (first, last) if p)

    @property
    def emails(self) -> list[str]:
        return list(self.details.get("emails") or [])

    @classmethod
    def create(
        cls,
        contact_id: str,
        customer_id: str,
        details: ContactDetails,
        *,
        owner_id: str | None = None,
        team_id: str | None = None,
        lead_id: str | None = None,
    ) -> Contact:
        if not details.last_name:
            raise DomainError("a contact needs a last name")
        clean = details.model_copy(
            update={"emails": _unique([normalise_email(e) for e in details.emails or []])}
        )
        contact = cls(contact_id)
        contact.record(
            ContactCreated(
                contact_id=contact_id,
                customer_id=customer_id,
                details=clean,
                owner_id=owner_id,
                team_id=team_id,
                lead_id=lead_id,
            )
        )
        return contact

    def update(self, values: ContactDetails, fields: list[str]) -> list[str]:
        """Set the named fields; records nothing when nothing differs. Returns what changed."""
        self.ensure_active()
        if "last_name" in fields and not values.last_name:
            raise DomainError("a contact needs a last name")
        if "emails" in fields:
            values = values.model_copy(
                update={"emails": _unique([normalise_email(e) for e in values.emails or []])}
            )
        dumped = values.model_dump(mode="json")
        changed = self.changes_to(dumped, fields)
        if changed:
            self.record(ContactUpdated(contact_id=self.id, changed=changed, values=values))
        return changed

    @applies(ContactCreated)
    def _created(self, e: ContactCreated) -> None:
        self.subject = e.customer_id
        self.customer_id = e.customer_id
        self.details = e.details.model_dump(mode="json")
        self.owner_id = e.owner_id
        self.team_id = e.team_id
        self.lead_id = e.lead_id


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
