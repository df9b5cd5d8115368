"""The quick start as a newcomer meets it: `serve` on a port of its own without PUBLIC_BASE_URL, the
README's command blocks and the demo's printed commands pasted into a shell as they are."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import stat
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.ops import serving

REPO = Path(__file__).resolve().parents[2]


def quick_start_blocks() -> dict[str, str]:
    """The ```sh blocks of the README's quick start, by what they do."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    named = {"serve": "scripts/serve\n", "test": "scripts/test\n"}
    for block in blocks:
        if "create-org" in block:
            named["first link"] = block
        elif "service demo" in block:
            named["demo"] = block
    # a block added to the quick start gets a test here; serve and test are what the fixture and CI run
    assert sorted(blocks) == sorted(named.values()), blocks
    return named


def cli_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in serving.SCRUBBED}
    return {**env, "DATA_DIR": str(data_dir), "LOG_LEVEL": "WARNING"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`python -m service serve --port P` on embedded servers, PUBLIC_BASE_URL unset."""
    root = tmp_path_factory.mktemp("quickstart")
    started = serving.start({}, workers=1, log_path=root / "serve.log", data_dir=root / "data")
    try:
        asyncio.run(serving.wait_healthy(started))
        yield started
    finally:
        started.stop()


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A directory laid out as a clone after scripts/serve: `.venv/bin/python` is this test's Python."""
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    return tmp_path


def paste(block: str, cwd: Path, data_dir: Path) -> subprocess.CompletedProcess:
    """The block as a terminal would run it: bash, no `set -e`, in the checkout."""
    return subprocess.run(["bash", "-c", block], cwd=cwd, env={**cli_env(data_dir), "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_taken_port_is_one_line_and_exit_1(tmp_path, workers):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "service", "serve", "--port", str(port), "--workers", str(workers)],
            env=cli_env(tmp_path / "data"), capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 1
    assert result.stderr == (f"python -m service serve: port {port} is already in use on 127.0.0.1:"
                             " stop what listens there or choose another --port\n")
    assert result.stdout == ""
    assert not (tmp_path / "data").exists()  # refused before any embedded server started


async def test_links_follow_the_port(served):
    key = await serving.embedded_tenant(served.data_dir)
    headers = {"x-api-key": key}
    async with aiohttp.ClientSession(served.base_url) as http:
        async with http.post("/api/v2/management/surveys", json={"name": "S"}, headers=headers) as resp:
            assert resp.status == 201
            survey = (await resp.json())["data"]["id"]
        async with http.post("/api/v2/management/metadata-fields", json={"name": "sku"}, headers=headers) as resp:
            field = (await resp.json())["data"]["id"]
        body = {"name": "x", "metadata_mapping": [{"metadata_id": field, "value": "1"}]}
        async with http.post(f"/external/survey-campaigns/{survey}/links", json=body, headers=headers) as resp:
            assert resp.status == 200
            url = (await resp.json())["survey_url"]
        assert re.fullmatch(rf"http://127\.0\.0\.1:{served.port}/l/[\w.-]+", url), url
        async with http.put("/api/v2/management/contacts/bulk", headers=headers,
                            json={"contacts": [{"attributes": {"email": "a@example.com"}}]}) as resp:
            assert resp.status == 200
        contact = await _contact_id(served)
        async with http.get(f"/api/v2/management/surveys/{survey}/contact-links/contacts/{contact}",
                            headers=headers) as resp:
            contact_url = (await resp.json())["data"]["surveyUrl"]
        assert contact_url.startswith(f"http://127.0.0.1:{served.port}/c/"), contact_url
        for link in (url, contact_url):  # and they open where they point
            async with aiohttp.ClientSession() as opener, opener.get(link, allow_redirects=False) as resp:
                assert resp.status == 200
    serving_lines = [json.loads(line) for line in served.logs().splitlines() if '"msg":"serving"' in line]
    assert serving_lines[0]["url"] == served.base_url


async def _contact_id(served) -> str:
    import asyncpg

    from service.embedded.postgres import EmbeddedPostgres

    port = EmbeddedPostgres(served.data_dir).running_port()
    conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres")
    try:
        return str(await conn.fetchval("SELECT id FROM contacts WHERE attributes->>'email' = 'a@example.com'"))
    finally:
        await conn.close()


def test_url_names_the_running_server(served, tmp_path):
    found = subprocess.run([sys.executable, "-m", "service", "url"], env=cli_env(served.data_dir),
                           capture_output=True, text=True, timeout=60)
    assert (found.returncode, found.stdout, found.stderr) == (0, served.base_url + "\n", "")
    none = subprocess.run([sys.executable, "-m", "service", "url"], env=cli_env(tmp_path / "empty"),
                          capture_output=True, text=True, timeout=60)
    assert (none.returncode, none.stdout) == (1, "")
    assert none.stderr == f"no server runs on DATA_DIR {tmp_path / 'empty'} (start one: scripts/serve)\n"


def test_the_readme_first_link_block_pasted_as_it_is(served, checkout):
    result = paste(quick_start_blocks()["first link"], checkout, served.data_dir)
    assert result.stderr == "", result.stderr
    link, *opened = result.stdout.splitlines()
    assert re.fullmatch(rf"http://127\.0\.0\.1:{served.port}/l/[\w.-]+", link), result.stdout
    assert opened[0].startswith("HTTP/1.1 200 ")
    facts = json.loads(opened[-1])["data"]
    assert facts["metadata"] == {"SKU Number": "SKU-12345"}


def test_the_demo_output_pasted_whole(served, checkout):
    demo = paste(quick_start_blocks()["demo"], checkout, served.data_dir)
    assert demo.returncode == 0, demo.stderr
    assert f"# For the server at {served.base_url}:" in demo.stdout
    # every URL it prints is the server's, and every line a comment, a command or blank
    assert set(re.findall(r"http://[^/'\s:]+:\d+", demo.stdout)) == {served.base_url}
    assert all(not line or line.startswith(("#", "curl ")) for line in demo.stdout.splitlines())
    result = paste(demo.stdout, checkout, served.data_dir)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    statuses = re.findall(r"^HTTP/1.1 (\d+)", result.stdout, flags=re.MULTILINE)
    # steps 3 and 4 open the links (200), step 8 opens the contact link after the PATCH: the promised 302
    assert statuses == ["200", "200", "302"], result.stdout
    assert re.search(r"^Location: https://example\.com/thanks\?from=demo&surveyId=[\w-]+&contactId=\d+\r?$",
                     result.stdout, flags=re.MULTILINE), result.stdout
    answers = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    # six API calls, none refused (no 429 from the demo organisation's own policy), and the two opened links
    assert len(answers) == 8 and all("data" in a or "survey_url" in a for a in answers), answers
