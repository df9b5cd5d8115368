"""The Filum contract: creating survey links, one or a batch."""

from __future__ import annotations

from ..doc_schemas import BatchLinksOut, SurveyLinkOut
from ..schemas import BatchCreateLinksSchema, CreateLinkSchema
from .common import FILUM, Operation, body, errors, ok, op, path

# what the single and the batch create share: the path, Filum's headers, and the 403 and 404 they answer
_PARAMETERS = [
    path("survey_campaign_id", "The campaign (survey) id", type="string", format="uuid"),
    {"name": "organization-id", "in": "header", "required": False, "schema": {"type": "string"},
     "description": "When sent, must be the key's organisation (else 403)"},
    {"name": "auth-type", "in": "header", "required": False,
     "schema": {"type": "string", "enum": ["token"]}, "description": "When sent, must be `token`"},
]
_E403 = "`organization-id` is not the key's organisation, or the key lacks `links:write`"
_E404 = "Unknown campaign: `{\"detail\": {\"message\": \"not_found\", ...}}`"

OPERATIONS: dict[tuple[str, str], Operation] = {
    ("POST", "/external/survey-campaigns/{survey_campaign_id}/links"): op(
        "create_survey_link", "Create a survey link (idempotent on the metadata mapping)", "links",
        {**ok(SurveyLinkOut, "The link: new, or the existing one for this mapping "
                             "(`Idempotent-Replayed: true`)", headers=("Idempotent-Replayed", "Cache-Control")),
         **errors(FILUM, 401, 403, 404, 413, 422, 429, 503,
                  e404=_E404,
                  e422="Invalid input in pydantic v1's shapes (one item per problem; a body of another "
                       "content type is `type_error.dict`, as FastAPI answers it), or the campaign's link "
                       "quota is reached (`threshold_exceeded`)",
                  e403=_E403)},
        description="The same campaign and metadata mapping (compared as a set of (metadata_id, value) "
                    "pairs) always answer the same link, whatever `name` says, also when identical requests "
                    "arrive at once. A new link counts against the campaign's `linkQuota`; a replay never "
                    "does.",
        parameters=_PARAMETERS,
        requestBody=body(CreateLinkSchema)),
    ("POST", "/external/survey-campaigns/{survey_campaign_id}/links/batch"): op(
        "create_survey_links", "Create (or replay) up to 1,000 survey links in one call", "links",
        {**ok(BatchLinksOut, "One result per item, in request order", headers=("Cache-Control",)),
         **errors(FILUM, 401, 403, 404, 413, 422, 429, 503,
                  e404=_E404,
                  e413="Request body larger than 16 MiB",
                  e422="The envelope is not an object whose `links` is a list of 1 to 1,000 objects "
                       "(the call writes nothing); an invalid item is its own 422 result, not this",
                  e403=_E403)},
        description="Each item is answered exactly as `create_survey_link` would answer it, as if the items "
                    "were sent one after another: the same validation (`loc` under the item), idempotency "
                    "and link JSON. The same mapping twice in a batch is one link (the later item is "
                    "`replayed`); once the quota is reached the new mappings after it are refused, replays "
                    "never are. The call spends one rate-limit token and is written whole or not at all.",
        parameters=_PARAMETERS,
        requestBody=body(BatchCreateLinksSchema, "Bodies up to 16 MiB")),
}
