-- The current schema in full, for reading. Databases get theirs from the numbered migrations in
-- service/db/migrations (`python -m service migrate`; `serve` runs them too), never from this file.
-- A migration that changes the schema changes this file too: tests/ops/test_migrations.py checks
-- that this file and the migrations make the same tables, columns, constraints and indexes.

-- Every organisation's data is keyed by org_id first (primary keys, unique indexes, the foreign keys between
-- them), so the schema distributes on Citus by org_id; organizations and api_keys are reference tables
-- there (docs/design.md, "Past one PostgreSQL").

CREATE TABLE organizations (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    link_quota  integer NOT NULL DEFAULT 50 CHECK (link_quota >= 0),
    rate_limit  text NOT NULL DEFAULT '5/second;50/minute',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id          uuid PRIMARY KEY,
    org_id      uuid NOT NULL REFERENCES organizations (id),
    name        text NOT NULL DEFAULT '',
    -- SHA-256 of the secret; the secret itself is never stored
    key_hash    bytea NOT NULL UNIQUE,
    scopes      text[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE TABLE surveys (
    id            uuid NOT NULL,
    -- short number used in the compact signed contact links (unique by its identity sequence)
    seq           bigint GENERATED ALWAYS AS IDENTITY,
    org_id        uuid NOT NULL REFERENCES organizations (id),
    name          text NOT NULL,
    status        text NOT NULL DEFAULT 'inProgress'
                  CHECK (status IN ('draft', 'inProgress', 'paused', 'completed')),
    link_quota    integer CHECK (link_quota >= 0),
    redirect_url  text,
    -- live links (created, not revoked); moved in the same transaction as the insert or the revoke, so exact
    link_count    integer NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    -- contact links carry their survey's generation; revoking them all moves it on
    link_generation           integer NOT NULL DEFAULT 1,
    contact_links_revoked_at  timestamptz,
    -- contact links as /c/<jwt> ('jwt') or /s/<32 characters> ('short', for SMS)
    link_format               text NOT NULL DEFAULT 'jwt' CHECK (link_format IN ('jwt', 'short')),
    PRIMARY KEY (org_id, id)
);
-- opening a contact link finds its survey by seq alone (the link names no organisation)
CREATE INDEX surveys_seq_idx ON surveys (seq);
-- the surveys list's order (newest first, ties by id), within the organisation
CREATE INDEX surveys_page_idx ON surveys (org_id, created_at DESC, id DESC);

CREATE TABLE metadata_fields (
    id          bigint GENERATED ALWAYS AS IDENTITY,
    org_id      uuid NOT NULL REFERENCES organizations (id),
    name        text NOT NULL,
    variable    text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, id),
    UNIQUE (org_id, variable)
);

CREATE TABLE survey_links (
    id                bigint GENERATED ALWAYS AS IDENTITY,
    -- 96 random bits (64 before 0008)
    public_id         text NOT NULL,
    survey_id         uuid NOT NULL,
    -- SHA-256 of the canonical metadata mapping: the idempotency key of a survey's live links
    mapping_hash      bytea NOT NULL,
    name              text NOT NULL,
    metadata_mapping  jsonb NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    revoked_at        timestamptz,
    org_id            uuid NOT NULL REFERENCES organizations (id),
    PRIMARY KEY (org_id, id),
    FOREIGN KEY (org_id, survey_id) REFERENCES surveys (org_id, id)
);
CREATE INDEX survey_links_page_idx ON survey_links (survey_id, id DESC);
-- opening a created link finds it by public id alone (the link names no organisation)
CREATE INDEX survey_links_public_id_idx ON survey_links (public_id);
-- one live link per mapping: a revoked link keeps its row, and the mapping may be created again
CREATE UNIQUE INDEX survey_links_live_mapping_idx ON survey_links (org_id, survey_id, mapping_hash)
    WHERE revoked_at IS NULL;

-- Contacts (Formbricks contract). Attribute values are JSON strings, numbers or booleans; a null
-- in a write removes the attribute, so a stored key always has a value (`?` means "is set").
CREATE TABLE contacts (
    id          bigint GENERATED ALWAYS AS IDENTITY,
    org_id      uuid NOT NULL REFERENCES organizations (id),
    attributes  jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, id)
);
-- the page order (newest first, ties by id); segment pages and counts walk it
CREATE INDEX contacts_page_idx ON contacts (org_id, created_at DESC, id DESC);
-- one email per organisation: POST /contacts' conflict target and the bulk upsert's lookup
CREATE UNIQUE INDEX contacts_email_idx ON contacts (org_id, (attributes->>'email'))
    WHERE attributes ? 'email';
-- equality and `in` on an attribute (`attributes @> ...`, `attributes @@ ...`) read this index
CREATE INDEX contacts_attributes_idx ON contacts USING gin (attributes jsonb_path_ops);

CREATE TABLE contact_attribute_keys (
    id          bigint GENERATED ALWAYS AS IDENTITY,
    org_id      uuid NOT NULL REFERENCES organizations (id),
    key         text NOT NULL,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, id),
    UNIQUE (org_id, key)
);

-- bumped by the release before 0007 in the transaction of every contact write (kept for its instances
-- during a rolling upgrade: readers still compare it); this release writes contact_changes instead
CREATE TABLE contact_versions (
    org_id   uuid PRIMARY KEY REFERENCES organizations (id),
    version  bigint NOT NULL DEFAULT 0
);

-- one row per transaction that wrote an organisation's contacts (no shared row, so no writer waits):
-- a cached segment count is stale when a row's transaction was invisible to the count's snapshot
CREATE TABLE contact_changes (
    org_id  uuid NOT NULL REFERENCES organizations (id),
    xid     xid8 NOT NULL DEFAULT pg_current_xact_id(),
    at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, xid)
);
CREATE INDEX contact_changes_at_idx ON contact_changes (at);

CREATE TABLE segments (
    id          uuid NOT NULL,
    org_id      uuid NOT NULL REFERENCES organizations (id),
    title       text NOT NULL,
    filters     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, id)
);
-- the segments list's order (newest first, ties by id), within the organisation
CREATE INDEX segments_page_idx ON segments (org_id, created_at DESC, id DESC);

-- Opens, written in batches by the workers: per created link, and per (survey, contact).
CREATE TABLE link_opens (
    link_id   bigint NOT NULL,
    org_id    uuid NOT NULL REFERENCES organizations (id),
    count     bigint NOT NULL CHECK (count > 0),
    first_at  timestamptz NOT NULL,
    last_at   timestamptz NOT NULL,
    PRIMARY KEY (org_id, link_id),
    FOREIGN KEY (org_id, link_id) REFERENCES survey_links (org_id, id) ON DELETE CASCADE
);

CREATE TABLE contact_opens (
    survey_id   uuid NOT NULL,
    contact_id  bigint NOT NULL,
    org_id      uuid NOT NULL REFERENCES organizations (id),
    count       bigint NOT NULL CHECK (count > 0),
    first_at    timestamptz NOT NULL,
    last_at     timestamptz NOT NULL,
    PRIMARY KEY (org_id, survey_id, contact_id),
    FOREIGN KEY (org_id, survey_id) REFERENCES surveys (org_id, id) ON DELETE CASCADE,
    FOREIGN KEY (org_id, contact_id) REFERENCES contacts (org_id, id) ON DELETE CASCADE
);
-- erasing a contact deletes its opens through this index
CREATE INDEX contact_opens_contact_idx ON contact_opens (org_id, contact_id);

-- moved on by each flush of a survey's contact opens: the key of the reminder list's cached counts
CREATE TABLE contact_opens_versions (
    survey_id  uuid NOT NULL,
    org_id     uuid NOT NULL REFERENCES organizations (id),
    version    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id, survey_id),
    FOREIGN KEY (org_id, survey_id) REFERENCES surveys (org_id, id) ON DELETE CASCADE
);
