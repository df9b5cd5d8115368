-- 0007: contacts at scale (SPEC "Contacts at scale"). Additive: a running release keeps working.

-- One row per transaction that wrote an organisation's contacts (the transaction's own id), inserted
-- in that transaction: no two writers touch the same row, so nothing queues. A cached segment count
-- records the snapshot it was taken in; a row whose transaction that snapshot could not see means the
-- count may be stale. Rows older than an hour are deleted (cached counts older than that are not
-- trusted without a recount). contact_versions stays for the previous release's instances during a
-- rolling upgrade: readers also compare its version, which only that release still moves.
CREATE TABLE IF NOT EXISTS contact_changes (
    org_id  uuid NOT NULL REFERENCES organizations (id),
    xid     xid8 NOT NULL DEFAULT pg_current_xact_id(),
    at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, xid)
);
CREATE INDEX IF NOT EXISTS contact_changes_at_idx ON contact_changes (at);

-- equality and `in` on an attribute (`attributes @> '{"plan": "pro"}'`, `attributes @@ '$.plan == "pro"'`)
-- read this index instead of every contact of the organisation
CREATE INDEX IF NOT EXISTS contacts_attributes_idx ON contacts USING gin (attributes jsonb_path_ops);
