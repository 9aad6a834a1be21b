"""What contacts and accounts share: details set field by field, owners, and reversible merges.

A merge moves nothing out of either stream. The survivor records what it took over (only what
it lacked: missing fields, extra e-mails, phones, tags, custom fields); the merged record points
to the survivor and refuses changes. Undo removes from the survivor exactly what it took over and
still holds — changes made since the merge stay — and the merged record stands on its own again.
"""

from __future__ import annotations

from typing import Any

from crm_runtime.aggregate import Aggregate
from crm_runtime.errors import DomainError

LIST_FIELDS = frozenset({"emails", "phones", "tags", "social_profiles"})
MAP_FIELDS = frozenset({"custom_fields"})


class Party(Aggregate):
    """Base of Contact and Account."""

    kind = "record"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.customer_id = ""
        self.details: dict[str, Any] = {}
        self.owner_id: str | None = None
        self.team_id: str | None = None
        self.lead_id: str | None = None
        self.merged_into: str | None = None
        self.merged_by: str | None = None  # merge id that merged this record away
        # merge id -> (merged id, what was absorbed, collections that were unset before it)
        self.merges: dict[str, tuple[str, dict[str, Any], set[str]]] = {}

    # --- rules shared by commands ---

    def ensure_active(self) -> None:
        if self.merged_into is not None:
            raise DomainError(
                f"this {self.kind} was merged into {self.merged_into}; change that one instead",
                survivor_id=self.merged_into,
            )

    def changes_to(self, values: dict[str, Any], fields: list[str]) -> list[str]:
        """The requested fields whose value differs from what is held."""
        return [f for f in fields if self.details.get(f) != values.get(f)]

    def absorption(self, other: Party) -> dict[str, Any]:
        """What this record would take over from ``other``: only what it lacks."""
        if other.id == self.id:
            raise DomainError(f"a {self.kind} cannot be merged into itself")
        self.ensure_active()
        other.ensure_active()
        absorbed: dict[str, Any] = {}
        for name, theirs in other.details.items():
            mine = self.details.get(name)
            if theirs in (None, [], {}):
                continue
            if name in LIST_FIELDS:
                extra = [v for v in theirs if v not in (mine or [])]
                if extra:
                    absorbed[name] = extra
            elif name in MAP_FIELDS:
                extra_map = {k: v for k, v in theirs.items() if k not in (mine or {})}
                if extra_map:
                    absorbed[name] = extra_map
            elif mine in (None, ""):
                absorbed[name] = theirs
        return absorbed

    def undo_check(self, merge_id: str) -> str:
        """The id of the record that ``merge_id`` merged into this one."""
        if self.merged_into is not None:
            raise DomainError(
                f"this {self.kind} was itself merged into {self.merged_into} since; undo that "
                "merge first",
                survivor_id=self.merged_into,
            )
        if merge_id not in self.merges:
            raise DomainError(f"merge {merge_id} is not an active merge into this {self.kind}")
        return self.merges[merge_id][0]

    # --- state changes used by the mutators ---

    def _set(self, values: dict[str, Any], fields: list[str]) -> None:
        for name in fields:
            self.details[name] = values.get(name)

    def _absorb(self, merge_id: str, merged_id: str, absorbed: dict[str, Any]) -> None:
        unset = {n for n in absorbed if self.details.get(n) is None}
        for name, value in absorbed.items():
            mine = self.details.get(name)
            if name in LIST_FIELDS:
                self.details[name] = list(mine or []) + [v for v in value if v not in (mine or [])]
            elif name in MAP_FIELDS:
                self.details[name] = {**value, **(mine or {})}
            else:
                self.details[name] = value
        self.merges[merge_id] = (merged_id, absorbed, unset)

    def _unabsorb(self, merge_id: str) -> None:
        _, absorbed, unset = self.merges.pop(merge_id)
        for name, value in absorbed.items():
            mine = self.details.get(name)
            if name in LIST_FIELDS:
                left = [v for v in (mine or []) if v not in value]
                self.details[name] = None if not left and name in unset else left
            elif name in MAP_FIELDS:
                kept = {k: v for k, v in (mine or {}).items() if value.get(k, object()) != v}
                self.details[name] = None if not kept and name in unset else kept
            elif mine == value:
                self.details[name] = None

    def _merged_away(self, survivor_id: str, merge_id: str) -> None:
        self.merged_into = survivor_id
        self.merged_by = merge_id

    def _restored(self) -> None:
        self.merged_into = None
        self.merged_by = None
