"""Revoking a survey's contact links: the survey's link generation moves on, new tokens carry it
(claim `g`, absent in the first generation), older ones answer 410, with no state per link."""

from __future__ import annotations

import uuid

import jwt
import pytest

from service.web.render import iso
from tests.conftest import TEST_KEYS
from tests.contact_helpers import bulk, contact_link_path, create_segment, error, page, segment_links_path
from tests.helpers import create_survey

SURVEYS = "/api/v2/management/surveys"
GONE = error(410, "Gone", [{"field": "link", "issue": "the link was revoked"}])


def path_of(url: str) -> str:
    assert url.startswith("http://links.test/")
    return url.removeprefix("http://links.test")


def claims_of(url: str) -> dict:
    return jwt.decode(path_of(url).removeprefix("/c/"), TEST_KEYS[0].secret, algorithms=["HS256"])


@pytest.fixture
async def contacts(client, tenant, db):
    await bulk(client, tenant.headers, [{"email": f"c{i}@x.io"} for i in range(3)])
    segment = await create_segment(client, tenant.headers, {})
    survey = await create_survey(client, tenant.headers)
    ids = [r["id"] for r in await db.fetch("SELECT id FROM contacts WHERE org_id = $1 ORDER BY id", tenant.org_id)]
    seq = await db.fetchval("SELECT seq FROM surveys WHERE id = $1", uuid.UUID(survey["id"]))
    return {"survey": survey["id"], "segment": segment["id"], "ids": ids, "seq": seq}


async def contact_url(client, tenant, contacts, **params) -> str:
    resp = await client.get(contact_link_path(contacts["survey"], str(contacts["ids"][0])), params=params,
                            headers=tenant.headers)
    assert resp.status == 200
    return (await resp.json())["data"]["surveyUrl"]


async def revoke_contacts(client, tenant, survey_id: str):
    return await client.post(f"{SURVEYS}/{survey_id}/contact-links/revoke", headers=tenant.headers)


async def opens(client, url: str) -> int:
    return (await client.get(path_of(url), allow_redirects=False)).status


async def test_revoking_contact_links_revokes_every_token_issued_before(client, tenant, contacts, db):
    seq, first = contacts["seq"], contacts["ids"][0]
    old = await contact_url(client, tenant, contacts)
    assert claims_of(old) == {"s": seq, "c": first}  # the first generation carries no claim
    old_page = [item["surveyUrl"] for item in
                (await page(client, tenant.headers, contacts["survey"], contacts["segment"]))["data"]]
    # a token issued before generations existed, as PyJWT writes it
    bare = "http://links.test/c/" + jwt.encode({"s": seq, "c": first}, TEST_KEYS[0].secret, "HS256",
                                               headers={"kid": TEST_KEYS[0].kid})
    assert {await opens(client, url) for url in [old, bare, *old_page]} == {200}

    resp = await revoke_contacts(client, tenant, contacts["survey"])
    row = await db.fetchrow("SELECT link_generation, contact_links_revoked_at FROM surveys WHERE id = $1",
                            uuid.UUID(contacts["survey"]))
    assert (resp.status, await resp.json()) == (200, {"data": {"revokedAt": iso(row["contact_links_revoked_at"])}})
    assert row["link_generation"] == 2
    for url in [old, bare, *old_page]:
        resp = await client.get(path_of(url), allow_redirects=False)
        assert (resp.status, await resp.json()) == (410, GONE)
        resp = await client.get(path_of(url) + "/qr.png")
        assert (resp.status, await resp.json()) == (410, GONE)

    # issued afterwards: the single link, a page, the export, with or without an expiry
    new = await contact_url(client, tenant, contacts)
    assert claims_of(new) == {"s": seq, "c": first, "g": 2}
    expiring = await contact_url(client, tenant, contacts, expirationDays=3)
    assert claims_of(expiring)["g"] == 2 and "exp" in claims_of(expiring)
    new_page = [item["surveyUrl"] for item in
                (await page(client, tenant.headers, contacts["survey"], contacts["segment"]))["data"]]
    export = await client.get(segment_links_path(contacts["survey"], contacts["segment"]) + "/export",
                              headers=tenant.headers)
    exported = [line.split(",")[1] for line in (await export.text()).splitlines()[1:]]
    assert len(exported) == 3 and all(claims_of(url)["g"] == 2 for url in [*new_page, *exported])
    assert {await opens(client, url) for url in [new, expiring, *new_page, *exported]} == {200}
    assert (await client.get(path_of(new) + "/qr.svg")).status == 200

    # once more: generation 3; the second generation's tokens are revoked in turn
    resp = await revoke_contacts(client, tenant, contacts["survey"])
    assert resp.status == 200
    assert await db.fetchval("SELECT link_generation FROM surveys WHERE id = $1", uuid.UUID(contacts["survey"])) == 3
    assert {await opens(client, url) for url in [new, *exported, old]} == {410}
    newest = await contact_url(client, tenant, contacts)
    assert claims_of(newest)["g"] == 3 and await opens(client, newest) == 200


async def test_a_contact_link_of_a_revoked_generation_is_410_before_the_survey_status(client, tenant, contacts):
    old = await contact_url(client, tenant, contacts)
    assert (await revoke_contacts(client, tenant, contacts["survey"])).status == 200
    resp = await client.patch(f"{SURVEYS}/{contacts['survey']}", json={"status": "paused"}, headers=tenant.headers)
    assert resp.status == 200
    resp = await client.get(path_of(old), allow_redirects=False)
    assert (resp.status, await resp.json()) == (410, GONE)
    # a paused survey's contact links can be revoked too
    assert (await revoke_contacts(client, tenant, contacts["survey"])).status == 200


async def test_revoking_contact_links_of_an_unknown_survey_is_404(client, tenant, make_tenant, contacts, db):
    stranger = await make_tenant()
    not_found = error(404, "Not Found", [{"field": "surveyId", "issue": "not found"}])
    for who, survey_id in ((stranger, contacts["survey"]), (tenant, str(uuid.uuid4())), (tenant, "nope")):
        resp = await revoke_contacts(client, who, survey_id)
        assert (resp.status, await resp.json()) == (404, not_found)
    assert await db.fetchval("SELECT link_generation FROM surveys WHERE id = $1", uuid.UUID(contacts["survey"])) == 1
