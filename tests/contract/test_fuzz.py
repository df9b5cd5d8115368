"""schemathesis on the two contact-links operations of Formbricks' published document: requests the
document allows (positive) and requests it does not (negative), a bounded number of each with a fixed
seed, against the real server; every answer through schemathesis' own checks (no server error, status,
content type, headers and body as the document has them).

Half the cases put real ids in the path, so the signing and paging paths run, not only the 404s.
The document's error answers are ERROR_ENVELOPE (conftest): upstream's route code, not its document,
describes them.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.errors import FailureGroup

from service.core.rules import INT64_MAX
from tests.contract.conftest import ALL_KEYS, OPERATIONS, World, as_served

EXAMPLES = 30  # per operation and mode: 120 requests, a few seconds
NUMBERS = {"limit": (1, 250), "skip": (0, INT64_MAX), "expirationDays": (1, 365)}
POSITIVE_ACCEPTANCE = "ST202"  # positive_data_acceptance: "a request the document allows got a 4xx"
NEGATIVE_REJECTION = "ST201"  # negative_data_rejection: "a request the document does not allow got a 2xx"


def _integral_in_range(raw: Any, low: int, high: int) -> bool:
    try:
        number = Decimal(str(raw))
    except InvalidOperation:
        return False
    return number.is_finite() and number == number.to_integral_value() and low <= number <= high


def deliberate_refusal(case: Any, response: requests.Response, real_ids: bool) -> str | None:
    """Why a request the document allows was refused on purpose, or None if it was not.

    - 404: ids that name nothing (the document's ids are any string; ours are UUIDs and digits), unless
      the path holds the test world's real ids (`real_ids`): then a 404 is a fault;
    - 422 only for a number the service cannot use as a count: fractional (`limit=1.5`, upstream's
      database error) or a `skip` past 2^63-1; or `attributeKeys` past 20 keys, which upstream also
      refuses (its description says so, its schema does not).
    """
    if response.status_code == 404:
        return None if real_ids else "unknown id"
    if response.status_code != 422:
        return None
    query = case.query or {}
    for detail in response.json()["error"]["details"]:
        field = detail["field"]
        if field in NUMBERS and field in query and not _integral_in_range(query[field], *NUMBERS[field]):
            continue
        if field == "attributeKeys" and len([k for k in str(query.get(field, "")).split(",") if k.strip()]) > 20:
            continue
        return None
    return "a number that is not a count, or too many attribute keys"


def ignored_extras(case: Any) -> str | None:
    """Why a request outside the document was answered 200 on purpose, or None if it was not: the only
    things outside it are query parameters the operation does not take, which Formbricks ignores too,
    and empty numbers (`skip=`), which it reads as the default."""
    query = case.query or {}
    declared = {p.name for p in case.operation.iter_parameters() if p.location == "query"}
    empty = {name for name in declared & set(query) if name in NUMBERS and query[name] in ("", None, [])}
    if set(query) <= declared and not empty:
        return None
    for name in declared & set(query) - empty:
        value = query[name]
        if name in NUMBERS and not _integral_in_range(value, *NUMBERS[name]):
            return None
        if name == "attributeKeys" and not isinstance(value, str):
            return None
    return "unknown query parameters ignored, empty numbers read as the default"


def _with_real_ids(case: Any, world: World, real_values: bool) -> None:
    """Real ids in the path; with `real_values`, also real attribute keys (numbers and booleans among
    them) and the generated numbers made whole (as floats: `12.0`), so that the page is answered and
    its body checked, not refused for a fractional `limit` (the other cases send those)."""
    params = case.path_parameters
    params["surveyId"] = world.survey
    params.update({"segmentId": world.everyone} if "segmentId" in params else {})
    params.update({"contactId": world.contacts["ann@x.io"]} if "contactId" in params else {})
    if real_values and isinstance(case.query, dict):
        for name, (low, high) in NUMBERS.items():
            if isinstance(case.query.get(name), int | float):
                case.query[name] = float(min(max(round(case.query[name]), low), min(high, 10**6)))
        if "attributeKeys" in case.query or "segmentId" in params:
            case.query["attributeKeys"] = ALL_KEYS


@pytest.fixture(scope="module")
def operations(world: World) -> list[Any]:
    schema = schemathesis.openapi.from_dict(as_served(world.base_url))
    return [schema.find_operation_by_id(operation_id) for operation_id in OPERATIONS]


def _fuzz(operation: Any, mode: GenerationMode, world: World, http: requests.Session) -> tuple[int, list[str],
                                                                                               dict[int, int]]:
    """Send EXAMPLES cases; answers how many were sent, the failures, and the count of each status."""
    sent = 0
    failures: list[str] = []
    statuses: dict[int, int] = {}

    @seed(20260522)
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    @given(case=operation.as_strategy(generation_mode=mode), use_real=st.booleans(), real_values=st.booleans())
    def run(case: Any, use_real: bool, real_values: bool) -> None:
        nonlocal sent
        if use_real:
            _with_real_ids(case, world, real_values and mode is GenerationMode.POSITIVE)
        response = case.call(base_url=world.base_url + "/api/v2", session=http, headers=world.headers, timeout=15,
                             allow_redirects=False)
        sent += 1
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        try:
            case.validate_response(response, headers=world.headers)
        except FailureGroup as group:
            for failure in group.exceptions:
                if failure.code == POSITIVE_ACCEPTANCE and deliberate_refusal(case, response, use_real):
                    continue
                if failure.code == NEGATIVE_REJECTION and ignored_extras(case):
                    continue
                failures.append(f"{failure.code} {failure.title}: {case.method} {response.request.url} -> "
                                f"{response.status_code} {response.text[:300]}")

    run()
    return sent, failures, statuses


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_the_published_operations_fuzzed(operations, world, served, mode):
    server, _ = served
    failures: list[str] = []
    with requests.Session() as http:
        for operation in operations:
            sent, found, statuses = _fuzz(operation, mode, world, http)
            failures += found
            assert sent == EXAMPLES, operation.label  # the generator really sent them
            assert max(statuses) < 500, statuses
            if mode is GenerationMode.POSITIVE:
                assert statuses.get(200, 0) >= 3, (operation.label, statuses)  # not only refusals
    assert failures == [], "\n".join(failures)
    assert '"msg":"unexpected error"' not in server.logs()
    assert not re.search(r'"status":5\d\d', server.logs())
