"""Agent profiles kept in the service desk: e-mail, skills, languages, queues, availability."""

from __future__ import annotations

from crm_events.schemas.service_routing import AgentAvailabilityChanged, AgentProfileSet
from crm_runtime.aggregate import Aggregate, applies
from crm_runtime.errors import DomainError


def labels(values: list[str]) -> list[str]:
    """Skills, languages, queues, products and regions compare case-insensitively."""
    return sorted({v.strip().lower() for v in values if v.strip()})


class Agent(Aggregate):
    """A service agent's routing profile (stream ``agent-<user id>``)."""

    stream_type = "agent"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.email: str | None = None
        self.display_name: str | None = None
        self.skills: list[str] = []
        self.languages: list[str] = []
        self.queues: list[str] = []
        self.active = True
        self.available = True
        self.unavailable_reason: str | None = None

    def set_profile(
        self,
        *,
        email: str | None,
        display_name: str | None,
        skills: list[str],
        languages: list[str],
        queues: list[str],
        active: bool,
    ) -> None:
        event = AgentProfileSet(
            agent_id=self.id,
            email=email.strip().lower() if email else None,
            display_name=display_name,
            skills=labels(skills),
            languages=labels(languages),
            queues=sorted(set(queues)),
            active=active,
        )
        current = (
            self.email,
            self.display_name,
            self.skills,
            self.languages,
            self.queues,
            self.active,
        )
        new = (
            event.email,
            event.display_name,
            event.skills,
            event.languages,
            event.queues,
            event.active,
        )
        if not self.exists or current != new:
            self.record(event)

    def set_availability(self, available: bool, reason: str | None) -> None:
        if not self.exists:
            raise DomainError(f"agent {self.id} has no profile yet; a service manager sets one")
        if available != self.available or (not available and reason != self.unavailable_reason):
            self.record(
                AgentAvailabilityChanged(agent_id=self.id, available=available, reason=reason)
            )

    @applies(AgentProfileSet)
    def _profile(self, e: AgentProfileSet) -> None:
        self.email = e.email
        self.display_name = e.display_name
        self.skills = list(e.skills)
        self.languages = list(e.languages)
        self.queues = list(e.queues)
        self.active = e.active

    @applies(AgentAvailabilityChanged)
    def _availability(self, e: AgentAvailabilityChanged) -> None:
        self.available = e.available
        self.unavailable_reason = None if e.available else e.reason
