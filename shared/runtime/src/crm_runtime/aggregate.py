"""Base of event-sourced aggregates: state changes only by applying events; no I/O here."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Self, TypeVar

from crm_events import EventPayload, registry

E = TypeVar("E", bound=EventPayload)
Handler = Callable[[Any, Any], None]


def applies(event_cls: type[E]) -> Callable[[Callable[[Any, E], None]], Callable[[Any, E], None]]:
    """Mark a method as the one mutator for ``event_cls``."""

    def mark(fn: Callable[[Any, E], None]) -> Callable[[Any, E], None]:
        fn.__applies__ = event_cls  # type: ignore[attr-defined]
        return fn

    return mark


class Aggregate:
    """An aggregate is rebuilt from its stream; command methods check invariants, then record."""

    stream_type: ClassVar[str]
    _mutators: ClassVar[dict[type[EventPayload], Handler]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        mutators: dict[type[EventPayload], Handler] = {}
        for klass in reversed(cls.__mro__):
            for attr in vars(klass).values():
                target = getattr(attr, "__applies__", None)
                if target is not None:
                    mutators[target] = attr
        cls._mutators = mutators

    def __init__(self, aggregate_id: str) -> None:
        self.id = aggregate_id
        self.version = 0
        self.subject: str | None = None
        self.pending: list[EventPayload] = []

    @property
    def stream_id(self) -> str:
        return f"{self.stream_type}-{self.id}"

    @property
    def version_after_save(self) -> int:
        """The stream version once the pending events are saved (for writes sent with them)."""
        return self.version + len(self.pending)

    @property
    def exists(self) -> bool:
        return self.version > 0 or bool(self.pending)

    def apply(self, event: EventPayload) -> None:
        mutator = self._mutators.get(type(event))
        if mutator is None:
            raise TypeError(f"{type(self).__name__} has no mutator for {type(event).__name__}")
        mutator(self, event)

    def record(self, event: EventPayload) -> None:
        """Apply a new event and keep it for saving."""
        registry.type_of(event)  # only registered, published types may be recorded
        self.apply(event)
        self.pending.append(event)

    @classmethod
    def rehydrate(cls, aggregate_id: str, events: Iterable[tuple[EventPayload, int]]) -> Self:
        agg = cls(aggregate_id)
        for payload, version in events:
            agg.apply(payload)
            agg.version = version
        return agg
