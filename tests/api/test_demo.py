"""The demo's data works with the API, and its commands name it."""

from __future__ import annotations

import shlex

from service.demo import CONTACT_COUNT, commands, create_demo
from tests.contact_helpers import segment_links_path


async def test_demo_data_and_commands(client, settings, db):
    demo = await create_demo(settings)
    headers = {"x-api-key": demo.key}
    resp = await client.get(segment_links_path(demo.survey_id, demo.segment_id), headers=headers,
                            params={"limit": "5", "attributeKeys": "email,firstName,plan,age"})
    assert resp.status == 200
    body = await resp.json()
    assert len(body["data"]) == 5 and 0 < body["meta"]["total"] < CONTACT_COUNT
    for item in body["data"]:
        assert set(item["attributes"]) == {"email", "firstName", "plan", "age"}
        assert item["attributes"]["plan"] in ("pro", "team") and int(item["attributes"]["age"]) >= 30  # as text
    opened = await client.get(demo.contact_url.removeprefix(settings.public_base_url))
    assert await opened.json() == {"data": {"surveyId": demo.survey_id, "contactId": str(demo.contact_id)}}
    created = await client.get(demo.created_url.removeprefix(settings.public_base_url))
    assert (await created.json())["data"]["metadata"] == {"sku": "SKU-12345", "channel": ["email", "sms"]}
    assert await db.fetchval("SELECT count(*) FROM contacts c JOIN organizations o ON o.id = c.org_id"
                             " WHERE o.id::text = $1", demo.org_id) == CONTACT_COUNT

    steps = commands(demo, settings.public_base_url)
    assert len(steps) == 8
    for _, command in steps:
        words = shlex.split(command)
        assert words[0] == "curl"
        if "-d" in words:
            assert "content-type: application/json" in words
        assert any(w.startswith(settings.public_base_url) for w in words)
