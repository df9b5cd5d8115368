-- 0001: the schema of the last release before migrations (commit 2a02fae), statement for statement.
-- Every statement is IF NOT EXISTS so that a database made by that release (its tables, no
-- schema_migrations) runs this as a no-op and is recorded at version 1 with its data. Never edit
-- this file (its checksum is recorded): change the schema in a new migration.

CREATE TABLE IF NOT EXISTS organizations (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    link_quota  integer NOT NULL DEFAULT 50 CHECK (link_quota >= 0),
    rate_limit  text NOT NULL DEFAULT '5/second;50/minute',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS api_keys (
    id          uuid PRIMARY KEY,
    org_id      uuid NOT NULL REFERENCES organizations (id),
    name        text NOT NULL DEFAULT '',
    -- SHA-256 of the secret; the secret itself is never stored
    key_hash    bytea NOT NULL UNIQUE,
    scopes      text[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE TABLE IF NOT EXISTS surveys (
    id            uuid PRIMARY KEY,
    -- short number used in the compact signed contact links
    seq           bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    org_id        uuid NOT NULL REFERENCES organizations (id),
    name          text NOT NULL,
    status        text NOT NULL DEFAULT 'inProgress'
                  CHECK (status IN ('draft', 'inProgress', 'paused', 'completed')),
    link_quota    integer CHECK (link_quota >= 0),
    redirect_url  text,
    -- links created so far; moved in the same transaction as the insert, so it is exact
    link_count    integer NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS surveys_org_idx ON surveys (org_id);

CREATE TABLE IF NOT EXISTS metadata_fields (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id      uuid NOT NULL REFERENCES organizations (id),
    name        text NOT NULL,
    variable    text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, variable)
);

CREATE TABLE IF NOT EXISTS survey_links (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    public_id         text NOT NULL UNIQUE,
    survey_id         uuid NOT NULL REFERENCES surveys (id),
    -- SHA-256 of the canonical metadata mapping: the idempotency key within a survey
    mapping_hash      bytea NOT NULL,
    name              text NOT NULL,
    metadata_mapping  jsonb NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (survey_id, mapping_hash)
);

-- Contacts (Formbricks contract). Attribute values are JSON strings, numbers or booleans; a null
-- in a write removes the attribute, so a stored key always has a value (`?` means "is set").
CREATE TABLE IF NOT EXISTS contacts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id      uuid NOT NULL REFERENCES organizations (id),
    attributes  jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- the page order (newest first, ties by id); segment pages and counts walk it
CREATE INDEX IF NOT EXISTS contacts_page_idx ON contacts (org_id, created_at DESC, id DESC);
-- one email per organisation: POST /contacts' conflict target and the bulk upsert's lookup
CREATE UNIQUE INDEX IF NOT EXISTS contacts_email_idx ON contacts (org_id, (attributes->>'email'))
    WHERE attributes ? 'email';

CREATE TABLE IF NOT EXISTS contact_attribute_keys (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id      uuid NOT NULL REFERENCES organizations (id),
    key         text NOT NULL,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, key)
);

-- bumped in the transaction of every contact write: the key of the cached segment counts
CREATE TABLE IF NOT EXISTS contact_versions (
    org_id   uuid PRIMARY KEY REFERENCES organizations (id),
    version  bigint NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS segments (
    id          uuid PRIMARY KEY,
    org_id      uuid NOT NULL REFERENCES organizations (id),
    title       text NOT NULL,
    filters     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS segments_org_idx ON segments (org_id);
