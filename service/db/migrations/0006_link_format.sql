-- 0006: a survey's contact-link format (SPEC "Short links for SMS"): 'jwt' (the Formbricks link,
-- /c/<jwt>) or 'short' (/s/<32 characters>, for SMS). Additive: the default keeps every survey's
-- links as they were.
ALTER TABLE surveys ADD COLUMN IF NOT EXISTS link_format text NOT NULL DEFAULT 'jwt'
    CHECK (link_format IN ('jwt', 'short'));
