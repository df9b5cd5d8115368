"""QR codes of links: they decode back to the exact link the API handed out, are refused as opening
refuses the link (forgeries without a database query), and bound their options."""

from __future__ import annotations

import time
import uuid

import pytest
import zxingcpp

from service.core.signing import LinkSigner
from service.settings import SigningKey
from service.web.keys import OPENS, POOL
from service.web.qr import QrOptions, render
from tests.conftest import TEST_KEYS
from tests.contact_helpers import bulk, contact_link_path, error
from tests.helpers import create_survey, links_path
from tests.qr_decode import Decoded, decode, modules_image, png_image, png_modules, svg_modules

SURVEYS = "/api/v2/management/surveys"
BASE = "http://links.test"
LINK_404 = error(404, "Not Found", [{"field": "token", "issue": "not found"}])
NOT_IN_PROGRESS = error(410, "Gone", [{"field": "link", "issue": "the survey is not in progress"}])
EXPIRED = error(410, "Gone", [{"field": "link", "issue": "this link has expired"}])
MEDIA = {"svg": "image/svg+xml", "png": "image/png"}


@pytest.fixture
async def links(client, tenant, db):
    """A contact link and a created link of one survey, as the API answers them."""
    await bulk(client, tenant.headers, [{"email": "qr@x.io"}])
    contact_id = await db.fetchval("SELECT id FROM contacts WHERE org_id = $1", tenant.org_id)
    survey = await create_survey(client, tenant.headers)
    resp = await client.get(contact_link_path(survey["id"], str(contact_id)), headers=tenant.headers)
    contact_url = (await resp.json())["data"]["surveyUrl"]
    resp = await client.post(links_path(survey["id"]), json={"name": "SKU 1"}, headers=tenant.headers)
    created_url = (await resp.json())["survey_url"]
    seq = await db.fetchval("SELECT seq FROM surveys WHERE id = $1", uuid.UUID(survey["id"]))
    assert contact_url.startswith(f"{BASE}/c/") and created_url.startswith(f"{BASE}/l/")
    return {"survey": survey["id"], "seq": seq, "contact": contact_id, "c": contact_url, "l": created_url}


def symbol(url: str, ecc: str, border: int = 0) -> list[list[bool]]:
    """The modules zxing-cpp's writer gives `url` at level `ecc` (True dark), in a light border."""
    image = zxingcpp.create_barcode(url, zxingcpp.BarcodeFormat.QRCode, ecLevel=ecc).to_image(add_quiet_zones=False)
    height, width = image.shape
    # zxing-cpp's stub leaves out its Image's buffer protocol (the Image has one: this line runs)
    pixels = memoryview(image).tobytes()  # type: ignore[arg-type]
    rows = [[pixels[y * width + x] < 128 for x in range(width)] for y in range(height)]
    light = [False] * (width + 2 * border)
    return [light] * border + [[False] * border + row + [False] * border for row in rows] + [light] * border


def level(url: str, asked: str) -> str:
    """The level a code is drawn at: the highest from `asked` up whose smallest symbol is no larger."""
    size = len(symbol(url, asked))
    return [ecc for ecc in "LMQH"["LMQH".index(asked):] if len(symbol(url, ecc)) == size][-1]


def qr_path(url: str, kind: str, query: str = "") -> str:
    return url.removeprefix(BASE) + f"/qr.{kind}" + (f"?{query}" if query else "")


async def fetch(client, path: str, status: int = 200) -> bytes:
    resp = await client.get(path)
    body = await resp.read()
    assert resp.status == status, (path, body[:300])
    return body


@pytest.mark.parametrize("link", ["c", "l"])
async def test_both_formats_decode_to_the_exact_link(client, links, link):
    url = links[link]
    svg_resp = await client.get(qr_path(url, "svg"), headers={"X-Request-Id": "qr-1"})
    assert svg_resp.status == 200
    assert (svg_resp.headers["Content-Type"], svg_resp.headers["Cache-Control"]) == ("image/svg+xml",
                                                                                     "private, no-store")
    assert svg_resp.headers["X-Request-Id"] == "qr-1"
    png_resp = await client.get(qr_path(url, "png"))
    assert png_resp.status == 200
    assert (png_resp.headers["Content-Type"], png_resp.headers["Cache-Control"]) == ("image/png", "private, no-store")
    png = png_image(await png_resp.read())
    decoded = decode(png)
    assert decoded.text == url
    assert decoded.ec_level == level(url, "M")  # the default M, or more when the size allows it
    svg = svg_modules(await svg_resp.read())
    assert decode(modules_image(svg.modules)).text == url
    # the same code in both, drawn with the defaults: 4 px a module, a border of 4 modules
    assert svg.scale == 4 and (svg.width, svg.height) == (png.width, png.height)
    assert png_modules(png, 4) == svg.modules
    assert not any(any(row) for row in svg.modules[:4] + svg.modules[-4:])
    assert svg.modules == symbol(url, level(url, "M"), border=4)


async def test_showing_a_code_is_not_an_open(client, links, db):
    for link in ("c", "l"):
        for kind in ("svg", "png"):
            await fetch(client, qr_path(links[link], kind))
    counter = client.app[OPENS]
    assert counter.pending == 0
    await counter.flush()
    assert await db.fetchval("SELECT count(*) FROM link_opens") == 0
    assert await db.fetchval("SELECT count(*) FROM contact_opens") == 0
    # while opening the same links is counted
    for link in ("c", "l"):
        assert (await client.get(links[link].removeprefix(BASE))).status == 200
    await counter.flush()
    survey_id = uuid.UUID(links["survey"])
    assert await db.fetchval("SELECT count FROM contact_opens WHERE survey_id = $1", survey_id) == 1
    assert await db.fetchval("SELECT o.count FROM link_opens o JOIN survey_links l ON l.id = o.link_id"
                             " WHERE l.survey_id = $1", survey_id) == 1


@pytest.mark.parametrize("link", ["c", "l"])
async def test_options_change_the_drawing_not_the_link(client, links, link):
    url = links[link]
    size = len(symbol(url, "H"))
    png = png_image(await fetch(client, qr_path(url, "png", "ecc=H&scale=2&border=0&utm_source=mail")))
    assert (png.width, png.height) == (size * 2, size * 2)
    # no quiet zone: give the decoder one by drawing the modules inside a light frame
    framed = [[False] * (size + 8)] * 4 + [[False] * 4 + row + [False] * 4 for row in png_modules(png, 2)] \
        + [[False] * (size + 8)] * 4
    assert decode(modules_image(framed)) == decode(png_image(await fetch(client, qr_path(url, "png", "ecc=h"))))
    assert decode(modules_image(framed)).text == url
    assert decode(modules_image(framed)).ec_level == "H"
    svg = svg_modules(await fetch(client, qr_path(url, "svg", "ecc=q&scale=1&border=10&x=1")))
    assert (svg.scale, svg.width) == (1, len(symbol(url, "Q")) + 20)
    assert decode(modules_image(svg.modules)) == Decoded(url, level(url, "Q"))
    big = png_image(await fetch(client, qr_path(url, "png", "scale=20&border=10")))
    assert big.width == (len(symbol(url, "M")) + 20) * 20
    assert decode(big) == Decoded(url, level(url, "M"))


@pytest.mark.parametrize("link", ["c", "l"])
async def test_each_level_is_the_one_asked_or_a_higher_one_of_the_same_size(client, links, link):
    url = links[link]
    drawn = {}
    for asked in "LMQH":
        svg = svg_modules(await fetch(client, qr_path(url, "svg", f"ecc={asked}&scale=1")))
        drawn[asked] = decode(modules_image(svg.modules)).ec_level
        assert drawn[asked] == level(url, asked)
        assert svg.modules == symbol(url, drawn[asked], border=4)
    assert drawn["H"] == "H" and list(drawn.values()) == sorted(drawn.values(), key="LMQH".index)


def query_issue(field: str, issue: str) -> dict[str, str]:
    return {"field": field, "issue": issue}


@pytest.mark.parametrize(("query", "details"), [
    ("scale=0", [query_issue("scale", "ensure this value is greater than or equal to 1")]),
    ("scale=21", [query_issue("scale", "ensure this value is less than or equal to 20")]),
    ("scale=99999999999999999999", [query_issue("scale", "ensure this value is less than or equal to 20")]),
    ("scale=1e9", [query_issue("scale", "value is not a valid integer")]),
    ("scale=", [query_issue("scale", "value is not a valid integer")]),
    ("border=11", [query_issue("border", "ensure this value is less than or equal to 10")]),
    ("border=-1", [query_issue("border", "ensure this value is greater than or equal to 0")]),
    ("ecc=X", [query_issue("ecc", "value is not a valid enumeration member; permitted: 'L', 'M', 'Q', 'H'")]),
    ("ecc=", [query_issue("ecc", "value is not a valid enumeration member; permitted: 'L', 'M', 'Q', 'H'")]),
    ("ecc=L&ecc=H", [query_issue("ecc", "give this parameter at most once")]),
    ("scale=2&scale=3&border=99&ecc=Z", [
        query_issue("ecc", "value is not a valid enumeration member; permitted: 'L', 'M', 'Q', 'H'"),
        query_issue("scale", "give this parameter at most once"),
        query_issue("border", "ensure this value is less than or equal to 10")]),
])
async def test_options_out_of_bounds_are_422_naming_them(client, links, query, details):
    for link, kind in (("c", "svg"), ("l", "png")):
        resp = await client.get(qr_path(links[link], kind, query))
        assert (resp.status, await resp.json()) == (422, error(422, "Unprocessable Entity", details)), (link, query)


async def test_forged_links_are_404_without_a_database_query(client, links):
    token = links["c"].removeprefix(f"{BASE}/c/")
    kid, public_id, mac = links["l"].removeprefix(f"{BASE}/l/").split(".")
    header, payload, signature = token.split(".")
    claims = LinkSigner(TEST_KEYS).verify_contact_token(token)
    wrong_secret = LinkSigner([SigningKey(TEST_KEYS[0].kid, b"not-the-real-secret-not-the-real-secret")])
    unknown_kid = LinkSigner([SigningKey("zz", TEST_KEYS[0].secret)])
    forged = [
        f"/c/{header}.{payload}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}",
        f"/c/{wrong_secret.contact_token(claims.survey_seq, claims.contact_id, None)}",
        f"/c/{unknown_kid.contact_token(claims.survey_seq, claims.contact_id, None)}",
        "/c/garbage",
        f"/l/{kid}.{public_id}.{'A' if mac[0] != 'A' else 'B'}{mac[1:]}",
        f"/l/zz.{public_id}.{mac}",
        f"/l/{wrong_secret.created_link_token(public_id)}",
        "/l/nodots",
    ]
    for path in forged:
        for kind in ("svg", "png"):
            resp = await client.get(f"{path}/qr.{kind}")
            assert (resp.status, await resp.json()) == (404, LINK_404), path
            assert resp.headers["Content-Type"] == "application/json"
    # with PostgreSQL out of reach, forgeries are still 404: they never asked it anything ...
    await client.app[POOL].close()
    for path in forged:
        assert (await client.get(f"{path}/qr.svg")).status == 404, path
    # ... while genuine links do ask (as opening them does), and so fail
    for link in ("c", "l"):
        assert (await client.get(qr_path(links[link], "svg"))).status == 503


async def test_expired_missing_and_not_in_progress_are_refused_as_opening_refuses_them(client, tenant, links):
    signer = LinkSigner(TEST_KEYS)
    expired = signer.contact_token(links["seq"], links["contact"], int(time.time()) - 1)
    fresh = signer.contact_token(links["seq"], links["contact"], int(time.time()) + 3600)
    missing_contact = signer.contact_token(links["seq"], links["contact"] + 1000, None)
    missing_link = signer.created_link_token("0000000000000000")
    for kind in ("svg", "png"):
        resp = await client.get(f"/c/{expired}/qr.{kind}")
        assert (resp.status, await resp.json()) == (410, EXPIRED)
        for path in (f"/c/{missing_contact}", f"/l/{missing_link}"):
            resp = await client.get(f"{path}/qr.{kind}")
            assert (resp.status, await resp.json()) == (404, LINK_404), path
    assert decode(png_image(await fetch(client, f"/c/{fresh}/qr.png"))).text == f"{BASE}/c/{fresh}"
    for status in ("paused", "completed", "draft"):
        resp = await client.patch(f"{SURVEYS}/{links['survey']}", json={"status": status}, headers=tenant.headers)
        assert resp.status == 200
        for link in ("c", "l"):
            for kind in ("svg", "png"):
                resp = await client.get(qr_path(links[link], kind))
                assert (resp.status, await resp.json()) == (410, NOT_IN_PROGRESS), (status, link, kind)
                # and opening the link answers the same
                opened = await client.get(links[link].removeprefix(BASE), allow_redirects=False)
                assert (opened.status, await opened.json()) == (410, NOT_IN_PROGRESS)


async def test_openapi_documents_every_qr_route_with_its_bounds(client):
    document = await (await client.get("/openapi.json")).json()
    for link in ("c", "l"):
        for kind, media in MEDIA.items():
            operation = document["paths"][f"/{link}/{{token}}/qr.{kind}"]["get"]
            assert list(operation["responses"]["200"]["content"]) == [media]
            assert sorted(operation["responses"]) == ["200", "404", "410", "422"]
            assert operation["security"] == []
            params = {p["name"]: p for p in operation["parameters"]}
            assert params["token"]["in"] == "path"
            assert params["ecc"]["schema"] == {"type": "string", "enum": ["L", "M", "Q", "H"], "default": "M"}
            assert params["scale"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 20, "default": 4}
            assert params["border"]["schema"] == {"type": "integer", "minimum": 0, "maximum": 10, "default": 4}


def test_a_level_is_raised_only_while_the_symbol_keeps_its_size():
    url = f"{BASE}/l/k1.0123456789abcdef.ABCDEFGHIJKLMNOPQRSTUV"  # version 4 at L and at M, larger at Q and H
    sizes = {ecc: len(symbol(url, ecc)) for ecc in "LMQH"}
    assert sizes == {"L": 33, "M": 33, "Q": 37, "H": 41}
    for asked, drawn in (("L", "M"), ("M", "M"), ("Q", "Q"), ("H", "H")):
        code = svg_modules(render(url, "svg", QrOptions(asked, 1, 4)))
        assert decode(modules_image(code.modules)) == Decoded(url, drawn)
        assert code.modules == symbol(url, drawn, border=4)
