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
from crm_sales.domain.party import Party, PartyEvents


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
    events = PartyEvents(
        details=AccountDetails,
        updated=AccountUpdated,
        reassigned=AccountReassigned,
        merged=AccountMerged,
        merged_into=AccountMergedInto,
        merge_undone=AccountMergeUndone,
    )

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

    @applies(AccountCreated)
    def _created(self, e: AccountCreated) -> None:
        self.subject = e.customer_id
        self.customer_id = e.customer_id
        self.details = e.details.model_dump(mode="json")
        self.owner_id = e.owner_id
        self.team_id = e.team_id
        self.lead_id = e.lead_id
