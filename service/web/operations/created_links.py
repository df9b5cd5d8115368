"""Created links in the management API, and revoking links (SPEC "The life of a link")."""

from __future__ import annotations

from ..contact_links import BASE as CONTACT_LINKS
from ..created_link_docs import ContactLinksRevoked, CreatedLinkData, CreatedLinksPage
from ..created_links import LINKS as CREATED_LINKS
from .common import FORMBRICKS, GUARDED, PERSONAL, SURVEY_ID, Operation, errors, ok, op, path, query_int

LINK_ID = path("linkId", "The link's id (the Filum answer's `id`)", type="string", pattern="^[0-9]{1,19}$")
NOT_FOUND = "Survey or link not found"

OPERATIONS: dict[tuple[str, str], Operation] = {
    ("GET", CREATED_LINKS): op(
        "list_created_links", "The survey's created links, newest first, a page at a time", "management",
        {**ok(CreatedLinksPage, "A page; `meta.nextCursor` names the next one (null: the last page)",
              headers=PERSONAL),
         **errors(FORMBRICKS, *GUARDED, 404, e404="Survey not found",
                  e422="An invalid `limit`, a `cursor` that was altered or belongs to another list, or a "
                       "query parameter the operation does not take")},
        description="Revoked links are listed too (`revokedAt`). The cursor is opaque and stable while links "
                    "are added: every link that existed when the first page was read is answered exactly once.",
        parameters=[SURVEY_ID, query_int("limit", "Links per page"),
                    {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"},
                     "description": "The `meta.nextCursor` of the page before; absent or empty: the first page"}]),
    ("GET", f"{CREATED_LINKS}/{{linkId}}"): op(
        "get_created_link", "One created link, with its revocation and its opens", "management",
        {**ok(CreatedLinkData, "The link", headers=PERSONAL), **errors(FORMBRICKS, *GUARDED, 404, e404=NOT_FOUND)},
        parameters=[SURVEY_ID, LINK_ID]),
    ("DELETE", f"{CREATED_LINKS}/{{linkId}}"): op(
        "revoke_created_link", "Revoke a created link", "management",
        {"204": {"description": "Revoked (also when it was already: nothing changes)"},
         **errors(FORMBRICKS, *GUARDED, 404, e404=NOT_FOUND)},
        description="From the answer on, the link's `survey_url` answers 410 on every instance, no replay of "
                    "the Filum path hands it out again, the same mapping makes a new link, and the link no "
                    "longer counts against the `linkQuota`. 503 when Redis does not take the revocation: "
                    "repeat the request.",
        parameters=[SURVEY_ID, LINK_ID]),
    ("POST", f"{CONTACT_LINKS}/revoke"): op(
        "revoke_contact_links", "Revoke every contact link issued for the survey so far", "links",
        {**ok(ContactLinksRevoked, "The instant of the revocation"),
         **errors(FORMBRICKS, *GUARDED, 404, e404="Survey not found", e403="The key lacks `manage`")},
        description="Every contact link (`/c/<token>`, in pages, single links and exports) issued for the survey "
                    "before this instant answers 410 from now on; links issued afterwards open. Nothing is "
                    "stored per link: the survey's link generation moves on and new links carry it.",
        parameters=[SURVEY_ID]),
}
