"""The Account aggregate: a company the business sells to, with a tier."""

from __future__ import annotations

from crm_events.schemas.sales import (
    AccountCreated,
    AccountDetails,
    AccountMerged,
    AccountMergedInto,
    AccountMergeUndone,
    AccountReassigned,
    AccountUpdated,
)
from crm_runtime.aggregate import applies
from crm_runtime.errors import DomainError
from crm_sales.domain.party import Party


def normalise_domain(domain: str) -> str:
    """``https://www.Example.com/about`` -> ``example.com``."""
    d = domain.strip().lower()
    for prefix in ("https://", "http://"):
        d = d.removeprefix(prefix)
    d = d.split("/", 1)[0].split(":", 1)[0]
    return d.removeprefix("www.")


class Account(Party):
    stream_type = "account"
    kind = "account"

    @property
    def name(self) -> str:
        return str(self.details.get("name") or "")

    @property
    def tier(self) -> str:
        return str(self.details.get("tier") or "standard")

    @classmethod
    def create(
        cls,
        account_id: str,
        customer_id: str,
        details: AccountDetails,
        *,
        owner_id: str | None = None,
        team_id: str | None = None,
        lead_id: str | None = None,
    ) -> Account:
        if not details.name:
            raise DomainError("an account needs a name")
        update: dict[str, object] = {"tier": details.tier or "standard"}
        if details.domain:
            update["domain"] = normalise_domain(details.domain)
        account = cls(account_id)
        account.record(
            AccountCreated(
                account_id=account_id,
                customer_id=customer_id,
                details=details.model_copy(update=update),
                owner_id=owner_id,
                team_id=team_id,
                lead_id=lead_id,
            )
        )
        return account

    def update(self, values: AccountDetails, fields: list[str]) -> list[str]:
        self.ensure_active()
        if "name" in fields and not values.name:
            raise DomainError("an account needs a name")
        if "domain" in fields and values.domain:
            values = values.model_copy(update={"domain": normalise_domain(values.domain)})
        if "tier" in fields and values.tier is None:
            values = values.model_copy(update={"tier": "standard"})
        changed = self.changes_to(values.model_dump(mode="json"), fields)
        if changed:
            self.record(AccountUpdated(account_id=self.id, changed=changed, values=values))
        return changed

    def reassign(self, owner_id: str | None, team_id: str | None) -> None:
        self.ensure_active()
        if (owner_id, team_id) != (self.owner_id, self.team_id):
            self.record(AccountReassigned(account_id=self.id, owner_id=owner_id, team_id=team_id))

    def merge(self, other: Account, merge_id: str) -> None:
        absorbed = self.absorption(other)
        self.record(
            AccountMerged(
                account_id=self.id,
                customer_id=self.customer_id,
                merged_id=other.id,
                merged_customer_id=other.customer_id,
                merge_id=merge_id,
                absorbed=AccountDetails.model_validate(absorbed),
                absorbed_fields=sorted(absorbed),
            )
        )
        other.record(
            AccountMergedInto(
                account_id=other.id,
                survivor_id=self.id,
                survivor_customer_id=self.customer_id,
                merge_id=merge_id,
            )
        )

    def undo_merge(self, merged: Account, merge_id: str) -> None:
        merged_id = self.undo_check(merge_id)
        if merged.id != merged_id or merged.merged_by != merge_id:
            raise DomainError(f"account {merged.id} was not merged by {merge_id}")
        for record in (self, merged):
            record.record(
                AccountMergeUndone(
                    account_id=record.id,
                    merge_id=merge_id,
                    survivor_id=self.id,
                    survivor_customer_id=self.customer_id,
                    merged_id=merged.id,
                    merged_customer_id=merged.customer_id,
                )
            )

    @applies(AccountCreated)
    def _created(self, e: AccountCreated) -> None:
        self.subject = e.customer_id
        self.customer_id = e.customer_id
        self.details = e.details.model_dump(mode="json")
        self.owner_id = e.owner_id
        self.team_id = e.team_id
        self.lead_id = e.lead_id

    @applies(AccountUpdated)
    def _updated(self, e: AccountUpdated) -> None:
        self._set(e.values.model_dump(mode="json"), e.changed)

    @applies(AccountReassigned)
    def _reassigned(self, e: AccountReassigned) -> None:
        self.owner_id = e.owner_id
        self.team_id = e.team_id

    @applies(AccountMerged)
    def _merged(self, e: AccountMerged) -> None:
        absorbed = e.absorbed.model_dump(mode="json")
        self._absorb(e.merge_id, e.merged_id, {f: absorbed[f] for f in e.absorbed_fields})

    @applies(AccountMergedInto)
    def _merged_into(self, e: AccountMergedInto) -> None:
        self._merged_away(e.survivor_id, e.merge_id)

    @applies(AccountMergeUndone)
    def _merge_undone(self, e: AccountMergeUndone) -> None:
        if e.account_id == e.survivor_id:
            self._unabsorb(e.merge_id)
        else:
            self._restored()
