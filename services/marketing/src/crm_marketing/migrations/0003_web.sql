-- Website integration (MK-B): site keys, forms and their submissions, public rate limits.
CREATE TABLE IF NOT EXISTS site_keys (
    site_key_id           text PRIMARY KEY,
    name                  text NOT NULL,
    allowed_origins       text[] NOT NULL,
    rate_limit_per_minute integer NOT NULL,
    revoked               boolean NOT NULL DEFAULT false,
    version               integer NOT NULL,
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS site_keys_listing ON site_keys (created_at DESC, site_key_id DESC);

CREATE TABLE IF NOT EXISTS forms (
    form_id     text PRIMARY KEY,
    site_key_id text NOT NULL,
    name        text NOT NULL,
    definition  jsonb NOT NULL,
    archived    boolean NOT NULL DEFAULT false,
    version     integer NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS forms_listing ON forms (created_at DESC, form_id DESC);

CREATE TABLE IF NOT EXISTS form_submissions (
    submission_id text PRIMARY KEY,
    form_id       text NOT NULL,
    customer_id   text NOT NULL,
    visitor_id    text,
    new_person    boolean NOT NULL,
    submitted_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS form_submissions_form ON form_submissions (form_id, submitted_at DESC);

-- Fixed one-minute windows per (site key, endpoint, client): the client part is a keyed hash
-- of the IP address, never the address itself. Shared by every replica.
CREATE TABLE IF NOT EXISTS rate_limits (
    bucket       text PRIMARY KEY,
    window_start timestamptz NOT NULL,
    hits         integer NOT NULL
);
