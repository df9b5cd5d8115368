"""The management API: surveys, metadata fields, contacts, attribute keys and segments."""

from __future__ import annotations

from ..contact_schemas import (
    AttributeKeyCreateSchema,
    BulkContactsSchema,
    ContactCreateSchema,
    ContactPatchSchema,
    SegmentCreateSchema,
    SegmentPatchSchema,
)
from ..doc_schemas import (
    AttributeKeyData,
    AttributeKeyList,
    BulkData,
    ContactData,
    MetadataFieldData,
    MetadataFieldList,
    SegmentData,
    SurveyData,
)
from ..fields import MANAGEMENT
from ..schemas import MetadataFieldCreateSchema, SurveyCreateSchema, SurveyPatchSchema
from .common import BODY_ERRORS, CONTACT_ID, FORMBRICKS, GUARDED, SEGMENT_ID, SURVEY_ID, Operation, body, errors, ok, op

OPERATIONS: dict[tuple[str, str], Operation] = {
    ("POST", f"{MANAGEMENT}/surveys"): op(
        "create_survey", "Create a survey", "management",
        {**ok(SurveyData, "The survey", 201), **errors(FORMBRICKS, *GUARDED, *BODY_ERRORS)},
        requestBody=body(SurveyCreateSchema)),
    ("GET", f"{MANAGEMENT}/surveys/{{surveyId}}"): op(
        "get_survey", "One survey, with its link count", "management",
        {**ok(SurveyData, "The survey"), **errors(FORMBRICKS, *GUARDED, 404)}, parameters=[SURVEY_ID]),
    ("PATCH", f"{MANAGEMENT}/surveys/{{surveyId}}"): op(
        "patch_survey", "Change a survey's name, status, link quota or redirect URL", "management",
        {**ok(SurveyData, "The survey"), **errors(FORMBRICKS, *GUARDED, 404, *BODY_ERRORS)},
        parameters=[SURVEY_ID], requestBody=body(SurveyPatchSchema)),
    ("POST", f"{MANAGEMENT}/metadata-fields"): op(
        "create_metadata_field", "Create a metadata field (`variable` defaults to `name`)", "management",
        {**ok(MetadataFieldData, "The field", 201), **errors(FORMBRICKS, *GUARDED, *BODY_ERRORS)},
        requestBody=body(MetadataFieldCreateSchema)),
    ("GET", f"{MANAGEMENT}/metadata-fields"): op(
        "list_metadata_fields", "Every metadata field of the organisation", "management",
        {**ok(MetadataFieldList, "The fields, oldest first"), **errors(FORMBRICKS, *GUARDED)}),
    # management: contacts and segments
    ("POST", f"{MANAGEMENT}/contact-attribute-keys"): op(
        "create_attribute_key", "Create a contact attribute key", "contacts",
        {**ok(AttributeKeyData, "The key", 201), **errors(FORMBRICKS, *GUARDED, *BODY_ERRORS)},
        requestBody=body(AttributeKeyCreateSchema)),
    ("GET", f"{MANAGEMENT}/contact-attribute-keys"): op(
        "list_attribute_keys", "Every contact attribute key of the organisation", "contacts",
        {**ok(AttributeKeyList, "The keys, oldest first"), **errors(FORMBRICKS, *GUARDED)}),
    ("POST", f"{MANAGEMENT}/contacts"): op(
        "create_contact", "Create a contact (new attribute keys are created; `email` is unique)", "contacts",
        {**ok(ContactData, "The contact", 201), **errors(FORMBRICKS, *GUARDED, *BODY_ERRORS)},
        requestBody=body(ContactCreateSchema)),
    ("PUT", f"{MANAGEMENT}/contacts/bulk"): op(
        "upsert_contacts", "Create or update up to 10,000 contacts by `email`, all or nothing", "contacts",
        {**ok(BulkData, "How many were created and updated"),
         **errors(FORMBRICKS, *GUARDED, *BODY_ERRORS)},
        requestBody=body(BulkContactsSchema, "Bodies up to BULK_MAX_BODY_BYTES (16 MiB)")),
    ("POST", f"{MANAGEMENT}/segments"): op(
        "create_segment", "Create a segment from a filter tree", "contacts",
        {**ok(SegmentData, "The segment, with how many contacts it holds", 201),
         **errors(FORMBRICKS, *GUARDED, *BODY_ERRORS, e422="Invalid input; a malformed tree names the place")},
        requestBody=body(SegmentCreateSchema)),
    ("GET", f"{MANAGEMENT}/segments/{{segmentId}}"): op(
        "get_segment", "One segment, with how many contacts it holds now", "contacts",
        {**ok(SegmentData, "The segment"), **errors(FORMBRICKS, *GUARDED, 404)}, parameters=[SEGMENT_ID]),
    ("PATCH", f"{MANAGEMENT}/segments/{{segmentId}}"): op(
        "patch_segment", "Change a segment's title and/or filters", "contacts",
        {**ok(SegmentData, "The segment, with how many contacts the new filters hold"),
         **errors(FORMBRICKS, *GUARDED, 404, *BODY_ERRORS, e422="Invalid input; a malformed tree names the place")},
        description="Counts and contact-link pages follow the new filters at once, on every worker.",
        parameters=[SEGMENT_ID], requestBody=body(SegmentPatchSchema)),
    ("DELETE", f"{MANAGEMENT}/segments/{{segmentId}}"): op(
        "delete_segment", "Delete a segment (its contacts stay)", "contacts",
        {"204": {"description": "Deleted: the segment and its contact-link pages answer 404 from now on"},
         **errors(FORMBRICKS, *GUARDED, 404)}, parameters=[SEGMENT_ID]),
    ("PATCH", f"{MANAGEMENT}/contacts/{{contactId}}"): op(
        "patch_contact", "Merge attributes into a contact (a null removes one)", "contacts",
        {**ok(ContactData, "The contact as it is now"),
         **errors(FORMBRICKS, *GUARDED, 404, *BODY_ERRORS,
                  e422="Invalid input, or the `email` is another contact's (`attributes.email`)")},
        description="Keys not given are kept; new keys are created as on creation. Concurrent patches of "
                    "one contact each apply.",
        parameters=[CONTACT_ID], requestBody=body(ContactPatchSchema)),
    ("DELETE", f"{MANAGEMENT}/contacts/{{contactId}}"): op(
        "delete_contact", "Erase a contact, its attributes and its opens", "contacts",
        {"204": {"description": "Erased: its contact links answer 404 from now on"},
         **errors(FORMBRICKS, *GUARDED, 404)}, parameters=[CONTACT_ID]),
}
