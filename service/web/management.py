"""Management API (scope `manage`): surveys and metadata fields."""

from __future__ import annotations

from aiohttp import web

from ..core.errors import Issue, NotFound, ValidationFailed
from ..db import surveys as survey_db
from .auth import guarded, principal_of
from .fields import MANAGEMENT, load, path_uuid
from .jsonio import json_response, read_json
from .keys import POOL
from .render import metadata_field_json, survey_json
from .schemas import MetadataFieldCreateSchema, SurveyCreateSchema, SurveyPatchSchema

routes = web.RouteTableDef()
# schemas are built once: marshmallow copies every declared field when one is instantiated
_survey_create = SurveyCreateSchema()
_survey_patch = SurveyPatchSchema()
_metadata_field_create = MetadataFieldCreateSchema()
BASE = MANAGEMENT


@routes.post(f"{BASE}/surveys")
@guarded("manage")
async def create_survey(request: web.Request) -> web.Response:
    """Create a survey (a survey campaign on the Filum path)."""
    data = load(_survey_create, await read_json(request))
    async with request.app[POOL].acquire() as conn:
        survey = await survey_db.insert_survey(
            conn, principal_of(request).org_id, data["name"], data["status"], data["link_quota"],
            data["redirect_url"], data["link_format"],
        )
    return json_response({"data": survey_json(survey)}, status=201)


@routes.get(f"{BASE}/surveys/{{surveyId}}")
@guarded("manage")
async def get_survey(request: web.Request) -> web.Response:
    """One survey with its link count."""
    survey_id = path_uuid(request, "surveyId", "survey")
    async with request.app[POOL].acquire() as conn:
        survey = await survey_db.get_survey(conn, principal_of(request).org_id, survey_id)
    if survey is None:
        raise NotFound("survey", field="surveyId")
    return json_response({"data": survey_json(survey)})


@routes.patch(f"{BASE}/surveys/{{surveyId}}")
@guarded("manage")
async def patch_survey(request: web.Request) -> web.Response:
    """Change a survey's name, status, link quota, redirect URL or contact-link format."""
    survey_id = path_uuid(request, "surveyId", "survey")
    changes = load(_survey_patch, await read_json(request))
    async with request.app[POOL].acquire() as conn:
        survey = await survey_db.update_survey(conn, principal_of(request).org_id, survey_id, changes)
    if survey is None:
        raise NotFound("survey", field="surveyId")
    return json_response({"data": survey_json(survey)})


@routes.post(f"{BASE}/metadata-fields")
@guarded("manage")
async def create_metadata_field(request: web.Request) -> web.Response:
    """Create a metadata field; `variable` defaults to `name` and is unique per organisation."""
    data = load(_metadata_field_create, await read_json(request))
    variable = data.get("variable", data["name"])
    async with request.app[POOL].acquire() as conn:
        field = await survey_db.insert_metadata_field(conn, principal_of(request).org_id, data["name"], variable)
    if field is None:
        raise ValidationFailed([Issue(("body", "variable"), f"variable {variable!r} already exists",
                                      "value_error.duplicate")])
    return json_response({"data": metadata_field_json(field)}, status=201)


@routes.get(f"{BASE}/metadata-fields")
@guarded("manage")
async def list_metadata_fields(request: web.Request) -> web.Response:
    """Every metadata field of the organisation, oldest first."""
    async with request.app[POOL].acquire() as conn:
        items = await survey_db.list_metadata_fields(conn, principal_of(request).org_id)
    return json_response({"data": [metadata_field_json(f) for f in items]})
