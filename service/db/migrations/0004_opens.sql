-- 0004: opens (SPEC "The life of a link", Opens). Additive only.

-- moved on by the flush that writes a survey's contact opens, in the same statement: the segment
-- cache keys the reminder list's (`opened=`) counts and page positions by it
CREATE TABLE IF NOT EXISTS contact_opens_versions (
    survey_id  uuid PRIMARY KEY REFERENCES surveys (id) ON DELETE CASCADE,
    org_id     uuid NOT NULL REFERENCES organizations (id),
    version    bigint NOT NULL DEFAULT 0
);
