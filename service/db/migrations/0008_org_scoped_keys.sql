-- 0008: every key names its organisation (SPEC "Contacts at scale": the schema distributes on Citus by
-- org_id). Citus needs the distribution column in every primary key and unique index of a distributed
-- table, and in both sides of a foreign key between two of them. So: survey_links gets its org_id, every
-- primary key and unique index of an organisation's data starts with org_id, and the foreign keys between
-- them carry it (a link, an open or a version row can then never name another organisation's survey or
-- contact: the database checks what the queries already promise). `organizations` and `api_keys` are
-- Citus reference tables (small, read everywhere; a key is looked up before its organisation is known)
-- and keep their keys.
--
-- Not additive: the previous release's statements name keys this migration replaces (ON CONFLICT
-- (link_id), (survey_id, contact_id), (survey_id)) and insert links without org_id, so stop its instances
-- before migrating (README "Migrations"). The keys are rebuilt in place, the tables held meanwhile: 10.6 s
-- for 1,000,000 contacts, 200,000 links and 100,000 opens on a 2-core machine.

-- a link's organisation, from its survey
ALTER TABLE survey_links ADD COLUMN org_id uuid REFERENCES organizations (id);
UPDATE survey_links l SET org_id = s.org_id FROM surveys s WHERE s.id = l.survey_id;
ALTER TABLE survey_links ALTER COLUMN org_id SET NOT NULL;

-- the foreign keys onto the keys being replaced go first, and come back naming the organisation
ALTER TABLE survey_links DROP CONSTRAINT survey_links_survey_id_fkey;
ALTER TABLE link_opens DROP CONSTRAINT link_opens_link_id_fkey;
ALTER TABLE contact_opens DROP CONSTRAINT contact_opens_survey_id_fkey;
ALTER TABLE contact_opens DROP CONSTRAINT contact_opens_contact_id_fkey;
ALTER TABLE contact_opens_versions DROP CONSTRAINT contact_opens_versions_survey_id_fkey;

ALTER TABLE surveys DROP CONSTRAINT surveys_pkey, ADD PRIMARY KEY (org_id, id);
-- opening a contact link finds its survey by seq alone (the link names no organisation): unique by its
-- identity sequence, so a plain index (a unique one would have to name the organisation)
ALTER TABLE surveys DROP CONSTRAINT surveys_seq_key;
CREATE INDEX surveys_seq_idx ON surveys (seq);

ALTER TABLE survey_links DROP CONSTRAINT survey_links_pkey, ADD PRIMARY KEY (org_id, id);
-- opening a created link finds it by public id alone; new public ids are 96 random bits, old ones were
-- unique under the constraint this replaces
ALTER TABLE survey_links DROP CONSTRAINT survey_links_public_id_key;
CREATE INDEX survey_links_public_id_idx ON survey_links (public_id);
DROP INDEX survey_links_live_mapping_idx;
CREATE UNIQUE INDEX survey_links_live_mapping_idx ON survey_links (org_id, survey_id, mapping_hash)
    WHERE revoked_at IS NULL;
ALTER TABLE survey_links ADD FOREIGN KEY (org_id, survey_id) REFERENCES surveys (org_id, id);

ALTER TABLE contacts DROP CONSTRAINT contacts_pkey, ADD PRIMARY KEY (org_id, id);
ALTER TABLE segments DROP CONSTRAINT segments_pkey, ADD PRIMARY KEY (org_id, id);
ALTER TABLE metadata_fields DROP CONSTRAINT metadata_fields_pkey, ADD PRIMARY KEY (org_id, id);
ALTER TABLE contact_attribute_keys DROP CONSTRAINT contact_attribute_keys_pkey, ADD PRIMARY KEY (org_id, id);

ALTER TABLE link_opens DROP CONSTRAINT link_opens_pkey, ADD PRIMARY KEY (org_id, link_id),
    ADD FOREIGN KEY (org_id, link_id) REFERENCES survey_links (org_id, id) ON DELETE CASCADE;

ALTER TABLE contact_opens DROP CONSTRAINT contact_opens_pkey, ADD PRIMARY KEY (org_id, survey_id, contact_id),
    ADD FOREIGN KEY (org_id, survey_id) REFERENCES surveys (org_id, id) ON DELETE CASCADE,
    ADD FOREIGN KEY (org_id, contact_id) REFERENCES contacts (org_id, id) ON DELETE CASCADE;
-- erasing a contact deletes its opens through this index
DROP INDEX contact_opens_contact_idx;
CREATE INDEX contact_opens_contact_idx ON contact_opens (org_id, contact_id);

ALTER TABLE contact_opens_versions DROP CONSTRAINT contact_opens_versions_pkey, ADD PRIMARY KEY (org_id, survey_id),
    ADD FOREIGN KEY (org_id, survey_id) REFERENCES surveys (org_id, id) ON DELETE CASCADE;
