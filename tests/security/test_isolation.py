"""Organisation isolation: organisation B's key, at each of organisation A's resources, gets exactly
the answer it gets for something that does not exist (404), listings show none of A's items, and
nothing of A changes."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.contact_helpers import contact_link_path, segment_links_path
from tests.helpers import create_metadata_field, create_survey, links_path, table_snapshot
from tests.security.conftest import M, World

MISSING_UUID = str(uuid.UUID(int=0x1234))
MISSING_CONTACT = "9000000000000000000"


@dataclass(frozen=True)
class Probe:
    """A request at A's resource and the same request at a resource that does not exist."""

    method: str
    at_a: Callable[[World, dict[str, str]], str]
    at_nothing: Callable[[World, dict[str, str]], str]
    body: Any = None


# `own` holds B's own survey and segment ids, so each of A's ids is tried alone as well
PROBES: dict[str, Probe] = {
    "get survey": Probe("GET", lambda a, b: f"{M}/surveys/{a.survey_id}", lambda a, b: f"{M}/surveys/{MISSING_UUID}"),
    "patch survey": Probe("PATCH", lambda a, b: f"{M}/surveys/{a.survey_id}",
                          lambda a, b: f"{M}/surveys/{MISSING_UUID}", {"name": "taken over", "linkQuota": 0}),
    "create link on A's survey": Probe("POST", lambda a, b: links_path(a.survey_id),
                                       lambda a, b: links_path(MISSING_UUID), {"name": "x"}),
    "get segment": Probe("GET", lambda a, b: f"{M}/segments/{a.segment_id}",
                         lambda a, b: f"{M}/segments/{MISSING_UUID}"),
    "segment links, A's survey and segment": Probe(
        "GET", lambda a, b: segment_links_path(a.survey_id, a.segment_id),
        lambda a, b: segment_links_path(MISSING_UUID, MISSING_UUID)),
    "segment links, A's survey": Probe(
        "GET", lambda a, b: segment_links_path(a.survey_id, b["segment"]),
        lambda a, b: segment_links_path(MISSING_UUID, b["segment"])),
    "segment links, A's segment": Probe(
        "GET", lambda a, b: segment_links_path(b["survey"], a.segment_id),
        lambda a, b: segment_links_path(b["survey"], MISSING_UUID)),
    "export, A's survey and segment": Probe(
        "GET", lambda a, b: segment_links_path(a.survey_id, a.segment_id) + "/export",
        lambda a, b: segment_links_path(MISSING_UUID, MISSING_UUID) + "/export"),
    "export, A's survey": Probe(
        "GET", lambda a, b: segment_links_path(a.survey_id, b["segment"]) + "/export",
        lambda a, b: segment_links_path(MISSING_UUID, b["segment"]) + "/export"),
    "export, A's segment": Probe(
        "GET", lambda a, b: segment_links_path(b["survey"], a.segment_id) + "/export",
        lambda a, b: segment_links_path(b["survey"], MISSING_UUID) + "/export"),
    "contact link, A's survey and contact": Probe(
        "GET", lambda a, b: contact_link_path(a.survey_id, a.contact_id),
        lambda a, b: contact_link_path(MISSING_UUID, MISSING_CONTACT)),
    "contact link, A's survey": Probe(
        "GET", lambda a, b: contact_link_path(a.survey_id, b["contact"]),
        lambda a, b: contact_link_path(MISSING_UUID, b["contact"])),
    "contact link, A's contact": Probe(
        "GET", lambda a, b: contact_link_path(b["survey"], a.contact_id),
        lambda a, b: contact_link_path(b["survey"], MISSING_CONTACT)),
}


@pytest.fixture
async def b_side(client, make_tenant):
    """Organisation B, with a survey, a segment and a contact of its own."""
    b = await make_tenant(name="B")
    survey = await create_survey(client, b.headers)
    resp = await client.post(f"{M}/contacts", json={"attributes": {"email": "b@b.io"}}, headers=b.headers)
    contact = (await resp.json())["data"]["id"]
    resp = await client.post(f"{M}/segments", json={"title": "B's", "filters": {}}, headers=b.headers)
    segment = (await resp.json())["data"]["id"]
    return b, {"survey": survey["id"], "segment": segment, "contact": contact}


@pytest.mark.parametrize("probe", list(PROBES))
async def test_other_organisations_resources_do_not_exist(client, world, b_side, db, probe):
    b, own = b_side
    p = PROBES[probe]
    before = await table_snapshot(db)
    survey_before = await db.fetchrow("SELECT * FROM surveys WHERE id = $1::uuid", world.survey_id)
    resp = await client.request(p.method, p.at_a(world, own), json=p.body, headers=b.headers)
    nothing = await client.request(p.method, p.at_nothing(world, own), json=p.body, headers=b.headers)
    assert resp.status == 404, await resp.text()
    # not merely a 404: the very answer a missing resource gets, so nothing tells A's ids apart
    assert (resp.status, await resp.json()) == (nothing.status, await nothing.json())
    assert await table_snapshot(db) == before
    assert await db.fetchrow("SELECT * FROM surveys WHERE id = $1::uuid", world.survey_id) == survey_before
    # and A still reaches its own resource
    mine = await client.request(p.method, p.at_a(world, {**own, **_a_own(world)}), json=p.body,
                                headers=world.tenant.headers)
    assert mine.status == 200, await mine.text()


def _a_own(world: World) -> dict[str, str]:
    """A's ids in the places where a probe uses B's own, so A's request names only A's things."""
    return {"survey": world.survey_id, "segment": world.segment_id, "contact": world.contact_id}


async def test_listings_show_none_of_another_organisations_items(client, world, b_side):
    b, _ = b_side
    await create_metadata_field(client, b.headers, "B's field")
    resp = await client.get(f"{M}/metadata-fields", headers=b.headers)
    assert [f["name"] for f in (await resp.json())["data"]] == ["B's field"]
    resp = await client.post(f"{M}/contact-attribute-keys", json={"key": "tier"}, headers=b.headers)
    assert resp.status == 201
    resp = await client.get(f"{M}/contact-attribute-keys", headers=b.headers)
    keys = [k["key"] for k in (await resp.json())["data"]]
    assert "plan" not in keys and world.attribute_key_id not in [k["id"] for k in (await resp.json())["data"]]
    assert "tier" in keys
    # B's "every contact" segment holds B's contact only, and links only B's contact
    own = b_side[1]
    resp = await client.get(segment_links_path(own["survey"], own["segment"]), headers=b.headers)
    body = await resp.json()
    assert body["meta"]["total"] == 1 and [d["contactId"] for d in body["data"]] == [own["contact"]]


async def test_another_organisations_ids_in_bodies_are_unknown(client, world, b_side, db):
    b, own = b_side
    # A's metadata field in B's link
    resp = await client.post(links_path(own["survey"]), headers=b.headers, json={
        "name": "x", "metadata_mapping": [{"metadata_id": world.field_id, "value": "v"}]})
    assert resp.status == 422
    assert await resp.json() == {"detail": [{"loc": ["body", "metadata_mapping", 0, "metadata_id"],
                                             "msg": f"metadata field {world.field_id} does not exist",
                                             "type": "value_error.not_found"}]}
    # A's contact in B's static segment: B's segment counts none of it
    resp = await client.post(f"{M}/segments", headers=b.headers, json={
        "title": "steal", "filters": {"attribute": "contactId", "op": "in", "value": [world.contact_id]}})
    assert resp.status == 201
    segment = (await resp.json())["data"]
    assert segment["contactCount"] == 0
    resp = await client.get(segment_links_path(own["survey"], segment["id"]), headers=b.headers)
    assert (await resp.json())["data"] == []
    # names unique per organisation do not leak across organisations
    resp = await client.post(f"{M}/metadata-fields", headers=b.headers, json={"name": "A's field"})
    assert resp.status == 201
    resp = await client.post(f"{M}/contact-attribute-keys", headers=b.headers, json={"key": "plan"})
    assert resp.status == 201
    # A's contact's email, upserted by B: a new contact of B; A's contact is untouched
    a_contact = await db.fetchrow("SELECT * FROM contacts WHERE id = $1", int(world.contact_id))
    resp = await client.put(f"{M}/contacts/bulk", headers=b.headers, json={
        "contacts": [{"attributes": {"email": "a@a.io", "plan": "stolen"}}]})
    assert (resp.status, (await resp.json())["data"]) == (200, {"created": 1, "updated": 0})
    resp = await client.post(f"{M}/contacts", headers=b.headers, json={"attributes": {"email": "a@a.io"}})
    assert resp.status == 422  # B's own contact now holds it: a duplicate within B, not a leak of A
    assert await db.fetchrow("SELECT * FROM contacts WHERE id = $1", int(world.contact_id)) == a_contact


async def test_filum_organization_header_of_another_organisation_is_403(client, world, b_side):
    b, own = b_side
    headers = {**b.headers, "organization-id": world.tenant.org}
    resp = await client.post(links_path(own["survey"]), json={"name": "x"}, headers=headers)
    assert (resp.status, await resp.json()) == (403, {"detail": "Permission denied"})


async def test_another_organisation_never_gets_a_cached_answer(client, world, b_side, redis_url):
    """A's answer sits in the Redis replay cache; B sending A's very request must not be served it."""
    b, own = b_side
    cache = aioredis.Redis.from_url(redis_url)
    try:
        cached = [k async for k in cache.scan_iter(match=f"{{o:{world.tenant.org}}}:lk:*")]
    finally:
        await cache.aclose()
    assert cached, "A's link answer is in the replay cache"
    body = {"name": "A's link", "metadata_mapping": [{"metadata_id": world.field_id, "value": "secret-of-A"}]}
    replay = await client.post(links_path(world.survey_id), json=body, headers=world.tenant.headers)
    assert replay.headers.get("Idempotent-Replayed") == "true" and await replay.json() == world.link
    resp = await client.post(links_path(world.survey_id), json=body, headers=b.headers)
    assert (resp.status, await resp.json()) == (404, {"detail": {"message": "not_found",
                                                                 "params": {"model": "survey_campaign"}}})
    resp = await client.post(links_path(own["survey"]), json=body, headers=b.headers)
    assert resp.status == 422 and "secret-of-A" not in await resp.text()
