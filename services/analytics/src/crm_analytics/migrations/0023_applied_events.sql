-- One mark per event applied to the analytics projections (they are applied together, in one
-- transaction per batch): a redelivered or re-sent event is applied once. Replaces the
-- per-projection marks in processed_events, which are carried over.
CREATE TABLE IF NOT EXISTS applied_events (
    event_id uuid PRIMARY KEY
);

INSERT INTO applied_events (event_id)
SELECT DISTINCT event_id FROM processed_events WHERE consumer LIKE 'analytics.%'
ON CONFLICT DO NOTHING;
