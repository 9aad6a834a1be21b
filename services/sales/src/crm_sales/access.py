"""Who may read and change which sales records (issue: a role x endpoint matrix).

- admin: everything.
- sales_manager: reads and changes its team's records (and its own).
- sales_rep: changes what it owns; reads what it owns and its team's.
- marketer, service_agent, analyst: read contacts and accounts only.
"""

from __future__ import annotations

from typing import Literal

from crm_runtime.aggregate import Aggregate
from crm_runtime.errors import Forbidden
from crm_runtime.http.auth import Principal

Kind = Literal["contact", "account", "deal", "lead", "pipeline"]
DIRECTORY: frozenset[str] = frozenset({"contact", "account"})
DIRECTORY_READERS = ("marketer", "service_agent", "analyst")
SALES = ("sales_rep", "sales_manager")


def sees_all(user: Principal, kind: Kind) -> bool:
    if "admin" in user.roles:
        return True
    return kind in DIRECTORY and bool(user.roles.intersection(DIRECTORY_READERS))


def _team_match(user: Principal, team_id: str | None) -> bool:
    return user.team is not None and team_id == user.team


def can_read(user: Principal, kind: Kind, owner_id: str | None, team_id: str | None) -> bool:
    if sees_all(user, kind):
        return True
    if not user.roles.intersection(SALES):
        return False
    if owner_id is None and team_id is None and "sales_manager" in user.roles:
        return True  # unassigned records (the lead queue, imports) are the managers' to hand out
    return owner_id == user.user_id or _team_match(user, team_id)


def can_change(user: Principal, owner_id: str | None, team_id: str | None) -> bool:
    if "admin" in user.roles:
        return True
    if "sales_manager" in user.roles and owner_id is None and team_id is None:
        return True  # unassigned records
    if "sales_manager" in user.roles and (_team_match(user, team_id) or owner_id == user.user_id):
        return True
    return "sales_rep" in user.roles and owner_id == user.user_id


def check_read(user: Principal, kind: Kind, owner_id: str | None, team_id: str | None) -> None:
    if not can_read(user, kind, owner_id, team_id):
        raise Forbidden(f"this {kind} belongs to another owner or team")


def check_change(user: Principal, kind: Kind, owner_id: str | None, team_id: str | None) -> None:
    if not can_change(user, owner_id, team_id):
        raise Forbidden(f"you may not change this {kind}: it is not yours or your team's")


def check_record_read(user: Principal, record: Aggregate) -> None:
    """check_read for a loaded contact, account or deal (its kind is its stream type)."""
    kind: Kind = record.stream_type  # type: ignore[assignment]
    check_read(user, kind, getattr(record, "owner_id", None), getattr(record, "team_id", None))
