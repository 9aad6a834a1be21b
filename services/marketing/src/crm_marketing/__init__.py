"""Marketing context: audience, consent, segments, campaigns, templates, web activity, triggers."""
