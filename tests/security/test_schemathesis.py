"""Schemathesis against the served `/openapi.json`: valid and invalid requests for every operation,
a few each (fixed seed, so a failure reproduces), and not one server error.

The server is the real `python -m service serve`; half the cases name real resources (a survey in
progress, a segment, a contact, signed links) so the database paths run, not only the 404s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.result import Ok

from tests.faults.conftest import ServeProcess, new_tenant, signing_keys_env, start_serve, stop_serve
from tests.security.conftest import M

EXAMPLES_PER_MODE = 5


@pytest.fixture(scope="module")
def fuzzed(servers, database_url, tmp_path_factory) -> Iterator[tuple[ServeProcess, dict[str, Any]]]:
    """The server, a key with every scope, and real ids to put in paths."""
    server = start_serve({"DATABASE_URL": database_url, "REDIS_URL": servers.redis_url,
                          "SIGNING_KEYS": signing_keys_env()}, workers=1,
                         log_path=tmp_path_factory.mktemp("fuzz") / "serve.log")
    try:
        tenant = asyncio.run(new_tenant(database_url, link_quota=100_000, rate_limit="off"))
        with requests.Session() as http:
            http.headers["x-api-key"] = tenant.key
            base = server.base_url
            survey = http.post(f"{base}{M}/surveys", json={"name": "fuzz"}, timeout=10).json()["data"]["id"]
            # PATCH cases get a survey of their own, so the one the links need stays in progress
            patched = http.post(f"{base}{M}/surveys", json={"name": "patch"}, timeout=10).json()["data"]["id"]
            contact = http.post(f"{base}{M}/contacts", json={"attributes": {"email": "f@z.io"}},
                                timeout=10).json()["data"]["id"]
            segment = http.post(f"{base}{M}/segments", json={"title": "all", "filters": {}},
                                timeout=10).json()["data"]["id"]
            link = http.post(f"{base}/external/survey-campaigns/{survey}/links", json={"name": "l"}, timeout=10).json()
            contact_url = http.get(f"{base}{M}/surveys/{survey}/contact-links/contacts/{contact}",
                                   timeout=10).json()["data"]["surveyUrl"]
        real = {"surveyId": survey, "survey_campaign_id": survey, "segmentId": segment, "contactId": contact,
                "token": None, "_c": contact_url.rsplit("/c/", 1)[1], "_l": link["survey_url"].rsplit("/l/", 1)[1],
                "key": tenant.key, "org": tenant.org, "_patched": patched}
        yield server, real
    finally:
        stop_serve(server)


def _operations(base: str) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result.err()  # an operation schemathesis cannot read fails the test
        operations.append(result.ok())
    return operations


def _with_real_ids(case: Any, real: dict[str, Any]) -> None:
    """Real resources in the path, and the Filum headers that match the key."""
    params = case.path_parameters or {}
    for name in list(params):
        if name == "token":
            params[name] = real["_c"] if case.path.startswith("/c/") else real["_l"]
        elif name == "surveyId" and case.method == "PATCH":
            params[name] = real["_patched"]
        elif real.get(name) is not None:
            params[name] = real[name]
    if case.path.startswith("/external/") and case.headers is not None:
        case.headers.update({"organization-id": real["org"], "auth-type": "token"})


def _fuzz(operation: Any, mode: GenerationMode, http: requests.Session, base_url: str, real: dict[str, Any],
          failures: list[str]) -> int:
    """Send EXAMPLES_PER_MODE generated cases of one operation; answers how many were sent."""
    sent = 0
    authenticate = mode is GenerationMode.POSITIVE

    @seed(20240521)
    @settings(max_examples=EXAMPLES_PER_MODE, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    @given(case=operation.as_strategy(generation_mode=mode), use_real=st.booleans())
    def run(case: Any, use_real: bool) -> None:
        nonlocal sent
        if use_real:
            _with_real_ids(case, real)
        headers = {"x-api-key": real["key"]} if use_real or authenticate else None
        response = case.call(base_url=base_url, session=http, headers=headers, timeout=15, allow_redirects=False)
        sent += 1
        if response.status_code >= 500:
            failures.append(f"{case.method} {case.formatted_path} -> {response.status_code} "
                            f"{response.text[:200]}\n  {case.as_curl_command()[:400]}")

    try:
        run()
    except Unsatisfiable:
        # an operation without parameters or body has no invalid form to send
        assert mode is GenerationMode.NEGATIVE, operation.label
    return sent


def test_no_operation_answers_a_server_error(fuzzed):
    server, real = fuzzed
    operations = _operations(server.base_url)
    paths = {op.path for op in operations}
    # the document covers the whole service: both contracts, management, links and operations
    assert {"/external/survey-campaigns/{survey_campaign_id}/links", "/c/{token}", "/l/{token}",
            f"{M}/surveys/{{surveyId}}/contact-links/segments/{{segmentId}}", f"{M}/contacts/bulk"} <= paths
    failures: list[str] = []
    sent = 0
    with requests.Session() as http:
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                sent += _fuzz(operation, mode, http, server.base_url, real, failures)
    assert failures == [], "\n".join(failures)
    assert sent >= len(operations) * EXAMPLES_PER_MODE  # the generator really sent requests
    # and the server logged no unexpected error meanwhile
    assert '"msg":"unexpected error"' not in server.logs(), server.logs()[-3000:]
