-- 0002: the life of a link (SPEC "The life of a link"): revocation and opens. Additive only: the
-- columns have defaults and the tables start empty, so a running release is unaffected.

-- a created link can be revoked; its row stays (opens, audit), marked with the instant
ALTER TABLE survey_links ADD COLUMN IF NOT EXISTS revoked_at timestamptz;
CREATE INDEX IF NOT EXISTS survey_links_page_idx ON survey_links (survey_id, id DESC);

-- contact links carry their survey's generation; revoking them all moves it on (no per-link state)
ALTER TABLE surveys ADD COLUMN IF NOT EXISTS link_generation integer NOT NULL DEFAULT 1;
ALTER TABLE surveys ADD COLUMN IF NOT EXISTS contact_links_revoked_at timestamptz;

-- opens of created links, written in batches by the workers
CREATE TABLE IF NOT EXISTS link_opens (
    link_id   bigint PRIMARY KEY REFERENCES survey_links (id) ON DELETE CASCADE,
    org_id    uuid NOT NULL REFERENCES organizations (id),
    count     bigint NOT NULL CHECK (count > 0),
    first_at  timestamptz NOT NULL,
    last_at   timestamptz NOT NULL
);

-- opens of contact links, per (survey, contact); erasing a contact erases its opens
CREATE TABLE IF NOT EXISTS contact_opens (
    survey_id   uuid NOT NULL REFERENCES surveys (id) ON DELETE CASCADE,
    contact_id  bigint NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    org_id      uuid NOT NULL REFERENCES organizations (id),
    count       bigint NOT NULL CHECK (count > 0),
    first_at    timestamptz NOT NULL,
    last_at     timestamptz NOT NULL,
    PRIMARY KEY (survey_id, contact_id)
);
CREATE INDEX IF NOT EXISTS contact_opens_contact_idx ON contact_opens (contact_id);
