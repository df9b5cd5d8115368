"""Helpers shared by the contacts, segments, contact-links and opening tests."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from service.core.segment_cache import MAX_AGE
from service.web.keys import SEGMENT_CACHE

MANAGEMENT = "/api/v2/management"
CONTACTS = f"{MANAGEMENT}/contacts"
BULK = f"{MANAGEMENT}/contacts/bulk"
ATTRIBUTE_KEYS = f"{MANAGEMENT}/contact-attribute-keys"
SEGMENTS = f"{MANAGEMENT}/segments"


def error(code: int, message: str, details: list[dict[str, str]] | tuple = ()) -> dict[str, Any]:
    """A Formbricks error body."""
    return {"error": {"code": code, "message": message, "details": list(details)}}


def segment_links_path(survey_id: str, segment_id: str) -> str:
    return f"{MANAGEMENT}/surveys/{survey_id}/contact-links/segments/{segment_id}"


def contact_link_path(survey_id: str, contact_id: str) -> str:
    return f"{MANAGEMENT}/surveys/{survey_id}/contact-links/contacts/{contact_id}"


async def bulk(client: TestClient, headers: dict[str, str], contacts: list[dict[str, Any]]) -> dict[str, int]:
    """Upsert `[{attributes}]` in one call; answers the counts."""
    resp = await client.put(BULK, json={"contacts": [{"attributes": a} for a in contacts]}, headers=headers)
    assert resp.status == 200, await resp.text()
    return (await resp.json())["data"]


async def create_segment(client: TestClient, headers: dict[str, str], filters: Any, title: str = "Segment") -> dict:
    resp = await client.post(SEGMENTS, json={"title": title, "filters": filters}, headers=headers)
    assert resp.status == 201, await resp.text()
    return (await resp.json())["data"]


async def page(client: TestClient, headers: dict[str, str], survey_id: str, segment_id: str,
               **params: Any) -> dict[str, Any]:
    resp = await client.get(segment_links_path(survey_id, segment_id), params=params, headers=headers)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def all_members(client: TestClient, headers: dict[str, str], survey_id: str, segment_id: str,
                      **params: Any) -> list[dict[str, Any]]:
    """Every item of the segment, page by page (250 at a time)."""
    items: list[dict[str, Any]] = []
    while True:
        body = await page(client, headers, survey_id, segment_id, limit=250, skip=len(items), **params)
        items += body["data"]
        if len(body["data"]) < 250:
            return items


def settle(client: TestClient, seconds: float = MAX_AGE) -> None:
    """Move the app's segment-count clock on by `seconds` (by default past the window in which a count
    may lag behind contact writes), instead of sleeping on the wall clock."""
    cache = client.app[SEGMENT_CACHE]
    before = cache.clock
    cache.clock = lambda: before() + seconds


def freeze(client: TestClient) -> None:
    """The segment-count clock stands still (settle moves it on): no count ages by the test's own slowness."""
    cache = client.app[SEGMENT_CACHE]
    now = cache.clock()
    cache.clock = lambda: now
