"""One organisation with one of everything (survey, metadata field, attribute key, contact, segment,
created link, contact link), and the checks and helpers shared by the security tests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import ClientResponse

from tests.conftest import Tenant
from tests.contact_helpers import ATTRIBUTE_KEYS, CONTACTS, SEGMENTS, contact_link_path
from tests.helpers import create_metadata_field, create_survey, links_path

M = "/api/v2/management"


@dataclass(frozen=True)
class World:
    tenant: Tenant
    survey_id: str
    field_id: int
    attribute_key_id: str
    contact_id: str
    segment_id: str
    link: dict[str, Any]
    contact_url: str

    @property
    def created_token(self) -> str:
        return self.link["survey_url"].rsplit("/l/", 1)[1]

    @property
    def contact_token(self) -> str:
        return self.contact_url.rsplit("/c/", 1)[1]


async def _created(resp: ClientResponse, status: int = 201) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    return (await resp.json())["data"]


@pytest.fixture
async def world(client, make_tenant) -> World:
    tenant = await make_tenant(name="A")
    h = tenant.headers
    survey = await create_survey(client, h, name="A's survey")
    field = await create_metadata_field(client, h, "A's field")
    key = await _created(await client.post(ATTRIBUTE_KEYS, json={"key": "plan"}, headers=h))
    contact = await _created(await client.post(CONTACTS, json={"attributes": {"email": "a@a.io", "plan": "pro"}},
                                               headers=h))
    segment = await _created(await client.post(SEGMENTS, json={"title": "A's", "filters": {}}, headers=h))
    resp = await client.post(links_path(survey["id"]), headers=h, json={
        "name": "A's link", "metadata_mapping": [{"metadata_id": field["id"], "value": "secret-of-A"}]})
    assert resp.status == 200, await resp.text()
    link = await resp.json()
    contact_link = await _created(await client.get(contact_link_path(survey["id"], contact["id"]), headers=h), 200)
    return World(tenant, survey["id"], field["id"], key["id"], contact["id"], segment["id"], link,
                 contact_link["surveyUrl"])


async def family_error(resp: ClientResponse) -> tuple[int, Any]:
    """The status and body of an error, checked to be JSON in the path's family shape."""
    assert resp.headers.get("Content-Type", "").startswith("application/json"), (resp.status, await resp.text())
    body = await resp.json()
    if resp.url.path.startswith("/external/"):
        assert set(body) == {"detail"}, body
    else:
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
        assert body["error"]["code"] == resp.status, body
        assert isinstance(body["error"]["message"], str) and isinstance(body["error"]["details"], list), body
    return resp.status, body


async def send(client, method: str, path: str, body, headers: dict[str, str]):
    """Send `body` (raw bytes, a file or an async iterator of chunks) as it is; give up after 30 s."""
    return await asyncio.wait_for(client.request(method, path, data=body, headers=headers), 30)
