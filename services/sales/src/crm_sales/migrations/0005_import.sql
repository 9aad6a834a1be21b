-- Bulk import (CSV). Records that have no duplicate guard of their own (contacts without an
-- e-mail; leads, which the API never deduplicates) are claimed here under a key, so that a
-- concurrent or repeated import of the same rows finds them. Keys are hashes, not personal data:
-- 'e:' || sha256(normalised e-mail) or 'r:' || sha256(the normalised row).
CREATE TABLE IF NOT EXISTS import_keys (
    kind      text NOT NULL,
    key       text NOT NULL,
    record_id text NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX IF NOT EXISTS import_keys_record ON import_keys (record_id);

-- A lead import looks existing leads up by e-mail (leads captured over the API included).
CREATE INDEX IF NOT EXISTS leads_email ON leads (email) WHERE email IS NOT NULL;

-- While an import runs: the line of the file each record came from, so that a later duplicate
-- can name it. Scratch data (deleted when the import ends), hence unlogged.
CREATE UNLOGGED TABLE IF NOT EXISTS import_lines (
    import_id  uuid        NOT NULL,
    record_id  text        NOT NULL,
    line       integer     NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (import_id, record_id)
);
