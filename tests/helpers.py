"""Small helpers shared by the API tests."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

JSON = {"Content-Type": "application/json"}


async def create_survey(client: TestClient, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    body = {"name": "Survey", **fields}
    resp = await client.post("/api/v2/management/surveys", json=body, headers=headers)
    assert resp.status == 201, await resp.text()
    return (await resp.json())["data"]


async def create_metadata_field(client: TestClient, headers: dict[str, str], name: str,
                                variable: str | None = None) -> dict[str, Any]:
    body = {"name": name} if variable is None else {"name": name, "variable": variable}
    resp = await client.post("/api/v2/management/metadata-fields", json=body, headers=headers)
    assert resp.status == 201, await resp.text()
    return (await resp.json())["data"]


def links_path(survey_id: str) -> str:
    return f"/external/survey-campaigns/{survey_id}/links"
