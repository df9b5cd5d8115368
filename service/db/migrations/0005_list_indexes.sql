-- 0005: the management lists (SPEC "The life of a link", Lists) page an organisation's surveys and
-- segments newest first, by (created_at DESC, id DESC): each gets the index contacts already have
-- (contacts_page_idx), so a page is a seek however deep it is. Each replaces the (org_id) index it
-- starts with, which it serves as well. Small tables: built inside the migration's transaction.
CREATE INDEX IF NOT EXISTS surveys_page_idx ON surveys (org_id, created_at DESC, id DESC);
DROP INDEX IF EXISTS surveys_org_idx;
CREATE INDEX IF NOT EXISTS segments_page_idx ON segments (org_id, created_at DESC, id DESC);
DROP INDEX IF EXISTS segments_org_idx;
