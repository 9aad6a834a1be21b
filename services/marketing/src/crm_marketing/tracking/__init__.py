"""Tracking: signed open-pixel, click-redirect and unsubscribe links."""
