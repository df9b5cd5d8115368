"""Short contact links (`linkFormat: short`): minted by the page, the single link and the export as
`/s/<32 characters>`, opened, expired, revoked and refused exactly as `/c/` links are."""

from __future__ import annotations

import csv
import dataclasses
import io
import time
import uuid
from datetime import UTC, datetime

import pytest

from service.core.short_links import COMPACT_CHARS, EPOCH, HOUR, ShortLinks, key_tag
from service.core.signing import ContactClaims
from service.settings import SigningKey
from service.web.keys import POOL
from tests.conftest import TEST_KEYS
from tests.contact_helpers import bulk, contact_link_path, create_segment, error, page, segment_links_path
from tests.helpers import create_survey
from tests.qr_decode import decode, modules_image, png_image, svg_modules

SURVEYS = "/api/v2/management/surveys"
BASE = "http://links.test"
NEW_KEY = SigningKey("t2", b"the-rotated-in-signing-secret-0123456789")
LINK_404 = error(404, "Not Found", [{"field": "token", "issue": "not found"}])
EXPIRED = error(410, "Gone", [{"field": "link", "issue": "this link has expired"}])
REVOKED = error(410, "Gone", [{"field": "link", "issue": "the link was revoked"}])
NOT_IN_PROGRESS = error(410, "Gone", [{"field": "link", "issue": "the survey is not in progress"}])
CODEC = ShortLinks(TEST_KEYS)


def token_of(url: str, prefix: str = "/s/") -> str:
    assert url.startswith(BASE + prefix), url
    return url.removeprefix(BASE + prefix)


async def patch_survey(client, tenant, survey_id: str, **changes) -> dict:
    resp = await client.patch(f"{SURVEYS}/{survey_id}", json=changes, headers=tenant.headers)
    assert resp.status == 200, await resp.text()
    return (await resp.json())["data"]


@pytest.fixture
async def short(client, tenant, db):
    """A short-link survey, a contact, a segment of everyone, and the contact's link as the API answers it."""
    await bulk(client, tenant.headers, [{"email": "sms@x.io"}])
    contact_id = await db.fetchval("SELECT id FROM contacts WHERE org_id = $1", tenant.org_id)
    survey = await create_survey(client, tenant.headers, linkFormat="short")
    seq = await db.fetchval("SELECT seq FROM surveys WHERE id = $1", uuid.UUID(survey["id"]))
    segment = await create_segment(client, tenant.headers, {})
    resp = await client.get(contact_link_path(survey["id"], str(contact_id)), headers=tenant.headers)
    assert resp.status == 200
    url = (await resp.json())["data"]["surveyUrl"]
    return {"survey": survey["id"], "seq": seq, "contact": contact_id, "segment": segment["id"],
            "token": token_of(url), "url": url}


async def test_link_format_on_create_get_and_patch(client, tenant):
    default = await create_survey(client, tenant.headers)
    assert default["linkFormat"] == "jwt"
    survey = await create_survey(client, tenant.headers, linkFormat="short")
    assert survey["linkFormat"] == "short"
    resp = await client.get(f"{SURVEYS}/{survey['id']}", headers=tenant.headers)
    assert (await resp.json())["data"]["linkFormat"] == "short"
    assert (await patch_survey(client, tenant, survey["id"], linkFormat="jwt"))["linkFormat"] == "jwt"
    assert (await patch_survey(client, tenant, survey["id"], name="renamed"))["linkFormat"] == "jwt"
    for body in ({"linkFormat": "tiny"}, {"linkFormat": None}, {"linkFormat": 1}):
        resp = await client.patch(f"{SURVEYS}/{survey['id']}", json=body, headers=tenant.headers)
        assert resp.status == 422, body
        assert (await resp.json())["error"]["details"][0]["field"] == "linkFormat", body
    resp = await client.post(SURVEYS, json={"name": "x", "linkFormat": "SHORT"}, headers=tenant.headers)
    assert resp.status == 422


async def test_single_link_is_short_and_opens_as_a_contact_link(client, tenant, short):
    assert len(short["token"]) == COMPACT_CHARS
    assert CODEC.verify(short["token"]) == ContactClaims(short["seq"], short["contact"], None, 1)
    resp = await client.get(f"/s/{short['token']}", allow_redirects=False)
    assert resp.status == 200
    assert await resp.json() == {"data": {"surveyId": short["survey"], "contactId": str(short["contact"])}}
    assert (resp.headers["Cache-Control"], resp.headers["Referrer-Policy"]) == ("no-store", "no-referrer")
    await patch_survey(client, tenant, short["survey"], redirectUrl="https://example.com/go?x=1")
    resp = await client.get(f"/s/{short['token']}", allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == (
        f"https://example.com/go?x=1&surveyId={short['survey']}&contactId={short['contact']}")


async def test_page_answers_s_links_for_short_and_c_links_for_jwt(client, tenant, short):
    before = int(time.time())
    body = await page(client, tenant.headers, short["survey"], short["segment"], expirationDays=2)
    [item] = body["data"]
    token = token_of(item["surveyUrl"])
    claims = CODEC.verify(token)
    assert claims.expires_at is not None
    # a short link expires on the hour: the expiry is rounded up, and that instant is answered
    assert (claims.expires_at - EPOCH) % HOUR == 0
    assert before + 2 * 86_400 <= claims.expires_at < int(time.time()) + 2 * 86_400 + HOUR
    assert item["expiresAt"] == datetime.fromtimestamp(claims.expires_at, UTC).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")
    assert (await client.get(f"/s/{token}")).status == 200
    # PATCH flips the format: the same page now answers JWT links, which open through /c/
    await patch_survey(client, tenant, short["survey"], linkFormat="jwt")
    [item] = (await page(client, tenant.headers, short["survey"], short["segment"]))["data"]
    jwt_token = token_of(item["surveyUrl"], "/c/")
    assert jwt_token.count(".") == 2
    assert (await client.get(f"/c/{jwt_token}")).status == 200
    # links already handed out keep opening: the format is how new links are written
    assert (await client.get(f"/s/{short['token']}")).status == 200
    await patch_survey(client, tenant, short["survey"], linkFormat="short")
    [item] = (await page(client, tenant.headers, short["survey"], short["segment"]))["data"]
    assert item["surveyUrl"] == short["url"]


async def test_export_writes_short_links(client, tenant, short):
    resp = await client.get(segment_links_path(short["survey"], short["segment"]) + "/export",
                            headers=tenant.headers)
    assert resp.status == 200
    rows = list(csv.reader(io.StringIO((await resp.read()).decode(), newline="")))
    assert rows == [["contactId", "surveyUrl", "expiresAt"], [str(short["contact"]), short["url"], ""]]


def forgeries(token: str) -> dict[str, str]:
    """Short tokens for the target's survey and contact that must never open."""
    claims = CODEC.verify(token)
    wrong_secret = ShortLinks([SigningKey(TEST_KEYS[0].kid, b"not-the-real-secret-not-the-real-secret")])
    assert key_tag("zz") != key_tag(TEST_KEYS[0].kid)
    unknown_kid = ShortLinks([SigningKey("zz", TEST_KEYS[0].secret)])
    flipped = "A" if token[5] != "A" else "B"
    return {
        "tampered byte": token[:5] + flipped + token[6:],
        "tampered contact": CODEC.token(claims.survey_seq, claims.contact_id + 1, None, 1)[:20] + token[20:],
        "wrong key": wrong_secret.token(claims.survey_seq, claims.contact_id, None, 1),
        "unknown key id": unknown_kid.token(claims.survey_seq, claims.contact_id, None, 1),
        "truncated": token[:-1],
        "too long": token + "AAAA",
        "far too long": token * 100,
        "malformed": "not-a-token",
        "a JWT on the short path": "eyJhbGciOiJIUzI1NiJ9.eyJzIjoxLCJjIjoxfQ.AAAA",
    }


async def test_forged_short_links_are_404_without_a_database_query(client, short):
    cases = forgeries(short["token"])
    for name, forged in cases.items():
        resp = await client.get(f"/s/{forged}")
        assert (resp.status, await resp.json()) == (404, LINK_404), name
        assert (await client.get(f"/s/{forged}/qr.svg")).status == 404, name
    # with PostgreSQL out of reach, forgeries are still 404: they never asked it anything ...
    await client.app[POOL].close()
    for name, forged in cases.items():
        resp = await client.get(f"/s/{forged}")
        assert (resp.status, await resp.json()) == (404, LINK_404), name
    # ... and neither does an expired link, while a genuine one does ask, and so fails
    expired = CODEC.token(short["seq"], short["contact"], EPOCH + HOUR, 1)
    assert (await client.get(f"/s/{expired}")).status == 410
    assert (await client.get(f"/s/{short['token']}")).status == 503


async def test_expired_missing_revoked_and_closed_are_refused_as_c_refuses_them(client, tenant, db, short):
    last_hour = EPOCH + (int(time.time()) - EPOCH) // HOUR * HOUR
    resp = await client.get(f"/s/{CODEC.token(short['seq'], short['contact'], last_hour, 1)}",
                            headers={"X-Request-Id": "short-410"})
    assert (resp.status, await resp.json()) == (410, EXPIRED)
    assert resp.headers["X-Request-Id"] == "short-410"
    assert (await client.get(f"/s/{CODEC.token(short['seq'], short['contact'], last_hour + 2 * HOUR, 1)}")
            ).status == 200
    for seq, contact in ((short["seq"], short["contact"] + 1000), (short["seq"] + 1000, short["contact"]),
                         (short["seq"], 2**40)):
        resp = await client.get(f"/s/{CODEC.token(seq, contact, None, 1)}")
        assert (resp.status, await resp.json()) == (404, LINK_404), (seq, contact)
    # revocation: the survey's generation moves on, and every link of an older one is 410
    await db.execute("UPDATE surveys SET link_generation = 2 WHERE id = $1", uuid.UUID(short["survey"]))
    resp = await client.get(f"/s/{short['token']}")
    assert (resp.status, await resp.json()) == (410, REVOKED)
    assert (await client.get(f"/s/{short['token']}/qr.svg")).status == 410
    # links minted since carry the new generation and open
    [item] = (await page(client, tenant.headers, short["survey"], short["segment"]))["data"]
    fresh = token_of(item["surveyUrl"])
    assert CODEC.verify(fresh).generation == 2
    assert (await client.get(f"/s/{fresh}")).status == 200
    for status in ("paused", "completed", "draft"):
        await patch_survey(client, tenant, short["survey"], status=status)
        resp = await client.get(f"/s/{fresh}")
        assert (resp.status, await resp.json()) == (410, NOT_IN_PROGRESS), status


async def test_key_rotation(aiohttp_client, client, tenant, settings, short):
    from service.app import create_app

    rotated = await aiohttp_client(create_app(dataclasses.replace(settings, signing_keys=(NEW_KEY, *TEST_KEYS))))
    # the old key's links still open
    assert (await rotated.get(f"/s/{short['token']}")).status == 200
    [item] = (await page(rotated, tenant.headers, short["survey"], short["segment"]))["data"]
    token = token_of(item["surveyUrl"])
    assert token != short["token"]
    assert ShortLinks([NEW_KEY]).verify(token) == ContactClaims(short["seq"], short["contact"], None, 1)
    assert (await rotated.get(f"/s/{token}")).status == 200
    # the old deployment does not know the new key
    resp = await client.get(f"/s/{token}")
    assert (resp.status, await resp.json()) == (404, LINK_404)


async def test_qr_code_of_a_short_link_decodes_to_it(client, short):
    resp = await client.get(f"/s/{short['token']}/qr.svg")
    assert resp.status == 200
    assert (resp.headers["Content-Type"], resp.headers["Cache-Control"]) == ("image/svg+xml", "private, no-store")
    assert decode(modules_image(svg_modules(await resp.read()).modules)).text == short["url"]
    resp = await client.get(f"/s/{short['token']}/qr.png")
    assert resp.status == 200
    assert decode(png_image(await resp.read())).text == short["url"]
