"""Secrets never reach logs or answers: the real server, at DEBUG level, used with an API key, a
signing key and a database password (and refused keys, which may be someone's typo of a real one);
then a server and an admin command that fail to start against closed ports with passwords in URLs."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import uuid
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from service.core.auth import SCOPES, hash_secret, new_secret
from service.db import orgs
from service.embedded.process import free_port
from tests.faults.conftest import REPO, SCRUBBED, start_serve, stop_serve
from tests.security.conftest import M


@pytest.fixture
async def role_url(servers, database_url):
    """The module's database through a role of its own, with a password in the URL."""
    role, password = f"sls_{uuid.uuid4().hex[:8]}", "pw-" + secrets.token_urlsafe(24)
    admin = await asyncpg.connect(servers.database_url)
    await admin.execute(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{password}'")
    host_and_db = database_url.split("@", 1)[1]
    yield f"postgresql://{role}:{password}@{host_and_db}", password
    module_db = await asyncpg.connect(database_url)
    await module_db.execute(f"REASSIGN OWNED BY {role} TO postgres; DROP OWNED BY {role}")
    await module_db.close()
    await admin.execute(f"DROP ROLE IF EXISTS {role}")
    await admin.close()


def _leaks(text: str, found_in: str, needles: dict[str, str]) -> list[str]:
    return [f"{name} in {found_in}" for name, value in needles.items() if value in text]


async def test_a_busy_server_logs_no_secret(role_url, database_url, redis_url, db, tmp_path):
    url, db_password = role_url
    signing_secret = secrets.token_urlsafe(40)
    org = await orgs.insert_org(db, "logs", 50, "off")
    api_key = new_secret()
    await orgs.insert_key(db, org.id, "k", hash_secret(api_key), list(SCOPES))
    wrong_key = new_secret()
    needles = {"API key": api_key, "API key body": api_key[4:], "refused key": wrong_key,
               "signing secret": signing_secret, "database password": db_password}

    server = start_serve({"DATABASE_URL": url, "REDIS_URL": redis_url, "SIGNING_KEYS": f"lk:{signing_secret}",
                          "LOG_LEVEL": "DEBUG"}, workers=2, log_path=tmp_path / "serve.log")
    answers: list[str] = []
    try:
        base = server.base_url
        good, bad = {"x-api-key": api_key}, {"x-api-key": wrong_key}
        timeout = aiohttp.ClientTimeout(total=20)
        async with aiohttp.ClientSession(timeout=timeout) as http:

            async def call(method: str, path: str, **kw) -> aiohttp.ClientResponse:
                async with http.request(method, base + path, **kw) as resp:
                    answers.append(f"{resp.status} {dict(resp.headers)} {await resp.text()}")
                    return resp

            async with http.post(f"{base}{M}/surveys", json={"name": "S"}, headers=good) as resp:
                survey = (await resp.json())["data"]["id"]
            async with http.post(f"{base}{M}/contacts", json={"attributes": {"email": "a@b.c"}}, headers=good) as r:
                contact = (await r.json())["data"]["id"]
            await call("POST", f"/external/survey-campaigns/{survey}/links", json={"name": "x"}, headers=good)
            await call("POST", f"/external/survey-campaigns/{survey}/links", json={"name": "x"},
                       headers={"Authorization": f"Bearer {api_key}", "organization-id": str(uuid.uuid4())})
            await call("GET", f"{M}/surveys/{survey}/contact-links/contacts/{contact}", headers=good)
            await call("GET", f"{M}/metadata-fields?api_key={api_key}&token={wrong_key}", headers=good)
            await call("GET", f"{M}/metadata-fields", headers=bad)
            await call("GET", f"{M}/metadata-fields", headers={"Authorization": f"Bearer {wrong_key}"})
            await call("GET", f"{M}/metadata-fields", headers={"x-api-key": api_key + "x"})
            await call("POST", f"{M}/surveys", data=b"{", headers={**good, "Content-Type": "application/json"})
            await call("POST", f"{M}/surveys", json={"name": api_key, "bogus": wrong_key}, headers=good)
            await call("PATCH", f"{M}/surveys/{api_key}", json={"name": "x"}, headers=good)
            await call("GET", f"/c/{wrong_key}")
            await call("GET", f"/l/lk.{wrong_key}.x")
            await call("GET", "/ready")
            await call("GET", "/metrics")
            await call("DELETE", f"{M}/surveys/{survey}", headers=good)
    finally:
        stop_serve(server)
    logs = server.logs()
    assert logs.count('"msg":"request"') >= 15  # the run was logged (access log of every request)
    assert _leaks(logs, "the logs", needles) == []
    # no answer echoes a key (not even the 422 of a body that holds one), a secret or the password
    assert _leaks("\n".join(answers), "an answer", needles) == []


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    inherited = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    return subprocess.run([sys.executable, "-m", "service", *args], cwd=REPO, env={**inherited, **env},
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_failing_to_start_prints_no_secret(tmp_path: Path, log_format: str):
    db_password, redis_password = "pw-" + secrets.token_urlsafe(24), "rpw-" + secrets.token_urlsafe(24)
    signing_secret = secrets.token_urlsafe(40)
    closed = free_port()
    env = {
        "DATABASE_URL": f"postgresql://someone:{db_password}@127.0.0.1:{closed}/db",
        "REDIS_URL": f"redis://:{redis_password}@127.0.0.1:{closed}/0",
        "SIGNING_KEYS": f"lk:{signing_secret}", "LOG_LEVEL": "DEBUG", "LOG_FORMAT": log_format,
        "DATA_DIR": str(tmp_path),
    }
    needles = {"database password": db_password, "redis password": redis_password,
               "signing secret": signing_secret}
    served = _run(["serve", "--port", str(free_port()), "--workers", "1"], env)
    assert served.returncode != 0
    admin = _run(["admin", "create-org", "--name", "x"], env)
    assert admin.returncode != 0
    output = "\n".join([served.stdout, served.stderr, admin.stdout, admin.stderr])
    assert str(closed) in output  # it did say where it failed to connect ...
    assert _leaks(output, "the output", needles) == []  # ... and nothing secret


def test_settings_and_keys_do_not_print_their_secrets():
    """What a traceback or a debug log would show of the settings objects."""
    from service.settings import load_settings

    secret = secrets.token_urlsafe(40)
    settings = load_settings({"DATABASE_URL": "postgresql://u:pw-xyz-123@h/db", "REDIS_URL": "redis://:rpw-xyz@h/0",
                              "SIGNING_KEYS": f"k1:{secret}"})
    shown = f"{settings!r} {settings!s} {settings.signing_keys!r} {settings.signing_keys[0]!s}"
    assert secret not in shown and "pw-xyz-123" not in shown and "rpw-xyz" not in shown
