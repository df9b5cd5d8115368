"""The Formbricks contract, as Formbricks' own published OpenAPI document writes it.

One real `python -m service serve` (on the session's embedded PostgreSQL and Redis, a database of
its own) for the whole package, one organisation with a little of everything, and the published
document (`formbricks/openapi.yml`, vendored unchanged) as the suite reads it.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import hashlib
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import requests
import yaml

from service.core.auth import hash_secret, new_secret
from service.db import orgs
from service.db.migrate import migrate
from tests.faults.conftest import ServeProcess, new_tenant, signing_keys_env, start_serve, stop_serve

HERE = Path(__file__).parent
DOCUMENT = HERE / "formbricks" / "openapi.yml"
# the two operations we implement, as the document names them (its server is `.../api/v2`)
SEGMENT_PATH = "/management/surveys/{surveyId}/contact-links/segments/{segmentId}"
CONTACT_PATH = "/management/surveys/{surveyId}/contact-links/contacts/{contactId}/"
OPERATIONS = {"getContactLinksBySegment": SEGMENT_PATH, "getPersonalizedSurveyLink": CONTACT_PATH}
API = "/api/v2"
M = f"{API}/management"
PUBLIC_BASE_URL = "https://links.example"

# The document describes only the 200 of these operations. Their errors are what Formbricks' route
# code answers (apps/web/modules/api/v2/lib/response.ts): `{"error": {"code", "message", "details"?}}`,
# `details` a list of `{"field", "issue", "meta"?}` (this service never sends `meta`, and the strict
# validator would require every listed property), and one fixed message per status. The suite adds this
# as the two operations' `default` response, in memory (the vendored file stays upstream's), so that
# every answer, errors included, goes through the same validator.
ERROR_ENVELOPE: dict[str, Any] = {
    "type": "object", "required": ["error"], "additionalProperties": False,
    "properties": {"error": {
        "type": "object", "required": ["code", "message"], "additionalProperties": False,
        "properties": {
            "code": {"type": "integer", "minimum": 400, "maximum": 599},
            "message": {"type": "string"},
            "details": {"type": "array", "items": {
                "type": "object", "required": ["field", "issue"],
                "properties": {"field": {"type": "string"}, "issue": {"type": "string"}}}},
        },
    }},
}
UPSTREAM_MESSAGES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
                     422: "Unprocessable Entity", 429: "Too Many Requests"}


def recorded_sha256() -> str:
    """The hash formbricks/README.md records for the vendored document."""
    found = re.search(r"sha256: `([0-9a-f]{64})`", (HERE / "formbricks" / "README.md").read_text())
    assert found is not None
    return found.group(1)


def document_sha256() -> str:
    return hashlib.sha256(DOCUMENT.read_bytes()).hexdigest()


@functools.cache
def _published() -> dict[str, Any]:
    return yaml.safe_load(DOCUMENT.read_text())


def published() -> dict[str, Any]:
    """The vendored document, parsed (a copy: callers may change it)."""
    return copy.deepcopy(_published())


def as_served(base_url: str) -> dict[str, Any]:
    """The published document pointed at this service (its one server: `<base>/api/v2`, where a client
    of Formbricks Cloud has `https://app.formbricks.com/api/v2`), with the error answers of the two
    operations described (ERROR_ENVELOPE)."""
    document = published()
    document["servers"] = [{"url": base_url + API}]
    for path in OPERATIONS.values():
        document["paths"][path]["get"]["responses"]["default"] = {
            "description": "An error, as Formbricks' route code answers it",
            "content": {"application/json": {"schema": ERROR_ENVELOPE}},
        }
    return document


@dataclass(frozen=True)
class World:
    """The served service and what the suite asks it about."""

    base_url: str
    key: str
    survey: str  # in progress
    paused: str
    everyone: str  # segment `{}`
    pro: str  # segment plan = pro
    nobody: str  # segment `{"or": []}`
    contacts: dict[str, str]  # email -> contact id
    other_segment: str  # another organisation's
    other_contact: str
    other_key: str
    no_read_key: str  # a key of the same organisation without `links:read`
    database_url: str

    @property
    def headers(self) -> dict[str, str]:
        return {"x-api-key": self.key}

    def segment_url(self, segment: str, survey: str | None = None) -> str:
        return f"{self.base_url}{M}/surveys/{survey or self.survey}/contact-links/segments/{segment}"

    def contact_url(self, contact: str, survey: str | None = None) -> str:
        """The single-contact operation as published: with its trailing slash."""
        return f"{self.base_url}{M}/surveys/{survey or self.survey}/contact-links/contacts/{contact}/"


# numbers, booleans and strings, stored typed; contact links answer each as its text
ATTRIBUTES: dict[str, dict[str, Any]] = {
    "ann@x.io": {"email": "ann@x.io", "plan": "pro", "age": 42, "score": 1.5, "vip": True,
                 "big": 9007199254740993, "weight": 30.0, "note": 'n, "quoted"'},
    "bob@x.io": {"email": "bob@x.io", "plan": "free", "age": -7, "vip": False},
    "cy@x.io": {"email": "cy@x.io", "plan": "pro"},
}
AS_TEXT = {
    "ann@x.io": {"email": "ann@x.io", "plan": "pro", "age": "42", "score": "1.5", "vip": "true",
                 "big": "9007199254740993", "weight": "30.0", "note": 'n, "quoted"'},
    "bob@x.io": {"email": "bob@x.io", "plan": "free", "age": "-7", "vip": "false"},
    "cy@x.io": {"email": "cy@x.io", "plan": "pro"},
}
ALL_KEYS = "email,plan,age,score,vip,big,weight,note"


async def _create_database(admin_url: str, name: str) -> str:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return url


async def _drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def add_key(database_url: str, org_id: uuid.UUID, scopes: list[str]) -> str:
    """Another key of an organisation, with only `scopes`."""
    conn = await asyncpg.connect(database_url)
    try:
        secret = new_secret()
        await orgs.insert_key(conn, org_id, "contract", hash_secret(secret), scopes)
    finally:
        await conn.close()
    return secret


def _created(http: requests.Session, url: str, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
    resp = http.post(url, json=body, timeout=10)
    assert resp.status_code == status, resp.text
    return resp.json()["data"]


@pytest.fixture(scope="package")
def served(servers, tmp_path_factory) -> Iterator[tuple[ServeProcess, str]]:
    """`serve` (one worker) on a database of this package's own, and that database's URL."""
    name = f"t_contract_{uuid.uuid4().hex[:8]}"
    database_url = asyncio.run(_create_database(servers.database_url, name))
    server = start_serve({"DATABASE_URL": database_url, "REDIS_URL": servers.redis_url,
                          "SIGNING_KEYS": signing_keys_env(), "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
                          # every request comes from 127.0.0.1: schemathesis's unauthenticated probes
                          # would reach the per-address limit (429) that tests/security tests on its own
                          "UNAUTH_RATE_LIMIT": "off"}, workers=1,
                         log_path=tmp_path_factory.mktemp("contract") / "serve.log")
    try:
        yield server, database_url
    finally:
        stop_serve(server)
        asyncio.run(_drop_database(servers.database_url, name))


@pytest.fixture(scope="package")
def world(served) -> World:
    server, database_url = served
    tenant = asyncio.run(new_tenant(database_url, rate_limit="off"))
    other = asyncio.run(new_tenant(database_url, rate_limit="off"))
    no_read_key = asyncio.run(add_key(database_url, tenant.org_id, ["manage", "links:write"]))
    base = server.base_url
    with requests.Session() as http:
        http.headers["x-api-key"] = tenant.key
        survey = _created(http, f"{base}{M}/surveys", {"name": "contract"})["id"]
        paused = _created(http, f"{base}{M}/surveys", {"name": "paused", "status": "paused"})["id"]
        resp = http.put(f"{base}{M}/contacts/bulk", json={"contacts": [{"attributes": a} for a in ATTRIBUTES.values()]},
                        timeout=10)
        assert resp.status_code == 200 and resp.json()["data"] == {"created": 3, "updated": 0}, resp.text
        everyone = _created(http, f"{base}{M}/segments", {"title": "everyone", "filters": {}})["id"]
        pro = _created(http, f"{base}{M}/segments",
                       {"title": "pro", "filters": {"attribute": "plan", "op": "equals", "value": "pro"}})["id"]
        nobody = _created(http, f"{base}{M}/segments", {"title": "nobody", "filters": {"or": []}})["id"]
        listed = http.get(f"{base}{M}/surveys/{survey}/contact-links/segments/{everyone}",
                          params={"attributeKeys": "email"}, timeout=10)
        assert listed.status_code == 200, listed.text
        contacts = {item["attributes"]["email"]: item["contactId"] for item in listed.json()["data"]}
        http.headers["x-api-key"] = other.key
        other_segment = _created(http, f"{base}{M}/segments", {"title": "theirs", "filters": {}})["id"]
        other_contact = _created(http, f"{base}{M}/contacts", {"attributes": {"email": "z@other.io"}})["id"]
    assert set(contacts) == set(ATTRIBUTES)
    return World(base, tenant.key, survey, paused, everyone, pro, nobody, contacts, other_segment, other_contact,
                 other.key, no_read_key, database_url)
