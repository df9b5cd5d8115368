"""A Python client generated from Formbricks' published document by openapi-python-client, used unchanged
against this service: `base_url` = `<service>/api/v2`, the key in `x-api-key`, default calls included.

The client is generated at the start of this module (about 2 s) into a temporary directory rather than
vendored: the document is vendored and hashed, so generating again gives the code a user of the
pinned generator gets, and a generator release that changes what clients send shows up here instead
of being hidden behind a stale copy.
"""

from __future__ import annotations

import asyncio
import importlib
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import jwt
import pytest

from tests.conftest import TEST_KEYS
from tests.contract.conftest import ALL_KEYS, AS_TEXT, DOCUMENT, PUBLIC_BASE_URL, World

PACKAGE = "formbricks_generated_client"
NEWEST_FIRST = ["cy@x.io", "bob@x.io", "ann@x.io"]


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Iterator[ModuleType]:
    """`openapi-python-client generate` on the vendored document, imported as a package."""
    root = tmp_path_factory.mktemp("generated")
    config = root / "config.yml"
    config.write_text("post_hooks: []\n")  # no formatter run: the code is used as generated
    generator = Path(sys.executable).with_name("openapi-python-client")
    result = subprocess.run([str(generator), "generate", "--path", str(DOCUMENT), "--meta", "none",
                             "--output-path", str(root / PACKAGE), "--config", str(config)],
                            capture_output=True, text=True, timeout=120, cwd=root)
    assert result.returncode == 0, result.stdout + result.stderr
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(root))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def _module(package: ModuleType, name: str) -> Any:
    return importlib.import_module(f"{package.__name__}.{name}")


class Sent:
    """The URLs the client sent, from httpx's event hooks."""

    def __init__(self) -> None:
        self.urls: list[httpx.URL] = []

    def sync(self, request: httpx.Request) -> None:
        self.urls.append(request.url)

    async def async_(self, request: httpx.Request) -> None:
        self.urls.append(request.url)


def client_of(package: ModuleType, world: World, sent: Sent, *, is_async: bool = False, key: str | None = None):
    """The generated AuthenticatedClient, configured as its README says for an `x-api-key` API."""
    hook = sent.async_ if is_async else sent.sync
    return package.AuthenticatedClient(base_url=world.base_url + "/api/v2", token=key or world.key, prefix="",
                                       auth_header_name="x-api-key", raise_on_unexpected_status=True,
                                       httpx_args={"event_hooks": {"request": [hook]}})


def segment_op(package: ModuleType) -> Any:
    return _module(package, "api.management_api_surveys_contact_links.get_contact_links_by_segment")


def contact_op(package: ModuleType) -> Any:
    return _module(package, "api.management_api_surveys_contact_links.get_personalized_survey_link")


def claims(url: str) -> dict[str, Any]:
    assert url.startswith(PUBLIC_BASE_URL + "/c/"), url
    return jwt.decode(url.rsplit("/c/", 1)[1], TEST_KEYS[0].secret, algorithms=["HS256"])


def test_the_default_call(generated, world):
    sent = Sent()
    with client_of(generated, world, sent) as client:
        response = segment_op(generated).sync_detailed(world.survey, world.everyone, client=client)
    # what a generated client sends by default: the document's `number` defaults as Python floats
    [url] = sent.urls
    assert (url.path, url.query) == (
        f"/api/v2/management/surveys/{world.survey}/contact-links/segments/{world.everyone}", b"limit=50.0&skip=0.0")
    assert response.status_code == 200 and response.headers["Cache-Control"] == "private, no-store"
    page = response.parsed
    assert type(page).__name__ == "GetContactLinksBySegmentResponse200"
    assert (page.meta.total, page.meta.limit, page.meta.offset) == (3, 50, 0)
    assert [item.contact_id for item in page.data] == [world.contacts[e] for e in NEWEST_FIRST]
    for item in page.data:
        assert item.additional_properties == {}  # nothing the document does not name
        assert item.attributes.additional_properties == {} and item.expires_at is None
        assert claims(item.survey_url)["c"] == int(item.contact_id)


def test_attributes_come_as_the_strings_the_client_declares(generated, world):
    sent = Sent()
    with client_of(generated, world, sent) as client:
        page = segment_op(generated).sync(world.survey, world.everyone, client=client, attribute_keys=ALL_KEYS,
                                          expiration_days=7.0)
    assert sent.urls[0].params["expirationDays"] == "7.0"
    by_email = {item.attributes["email"]: item.attributes.additional_properties for item in page.data}
    assert by_email == AS_TEXT  # `dict[str, str]` in the generated model, and so they are
    [expires_at] = {item.expires_at for item in page.data}
    [exp] = {claims(item.survey_url)["exp"] for item in page.data}
    assert expires_at == datetime.fromtimestamp(exp, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def test_paging_through_a_segment_with_float_limits(generated, world):
    sent = Sent()
    seen: list[str] = []
    with client_of(generated, world, sent) as client:
        while True:
            page = segment_op(generated).sync(world.survey, world.everyone, client=client, limit=2.0,
                                              skip=float(len(seen)))
            seen += [item.contact_id for item in page.data]
            if len(page.data) < 2:
                break
    assert seen == [world.contacts[e] for e in NEWEST_FIRST]
    assert [u.query for u in sent.urls] == [b"limit=2.0&skip=0.0", b"limit=2.0&skip=2.0"]


def test_the_single_contact_operation_with_its_trailing_slash(generated, world):
    sent = Sent()
    contact = world.contacts["ann@x.io"]
    with client_of(generated, world, sent) as client:
        plain = contact_op(generated).sync_detailed(world.survey, contact, client=client)
        expiring = contact_op(generated).sync(world.survey, contact, client=client, expiration_days=7)
    assert sent.urls[0].path == f"/api/v2/management/surveys/{world.survey}/contact-links/contacts/{contact}/"
    assert plain.status_code == 200 and plain.headers["Cache-Control"] == "private, no-store"
    assert plain.parsed.additional_properties == plain.parsed.data.additional_properties == {}
    assert plain.parsed.data.expires_at is None and "exp" not in claims(plain.parsed.data.survey_url)
    token = claims(expiring.data.survey_url)
    assert token["c"] == int(contact) and isinstance(expiring.data.expires_at, str) and "exp" in token
    assert sent.urls[1].query == b"expirationDays=7"


def test_the_async_client_too(generated, world):
    sent = Sent()

    async def both() -> tuple[Any, Any]:
        async with client_of(generated, world, sent, is_async=True) as client:
            return await asyncio.gather(
                segment_op(generated).asyncio(world.survey, world.pro, client=client, attribute_keys="plan,age"),
                contact_op(generated).asyncio(world.survey, world.contacts["cy@x.io"], client=client))

    page, one = asyncio.run(both())
    assert [i.attributes.additional_properties for i in page.data] == [{"plan": "pro"}, {"plan": "pro", "age": "42"}]
    assert claims(one.data.survey_url)["c"] == int(world.contacts["cy@x.io"])
    assert len(sent.urls) == 2


def test_errors_reach_the_client_as_its_unexpected_status(generated, world):
    errors = _module(generated, "errors")
    sent = Sent()
    with client_of(generated, world, sent) as client:
        with pytest.raises(errors.UnexpectedStatus) as missing:
            segment_op(generated).sync(world.survey, "00000000-0000-4000-8000-000000000000", client=client)
        with pytest.raises(errors.UnexpectedStatus) as fractional:
            segment_op(generated).sync(world.survey, world.everyone, client=client, limit=1.5)
    assert missing.value.status_code == 404
    assert fractional.value.status_code == 422 and b'"field":"limit"' in fractional.value.content
    with client_of(generated, world, sent, key="wrong") as client, pytest.raises(errors.UnexpectedStatus) as denied:
        contact_op(generated).sync(world.survey, world.contacts["ann@x.io"], client=client)
    assert denied.value.status_code == 401
