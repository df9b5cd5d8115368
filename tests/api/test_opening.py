"""Opening links: /c/<contact token> and /l/<created link>; forgeries cost no database query."""

from __future__ import annotations

import base64
import dataclasses
import time
import uuid

import jwt
import pytest
import redis.asyncio as aioredis

from service.core.signing import LinkSigner
from service.settings import SigningKey
from service.web.keys import POOL
from tests.conftest import TEST_KEYS
from tests.contact_helpers import bulk, contact_link_path, create_segment, error, page
from tests.helpers import create_metadata_field, create_survey, links_path

SURVEYS = "/api/v2/management/surveys"
NEW_KEY = SigningKey("t2", b"the-rotated-in-signing-secret-0123456789")
LINK_404 = error(404, "Not Found", [{"field": "token", "issue": "not found"}])


def path_of(url: str) -> str:
    assert url.startswith("http://links.test/")
    return url.removeprefix("http://links.test")


@pytest.fixture
async def target(client, tenant, db):
    await bulk(client, tenant.headers, [{"email": "a@x.io"}])
    contact_id = await db.fetchval("SELECT id FROM contacts WHERE org_id = $1", tenant.org_id)
    survey = await create_survey(client, tenant.headers)
    seq = await db.fetchval("SELECT seq FROM surveys WHERE id = $1", uuid.UUID(survey["id"]))
    resp = await client.get(contact_link_path(survey["id"], str(contact_id)), headers=tenant.headers)
    url = (await resp.json())["data"]["surveyUrl"]
    return {"survey": survey["id"], "seq": seq, "contact": contact_id, "path": path_of(url)}


async def set_survey(client, tenant, survey_id, **changes):
    resp = await client.patch(f"{SURVEYS}/{survey_id}", json=changes, headers=tenant.headers)
    assert resp.status == 200


async def test_contact_link_without_redirect_answers_json(client, target):
    resp = await client.get(target["path"], allow_redirects=False)
    assert resp.status == 200
    assert await resp.json() == {"data": {"surveyId": target["survey"], "contactId": str(target["contact"])}}
    assert resp.headers["Cache-Control"] == "no-store"


async def test_contact_link_redirects_with_the_facts(client, tenant, target):
    await set_survey(client, tenant, target["survey"], redirectUrl="https://example.com/s?src=mail&surveyId=old&q=a%20b#top")
    resp = await client.get(target["path"], allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == (
        f"https://example.com/s?src=mail&q=a%20b&surveyId={target['survey']}&contactId={target['contact']}#top")
    assert resp.headers["Referrer-Policy"] == "no-referrer"


async def test_expired_and_closed_surveys_are_410(client, tenant, target, settings):
    signer = LinkSigner(settings.signing_keys)
    expired = signer.contact_token(target["seq"], target["contact"], int(time.time()) - 1)
    resp = await client.get(f"/c/{expired}", headers={"X-Request-Id": "trace-410"})
    assert (resp.status, await resp.json()) == (410, error(410, "Gone", [
        {"field": "link", "issue": "this link has expired"}]))
    assert resp.headers["X-Request-Id"] == "trace-410"
    fresh = signer.contact_token(target["seq"], target["contact"], int(time.time()) + 3600)
    assert (await client.get(f"/c/{fresh}")).status == 200
    for status in ("paused", "completed", "draft"):
        await set_survey(client, tenant, target["survey"], status=status)
        resp = await client.get(target["path"])
        assert (resp.status, await resp.json()) == (410, error(410, "Gone", [
            {"field": "link", "issue": "the survey is not in progress"}]))


def forgeries(token: str) -> list[str]:
    header, payload, signature = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    tampered = base64.urlsafe_b64encode(
        f'{{"s":{claims["s"]},"c":{claims["c"] + 1}}}'.encode()).rstrip(b"=").decode()
    none_header = base64.urlsafe_b64encode(b'{"alg":"none","kid":"t1"}').rstrip(b"=").decode()
    wrong_key = SigningKey(TEST_KEYS[0].kid, b"not-the-real-secret-not-the-real-secret")
    return [
        f"{header}.{tampered}.{signature}",
        f"{none_header}.{payload}.",
        LinkSigner([wrong_key]).contact_token(claims["s"], claims["c"], None),
        LinkSigner([SigningKey("zz", TEST_KEYS[0].secret)]).contact_token(claims["s"], claims["c"], None),
        token[:-2],
        "garbage",
        "a.b.c",
    ]


async def test_forged_links_are_404_without_a_database_query(client, target):
    token = target["path"].removeprefix("/c/")
    for forged in forgeries(token):
        resp = await client.get(f"/c/{forged}")
        assert (resp.status, await resp.json()) == (404, LINK_404), forged
    # with PostgreSQL out of reach, forgeries are still 404: they never asked it anything ...
    await client.app[POOL].close()
    for forged in forgeries(token):
        assert (await client.get(f"/c/{forged}")).status == 404
    for forged in ("t1.abc.def", "zz.x.y", "nodots"):
        assert (await client.get(f"/l/{forged}")).status == 404
    # ... while a genuine link does ask, and so fails
    assert (await client.get(target["path"])).status == 503


async def test_valid_token_for_a_missing_contact_is_404(client, target, settings):
    signer = LinkSigner(settings.signing_keys)
    for seq, contact in ((target["seq"], target["contact"] + 1000), (target["seq"] + 1000, target["contact"]),
                         # ids no bigint holds: refused before the query, which could not take them
                         (target["seq"], 2**70), (2**63, target["contact"]), (target["seq"], 0)):
        resp = await client.get(f"/c/{signer.contact_token(seq, contact, None)}")
        assert (resp.status, await resp.json()) == (404, LINK_404), (seq, contact)


async def test_key_rotation(aiohttp_client, client, tenant, target, settings):
    from service.app import create_app

    resp = await client.post(links_path(target["survey"]), json={"name": "n"}, headers=tenant.headers)
    assert resp.status == 200
    first = await resp.json()
    old_created = path_of(first["survey_url"])
    rotated = await aiohttp_client(create_app(dataclasses.replace(settings, signing_keys=(NEW_KEY, *TEST_KEYS))))
    # the old links still open
    assert (await rotated.get(target["path"])).status == 200
    assert (await rotated.get(old_created)).status == 200
    # new links are signed with the new key, and open
    segment = await create_segment(rotated, tenant.headers, {})
    body = await page(rotated, tenant.headers, target["survey"], segment["id"])
    token = path_of(body["data"][0]["surveyUrl"]).removeprefix("/c/")
    assert jwt.get_unverified_header(token)["kid"] == "t2"
    assert jwt.decode(token, NEW_KEY.secret, algorithms=["HS256"]) == {"s": target["seq"], "c": target["contact"]}
    assert (await rotated.get(f"/c/{token}")).status == 200
    # the old deployment does not know the new key
    assert (await client.get(f"/c/{token}")).status == 404
    # created links are answered with the new kid too: the Filum replay cache still holds the answer
    # signed with t1, but its key names the kid, so the rotated deployment does not replay it stale
    r = aioredis.Redis.from_url(settings.redis_url)
    try:
        cached = sorted([k.decode() async for k in r.scan_iter(match=f"{{o:{tenant.org}}}:lk:*")])
        assert len(cached) == 1 and cached[0].startswith(f"{{o:{tenant.org}}}:lk:t1:{target['survey']}:"), cached
        resp = await rotated.post(links_path(target["survey"]), json={"name": "n"}, headers=tenant.headers)
        assert (resp.status, resp.headers["Idempotent-Replayed"]) == (200, "true")
        replay = await resp.json()
        assert {**replay, "survey_url": first["survey_url"]} == first
        assert path_of(replay["survey_url"]).startswith(f"/l/t2.{first['public_id']}.")
        cached_now = sorted([k.decode() async for k in r.scan_iter(match=f"{{o:{tenant.org}}}:lk:*")])
        assert cached_now == sorted([*cached, cached[0].replace(":lk:t1:", ":lk:t2:")])
    finally:
        await r.aclose()


@pytest.fixture
async def created(client, tenant):
    survey = await create_survey(client, tenant.headers)
    fields = {v: (await create_metadata_field(client, tenant.headers, f"Field {v}", v))["id"]
              for v in ("sku", "tags", "empty", "price", "publicId")}
    mapping = [{"metadata_id": fields["sku"], "value": "SKU-1"},
               {"metadata_id": fields["tags"], "value": [1, "a b", None]},
               {"metadata_id": fields["empty"], "value": None},
               {"metadata_id": fields["price"], "value": 2.5},
               {"metadata_id": fields["publicId"], "value": "spoof"}]
    resp = await client.post(links_path(survey["id"]), json={"name": "n", "metadata_mapping": mapping},
                             headers=tenant.headers)
    assert resp.status == 200, await resp.text()
    link = await resp.json()
    return {"survey": survey["id"], "public_id": link["public_id"], "path": path_of(link["survey_url"])}


async def test_created_link_without_redirect_answers_json(client, created):
    resp = await client.get(created["path"])
    assert resp.status == 200
    assert await resp.json() == {"data": {
        "surveyId": created["survey"], "publicId": created["public_id"],
        "metadata": {"sku": "SKU-1", "tags": [1, "a b", None], "empty": None, "price": 2.5},
    }}


async def test_created_link_redirects_with_variables(client, tenant, created):
    await set_survey(client, tenant, created["survey"], redirectUrl="https://example.com/r?sku=old&keep=1")
    resp = await client.get(created["path"], allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == (
        f"https://example.com/r?keep=1&surveyId={created['survey']}&publicId={created['public_id']}"
        "&sku=SKU-1&tags=1&tags=a%20b&tags=&empty=&price=2.5")


async def test_created_link_refusals(client, tenant, created):
    kid, public_id, mac = created["path"].removeprefix("/l/").split(".")
    def other(char: str) -> str:
        return "1" if char == "0" else "0"

    for forged in (f"{kid}.{public_id[:-1]}{other(public_id[-1])}.{mac}", f"{kid}.{public_id}.{other(mac[0])}{mac[1:]}",
                   f"zz.{public_id}.{mac}"):
        resp = await client.get(f"/l/{forged}")
        assert (resp.status, await resp.json()) == (404, LINK_404)
    signer = LinkSigner(TEST_KEYS)
    resp = await client.get(f"/l/{signer.created_link_token('0000000000000000')}")
    assert (resp.status, await resp.json()) == (404, LINK_404)
    await set_survey(client, tenant, created["survey"], status="completed")
    resp = await client.get(created["path"])
    assert (resp.status, await resp.json()) == (410, error(410, "Gone", [
        {"field": "link", "issue": "the survey is not in progress"}]))


async def test_both_kinds_of_link_keep_the_token_private_in_both_answers(client, tenant, target, created):
    # README: the 200 and the 302 both carry Cache-Control: no-store and Referrer-Policy: no-referrer
    private = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}

    def headers_of(resp) -> dict[str, str | None]:
        return {name: resp.headers.get(name) for name in private}

    for link in (target, created):
        resp = await client.get(link["path"], allow_redirects=False)
        assert resp.status == 200, link["path"]
        assert headers_of(resp) == private, link["path"]
        await set_survey(client, tenant, link["survey"], redirectUrl="https://example.com/s")
        resp = await client.get(link["path"], allow_redirects=False, headers={"X-Request-Id": "trace-302"})
        assert resp.status == 302, link["path"]
        assert headers_of(resp) == private, link["path"]
        assert resp.headers["X-Request-Id"] == "trace-302", link["path"]
