"""Audience: profiles kept from sales events plus marketing attributes, consent, devices."""
