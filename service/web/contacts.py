"""Management API (scope `manage`): contact attribute keys and contacts, one at a time or in bulk."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..core.errors import Issue, NotFound, ValidationFailed
from ..db import contacts as contact_db
from .auth import guarded, principal_of
from .contact_links import path_contact_id
from .contact_schemas import (
    AttributeKeyCreateSchema,
    BulkContactsSchema,
    ContactCreateSchema,
    ContactPatchSchema,
    check_contacts,
)
from .fields import MANAGEMENT, load
from .jsonio import json_response, read_json
from .keys import POOL, SETTINGS
from .render import iso

routes = web.RouteTableDef()
# schemas are built once: marshmallow copies every declared field when one is instantiated
_attribute_key_create = AttributeKeyCreateSchema()
_contact_create = ContactCreateSchema()
_contact_patch = ContactPatchSchema()
_bulk_contacts = BulkContactsSchema()
BASE = MANAGEMENT


def attribute_key_json(key: contact_db.AttributeKey) -> dict[str, Any]:
    return {"id": str(key.id), "key": key.key, "name": key.name, "createdAt": iso(key.created_at)}


def contact_json(contact: contact_db.Contact) -> dict[str, Any]:
    # ids are bigints, answered as strings like the reference's ids
    return {"id": str(contact.id), "attributes": contact.attributes, "createdAt": iso(contact.created_at)}


@routes.post(f"{BASE}/contact-attribute-keys")
@guarded("manage")
async def create_attribute_key(request: web.Request) -> web.Response:
    """Create an attribute key; `name` defaults to the key, which is unique per organisation."""
    data = load(_attribute_key_create, await read_json(request))
    async with request.app[POOL].acquire() as conn:
        key = await contact_db.insert_attribute_key(
            conn, principal_of(request).org_id, data["key"], data.get("name", data["key"])
        )
    if key is None:
        raise ValidationFailed([Issue(("body", "key"), f"attribute key {data['key']!r} already exists",
                                      "value_error.duplicate")])
    return json_response({"data": attribute_key_json(key)}, status=201)


@routes.get(f"{BASE}/contact-attribute-keys")
@guarded("manage")
async def list_attribute_keys(request: web.Request) -> web.Response:
    """Every attribute key of the organisation, oldest first."""
    async with request.app[POOL].acquire() as conn:
        keys = await contact_db.list_attribute_keys(conn, principal_of(request).org_id)
    return json_response({"data": [attribute_key_json(k) for k in keys]})


@routes.post(f"{BASE}/contacts")
@guarded("manage")
async def create_contact(request: web.Request) -> web.Response:
    """Create a contact; attribute keys it introduces are created; an `email` must be unique."""
    data = load(_contact_create, await read_json(request))
    async with request.app[POOL].acquire() as conn:
        try:
            contact = await contact_db.insert_contact(conn, principal_of(request).org_id, data["attributes"])
        except contact_db.DuplicateEmail:
            raise _email_taken() from None
    return json_response({"data": contact_json(contact)}, status=201)


def _email_taken() -> ValidationFailed:
    """422 naming `attributes.email`: the same answer for POST and PATCH."""
    return ValidationFailed([Issue(("body", "attributes", "email"), "a contact with this email already exists",
                                   "value_error.duplicate")])


@routes.patch(f"{BASE}/contacts/{{contactId}}")
@guarded("manage")
async def patch_contact(request: web.Request) -> web.Response:
    """Merge attributes into a contact: a null removes one, new keys are created, `email` stays unique."""
    contact_id = path_contact_id(request)
    data = load(_contact_patch, await read_json(request))
    async with request.app[POOL].acquire() as conn:
        try:
            contact = await contact_db.patch_contact(conn, principal_of(request).org_id, contact_id,
                                                     data["attributes"])
        except contact_db.DuplicateEmail:
            raise _email_taken() from None
    if contact is None:
        raise NotFound("contact", field="contactId")
    return json_response({"data": contact_json(contact)})


@routes.delete(f"{BASE}/contacts/{{contactId}}")
@guarded("manage")
async def delete_contact(request: web.Request) -> web.Response:
    """Erase a contact, its attributes and its opens; its links answer 404 from then on."""
    contact_id = path_contact_id(request)
    async with request.app[POOL].acquire() as conn:
        erased = await contact_db.delete_contact(conn, principal_of(request).org_id, contact_id)
    if not erased:
        raise NotFound("contact", field="contactId")
    return web.Response(status=204)


@routes.put(f"{BASE}/contacts/bulk")
@guarded("manage")
async def upsert_contacts(request: web.Request) -> web.Response:
    """Create or update up to 10,000 contacts by their `email` attribute, all or nothing."""
    body = await read_json(request, max_bytes=request.app[SETTINGS].bulk_max_body_bytes)
    data = load(_bulk_contacts, await check_contacts(body))
    async with request.app[POOL].acquire() as conn:
        counts = await contact_db.upsert_by_email(conn, principal_of(request).org_id, data["contacts"])
    return json_response({"data": {"created": counts.created, "updated": counts.updated}})
