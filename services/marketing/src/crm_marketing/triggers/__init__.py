"""Event-based triggers: behaviour over a window fires a message once per qualifying episode."""
