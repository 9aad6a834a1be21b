-- Templates (read model of the template streams) and every revision's content, for rendering.
CREATE TABLE IF NOT EXISTS templates (
    template_id text PRIMARY KEY,
    name        text        NOT NULL,
    channel     text        NOT NULL CHECK (channel IN ('email', 'sms', 'push')),
    status      text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'archived')),
    revision    integer     NOT NULL,
    content     jsonb       NOT NULL,
    version     integer     NOT NULL,
    created_by  text,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS templates_listing ON templates (created_at DESC, template_id DESC);

CREATE TABLE IF NOT EXISTS template_revisions (
    template_id text        NOT NULL,
    revision    integer     NOT NULL,
    name        text        NOT NULL,
    content     jsonb       NOT NULL,
    created_by  text,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (template_id, revision)
);
