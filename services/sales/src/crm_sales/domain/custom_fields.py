"""Typed custom fields of contacts and accounts: definitions, and the check of values."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from crm_events.schemas.sales import CustomFieldDefined, CustomFieldDefinition, CustomFieldRemoved
from crm_runtime.aggregate import Aggregate, applies
from crm_runtime.errors import DomainError, InvalidInput

Entity = Literal["contact", "account"]


class CustomFields(Aggregate):
    """The custom field definitions of one entity (stream ``custom_fields-<entity>``)."""

    stream_type = "custom_fields"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.fields: dict[str, CustomFieldDefinition] = {}

    @property
    def entity(self) -> Entity:
        return "account" if self.id == "account" else "contact"

    def define(self, definition: CustomFieldDefinition) -> None:
        if definition.type == "choice" and not definition.choices:
            raise DomainError("a choice field needs its choices")
        if definition.type != "choice" and definition.choices:
            raise DomainError("only a choice field has choices")
        if self.fields.get(definition.key) != definition:
            self.record(CustomFieldDefined(entity=self.entity, field=definition))

    def remove(self, key: str) -> None:
        if key not in self.fields:
            raise DomainError(f"no custom field {key!r} is defined for {self.entity}s")
        self.record(CustomFieldRemoved(entity=self.entity, key=key))

    def check(self, values: dict[str, Any] | None, field: str = "custom_fields") -> None:
        """Raise InvalidInput naming ``custom_fields.<key>`` for an undefined key or wrong type."""
        for key, value in (values or {}).items():
            where = f"{field}.{key}"
            definition = self.fields.get(key)
            if definition is None:
                raise InvalidInput(
                    where,
                    f"no custom field {key!r} is defined for {self.entity}s; "
                    f"define it with PUT /custom-fields/{self.entity}/{key}",
                )
            _check_value(definition, value, where)

    @applies(CustomFieldDefined)
    def _defined(self, e: CustomFieldDefined) -> None:
        self.fields[e.field.key] = e.field

    @applies(CustomFieldRemoved)
    def _removed(self, e: CustomFieldRemoved) -> None:
        self.fields.pop(e.key, None)


def _check_value(d: CustomFieldDefinition, value: Any, where: str) -> None:
    kind = d.type
    ok: bool
    if kind == "text":
        ok = isinstance(value, str)
    elif kind == "number":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif kind == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "boolean":
        ok = isinstance(value, bool)
    elif kind == "date":
        ok = isinstance(value, str) and _is_date(value)
    else:
        ok = isinstance(value, str) and value in d.choices
        if not ok:
            raise InvalidInput(where, f"must be one of {d.choices}")
    if not ok:
        expected = {"date": "a date like 2026-11-25", "text": "a string"}.get(kind, f"a {kind}")
        raise InvalidInput(where, f"{d.label} must be {expected}")


def _is_date(value: str) -> bool:
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return len(value) == 10
