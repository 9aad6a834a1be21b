"""Sales domain model: aggregates and their invariants. No I/O."""
