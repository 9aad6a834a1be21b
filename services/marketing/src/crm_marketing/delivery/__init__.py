"""Delivery: e-mail over SMTP (one connection for many messages), SMS and push via providers."""
