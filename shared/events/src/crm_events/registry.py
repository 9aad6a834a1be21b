"""The registry of every event type: payload models per schema version, and chained upcasters."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
P = TypeVar("P", bound="EventPayload")


class EventPayload(BaseModel):
    """Base of every event payload: immutable, and an unknown field is an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class UnknownEventType(LookupError):
    """An event type (or schema version) this registry does not know."""


class SchemaValidationError(ValueError):
    """A payload that does not match the schema of its type and version."""


@dataclass(frozen=True)
class EventTypeSpec:
    """One registered event type at its current schema version."""

    type: str
    version: int
    model: builtins.type[EventPayload]
    public: bool
    summary: str

    @property
    def context(self) -> str:
        return self.type.split(".")[1]

    @property
    def aggregate(self) -> str:
        return self.type.split(".")[2]


class EventRegistry:
    """Maps ``(type, schema version)`` to payload models; upcasts old payloads to current."""

    def __init__(self) -> None:
        self._models: dict[str, dict[int, type[EventPayload]]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}
        self._public: dict[str, bool] = {}
        self._by_model: dict[type[EventPayload], tuple[str, int]] = {}
        # type -> (current version, its model): the decoder's fast path
        self._current: dict[str, tuple[int, type[EventPayload]]] = {}

    def register(
        self, type_: str, version: int, model: type[EventPayload], *, public: bool = False
    ) -> None:
        versions = self._models.setdefault(type_, {})
        if version in versions and versions[version] is not model:
            raise ValueError(f"{type_} v{version} is already registered")
        versions[version] = model
        current = max(versions)
        self._current[type_] = (current, versions[current])
        self._public[type_] = self._public.get(type_, False) or public
        self._by_model[model] = (type_, version)

    def register_upcaster(self, type_: str, from_version: int, fn: Upcaster) -> None:
        self._upcasters[(type_, from_version)] = fn

    def current_version(self, type_: str) -> int:
        try:
            return max(self._models[type_])
        except KeyError:
            raise UnknownEventType(type_) from None

    def knows(self, type_: str) -> bool:
        return type_ in self._models

    def is_public(self, type_: str) -> bool:
        return self._public.get(type_, False)

    def type_of(self, payload: EventPayload) -> tuple[str, int]:
        """The type name and schema version a payload model is registered under."""
        try:
            return self._by_model[type(payload)]
        except KeyError:
            raise UnknownEventType(type(payload).__name__) from None

    def model(self, type_: str, version: int | None = None) -> type[EventPayload]:
        versions = self._models.get(type_)
        if not versions:
            raise UnknownEventType(type_)
        v = max(versions) if version is None else version
        if v not in versions:
            raise UnknownEventType(f"{type_} v{v}")
        return versions[v]

    def upcast(self, type_: str, version: int, data: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Apply the chain of upcasters from ``version`` to the current version."""
        current = self.current_version(type_)
        if version > current:
            raise UnknownEventType(f"{type_} v{version} is newer than this registry (v{current})")
        while version < current:
            fn = self._upcasters.get((type_, version))
            if fn is None:
                raise UnknownEventType(f"no upcaster for {type_} v{version} -> v{version + 1}")
            data = fn(dict(data))
            version += 1
        return version, data

    def decode(self, type_: str, version: int, data: dict[str, Any]) -> EventPayload:
        """Upcast then validate a stored or received payload into its current model."""
        current = self._current.get(type_)
        if current is not None and current[0] == version:  # the usual case: nothing to upcast
            model = current[1]
        else:
            version, data = self.upcast(type_, version, data)
            model = self.model(type_, version)
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            reasons = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}"
                for e in exc.errors()
            )
            raise SchemaValidationError(f"{type_} v{version}: {reasons}") from exc

    def specs(self) -> Iterator[EventTypeSpec]:
        """Every type at its current version, sorted by name."""
        for type_ in sorted(self._models):
            v = max(self._models[type_])
            model = self._models[type_][v]
            summary = (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else ""
            yield EventTypeSpec(type_, v, model, self._public[type_], summary)

    def all_versions(self) -> Iterator[tuple[str, int, type[EventPayload]]]:
        for type_ in sorted(self._models):
            for v in sorted(self._models[type_]):
                yield type_, v, self._models[type_][v]


registry = EventRegistry()


def event_type(
    type_: str, version: int = 1, *, public: bool = False, into: EventRegistry | None = None
) -> Callable[[type[P]], type[P]]:
    """Class decorator: register a payload model under an explicit, stable type name."""

    def wrap(model: type[P]) -> type[P]:
        (into or registry).register(type_, version, model, public=public)
        return model

    return wrap


def upcaster(
    type_: str, from_version: int, *, into: EventRegistry | None = None
) -> Callable[[Upcaster], Upcaster]:
    """Function decorator: register the step that turns ``from_version`` into the next version."""

    def wrap(fn: Upcaster) -> Upcaster:
        (into or registry).register_upcaster(type_, from_version, fn)
        return fn

    return wrap
