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
from crm_sales.domain.party import Party


def normalise_email(email: str) -> str:
    return email.strip().lower()


class Contact(Party):
    stream_type = "contact"
    kind = "contact"

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

    def reassign(self, owner_id: str | None, team_id: str | None) -> None:
        self.ensure_active()
        if (owner_id, team_id) != (self.owner_id, self.team_id):
            self.record(ContactReassigned(contact_id=self.id, owner_id=owner_id, team_id=team_id))

    def merge(self, other: Contact, merge_id: str) -> None:
        """Take ``other`` in: this records the merge, ``other`` records that it points here."""
        absorbed = self.absorption(other)
        self.record(
            ContactMerged(
                contact_id=self.id,
                customer_id=self.customer_id,
                merged_id=other.id,
                merged_customer_id=other.customer_id,
                merge_id=merge_id,
                absorbed=ContactDetails.model_validate(absorbed),
                absorbed_fields=sorted(absorbed),
            )
        )
        other.record(
            ContactMergedInto(
                contact_id=other.id,
                survivor_id=self.id,
                survivor_customer_id=self.customer_id,
                merge_id=merge_id,
            )
        )

    def undo_merge(self, merged: Contact, merge_id: str) -> None:
        merged_id = self.undo_check(merge_id)
        if merged.id != merged_id or merged.merged_by != merge_id:
            raise DomainError(f"contact {merged.id} was not merged by {merge_id}")
        for record in (self, merged):
            record.record(
                ContactMergeUndone(
                    contact_id=record.id,
                    merge_id=merge_id,
                    survivor_id=self.id,
                    survivor_customer_id=self.customer_id,
                    merged_id=merged.id,
                    merged_customer_id=merged.customer_id,
                )
            )

    @applies(ContactCreated)
    def _created(self, e: ContactCreated) -> None:
        self.subject = e.customer_id
        self.customer_id = e.customer_id
        self.details = e.details.model_dump(mode="json")
        self.owner_id = e.owner_id
        self.team_id = e.team_id
        self.lead_id = e.lead_id

    @applies(ContactUpdated)
    def _updated(self, e: ContactUpdated) -> None:
        self._set(e.values.model_dump(mode="json"), e.changed)

    @applies(ContactReassigned)
    def _reassigned(self, e: ContactReassigned) -> None:
        self.owner_id = e.owner_id
        self.team_id = e.team_id

    @applies(ContactMerged)
    def _merged(self, e: ContactMerged) -> None:
        absorbed = e.absorbed.model_dump(mode="json")
        self._absorb(e.merge_id, e.merged_id, {f: absorbed[f] for f in e.absorbed_fields})

    @applies(ContactMergedInto)
    def _merged_into(self, e: ContactMergedInto) -> None:
        self._merged_away(e.survivor_id, e.merge_id)

    @applies(ContactMergeUndone)
    def _merge_undone(self, e: ContactMergeUndone) -> None:
        if e.contact_id == e.survivor_id:
            self._unabsorb(e.merge_id)
        else:
            self._restored()


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
