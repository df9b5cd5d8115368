-- 0003: one live link per mapping (SPEC "The life of a link": revoking a created link). A revoked
-- link keeps its row (its opens, its audit), so the same mapping may be created again: the unique
-- constraint on (survey, mapping hash) becomes a unique index over the live links only. Every
-- ON CONFLICT and lookup by mapping names the same predicate (service/db/links.py).
CREATE UNIQUE INDEX IF NOT EXISTS survey_links_live_mapping_idx
    ON survey_links (survey_id, mapping_hash) WHERE revoked_at IS NULL;
ALTER TABLE survey_links DROP CONSTRAINT IF EXISTS survey_links_survey_id_mapping_hash_key;
