"""Links made before `serve` restarts still open after it: the signing key and the data live in DATA_DIR."""

from __future__ import annotations

import re

import aiohttp
import pytest

from tests.contact_helpers import contact_link_path
from tests.helpers import create_survey, links_path
from tests.ops import serving

# real processes: `serve` on embedded servers, stopped and started again (~20 s)
pytestmark = pytest.mark.slow


def _path(url: str) -> str:
    return "/" + url.split("://", 1)[1].split("/", 1)[1]


async def test_links_made_before_a_restart_open_after_it(tmp_path):
    data_dir = tmp_path / "data"
    served = serving.start({}, workers=1, log_path=tmp_path / "first.log", data_dir=data_dir)
    try:
        await serving.wait_healthy(served, timeout=90)
        key = await serving.embedded_tenant(data_dir)
        headers = {"x-api-key": key}
        async with aiohttp.ClientSession(served.base_url) as http:
            survey = await create_survey(http, headers)
            async with http.post(links_path(survey["id"]), json={"name": "before the restart"},
                                 headers=headers) as resp:
                assert resp.status == 200
                created = await resp.json()
            async with http.post("/api/v2/management/contacts", json={"attributes": {"email": "kept@x.io"}},
                                 headers=headers) as resp:
                assert resp.status == 201
                contact_id = str((await resp.json())["data"]["id"])
            async with http.get(contact_link_path(survey["id"], contact_id), headers=headers) as resp:
                contact_url = (await resp.json())["data"]["surveyUrl"]
            before = {}
            for url in (created["survey_url"], contact_url):
                async with http.get(_path(url), allow_redirects=False) as resp:
                    before[url] = (resp.status, await resp.json())
        assert [status for status, _ in before.values()] == [200, 200]
    finally:
        served.stop()  # SIGTERM: the embedded servers stop with it

    # the second run logs as text: one line per request still, with its fields
    again = serving.start({"LOG_FORMAT": "text"}, workers=1, log_path=tmp_path / "second.log", data_dir=data_dir)
    try:
        await serving.wait_healthy(again, timeout=90)
        async with aiohttp.ClientSession(again.base_url) as http:
            for url, (status, body) in before.items():
                async with http.get(_path(url), allow_redirects=False) as resp:
                    assert (resp.status, await resp.json()) == (status, body), url
            # and a forged one is still refused: the key is the same key, not just any key
            forged = contact_url[:-2] + ("AA" if not contact_url.endswith("AA") else "BB")
            async with http.get(_path(forged), allow_redirects=False) as resp:
                assert resp.status == 404
                request_id = resp.headers["X-Request-Id"]
        await serving.wait_for(lambda: request_id in again.logs(), timeout=5)
    finally:
        again.stop()
    lines = again.logs().splitlines()
    line = next(line for line in lines if request_id in line)
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO service\.access request ", line), line
    assert f"request_id={request_id} method=GET route=/c/{{token}} status=404 duration_ms=" in line, line
    assert not any(line.startswith("{") for line in lines), lines[:5]
    assert not any(_path(url).rsplit("/", 1)[1] in again.logs() for url in before)  # no token in the logs
