"""Campaigns: one template to a segment over a channel, now or at a time, sent exactly once."""
