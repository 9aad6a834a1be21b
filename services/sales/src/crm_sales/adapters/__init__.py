"""Sales adapters: the event-store repositories and the read models' SQL."""
