"""Service-desk context: tickets, routing, SLAs and escalation, CSAT, knowledge base."""
