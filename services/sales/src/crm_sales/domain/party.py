"""What contacts and accounts share: details set field by field, owners, and reversible merges.

A merge moves nothing out of either stream. The survivor records what it took over (only what
it lacked: missing fields, extra e-mails, phones, tags, custom fields); the merged record points
to the survivor and refuses changes. Undo removes from the survivor exactly what it took over and
still holds — changes made since the merge stay — and the merged record stands on its own again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from crm_events import EventPayload
from crm_runtime.aggregate import Aggregate
from crm_runtime.errors import DomainError

LIST_FIELDS = frozenset({"emails", "phones", "tags", "social_profiles"})
MAP_FIELDS = frozenset({"custom_fields"})


@dataclass(frozen=True)
class PartyEvents:
    """The event classes of one kind of party (their fields are the same up to the id's name)."""

    details: type[EventPayload]
    updated: type[EventPayload]
    reassigned: type[EventPayload]
    merged: type[EventPayload]
    merged_into: type[EventPayload]
    merge_undone: type[EventPayload]


class Party(Aggregate):
    """Base of Contact and Account: what they share is written once, here."""

    kind = "record"
    events: ClassVar[PartyEvents]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        events = cls.__dict__.get("events")
        if events is not None:  # the shared mutators, for this kind's event classes
            cls._mutators = {
                **cls._mutators,
                events.updated: Party._on_updated,
                events.reassigned: Party._on_reassigned,
                events.merged: Party._on_merged,
                events.merged_into: Party._on_merged_into,
                events.merge_undone: Party._on_merge_undone,
            }

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

    @property
    def id_field(self) -> str:
        return f"{self.kind}_id"

    def _event(self, cls: type[EventPayload], **fields: Any) -> EventPayload:
        return cls(**{self.id_field: self.id}, **fields)

    # --- commands shared by contacts and accounts ---

    def reassign(self, owner_id: str | None, team_id: str | None) -> None:
        self.ensure_active()
        if (owner_id, team_id) != (self.owner_id, self.team_id):
            self.record(self._event(self.events.reassigned, owner_id=owner_id, team_id=team_id))

    def merge(self, other: Party, merge_id: str) -> None:
        """Take ``other`` in: this records the merge, ``other`` records that it points here."""
        absorbed = self.absorption(other)
        self.record(
            self._event(
                self.events.merged,
                customer_id=self.customer_id,
                merged_id=other.id,
                merged_customer_id=other.customer_id,
                merge_id=merge_id,
                absorbed=self.events.details.model_validate(absorbed),
                absorbed_fields=sorted(absorbed),
            )
        )
        other.record(
            other._event(
                other.events.merged_into,
                survivor_id=self.id,
                survivor_customer_id=self.customer_id,
                merge_id=merge_id,
            )
        )

    def undo_merge(self, merged: Party, merge_id: str) -> None:
        merged_id = self.undo_check(merge_id)
        if merged.id != merged_id or merged.merged_by != merge_id:
            raise DomainError(f"{self.kind} {merged.id} was not merged by {merge_id}")
        for record in (self, merged):
            record.record(
                record._event(
                    record.events.merge_undone,
                    merge_id=merge_id,
                    survivor_id=self.id,
                    survivor_customer_id=self.customer_id,
                    merged_id=merged.id,
                    merged_customer_id=merged.customer_id,
                )
            )

    # --- the shared mutators ---

    def _on_updated(self, e: Any) -> None:
        self._set(e.values.model_dump(mode="json"), e.changed)

    def _on_reassigned(self, e: Any) -> None:
        self.owner_id = e.owner_id
        self.team_id = e.team_id

    def _on_merged(self, e: Any) -> None:
        absorbed = e.absorbed.model_dump(mode="json")
        self._absorb(e.merge_id, e.merged_id, {f: absorbed[f] for f in e.absorbed_fields})

    def _on_merged_into(self, e: Any) -> None:
        self._merged_away(e.survivor_id, e.merge_id)

    def _on_merge_undone(self, e: Any) -> None:
        if getattr(e, self.id_field) == e.survivor_id:
            self._unabsorb(e.merge_id)
        else:
            self._restored()
