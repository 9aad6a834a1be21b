"""Plumbing every CRM service shares: event store, outbox relay, consumers, HTTP skeleton."""
