-- The relay's wake-up may be left to the application (crm_runtime.unit_of_work.CommitNotifier):
-- a transaction that sets crm.events_notify = 'deferred' (set_config(..., true), its own only)
-- does not NOTIFY at commit, and the application sends one NOTIFY after many commits. A NOTIFY
-- inside a transaction makes PostgreSQL serialise its commit with every other notifying commit
-- of the cluster, WAL flush included, so concurrent commands cannot share a flush. Every other
-- writer (consumers, imports, jobs) still notifies here, as before.
CREATE OR REPLACE FUNCTION events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('crm.events_notify', true) IS DISTINCT FROM 'deferred' THEN
        PERFORM pg_notify('crm_events', '');
    END IF;
    RETURN NULL;
END $$;
