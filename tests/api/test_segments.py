"""Segments: every filter operator and nesting on real PostgreSQL, contactCount, validation, isolation."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from tests.contact_helpers import CONTACTS, SEGMENTS, all_members, bulk, create_segment, error, settle
from tests.helpers import create_survey

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
INJECTION = "x' OR '1'='1"

PEOPLE: dict[str, dict[str, Any]] = {
    "a": {"plan": "pro", "age": 30, "score": "42", "vip": True, "note": "50% off_now", "city": "Berlin"},
    "b": {"plan": "free", "age": 17, "score": "n/a", "vip": False, "note": "plain", "city": "Bern"},
    "c": {"plan": "Pro", "age": "45", "note": INJECTION, "joined": "2024-03-01"},
    "d": {"plan": "enterprise", "age": 30.0, "joined": "2023-12-31", "city": None},
    "e": {},
}
EVERYONE = set(PEOPLE)


def c(attribute, op, *value):
    node = {"attribute": attribute, "op": op}
    if value:
        node["value"] = value[0]
    return node


CASES = [
    (c("plan", "equals", "pro"), {"a"}),  # case-sensitive: not "Pro"
    (c("plan", "equals", "nobody"), set()),
    (c("plan", "notEquals", "pro"), {"b", "c", "d", "e"}),  # a contact without the attribute is not equal
    (c("age", "equals", 30), {"a", "d"}),  # 30 == 30.0
    (c("age", "equals", 45), {"c"}),  # a numeric string compares as a number
    (c("age", "equals", "30"), {"a"}),  # a string compares with the text form: 30.0 is "30.0"
    (c("age", "notEquals", 30), {"b", "c", "e"}),
    (c("vip", "equals", True), {"a"}),
    (c("vip", "equals", False), {"b"}),
    (c("vip", "notEquals", True), {"b", "c", "d", "e"}),
    (c("note", "contains", "50%"), {"a"}),
    (c("note", "contains", "%"), {"a"}),
    (c("note", "contains", "f_n"), {"a"}),
    (c("note", "contains", "o_f"), set()),  # `_` is literal, not a wildcard
    (c("note", "contains", "'"), {"c"}),
    (c("note", "doesNotContain", "plain"), {"a", "c", "d", "e"}),
    (c("note", "doesNotContain", ""), {"d", "e"}),
    (c("city", "startsWith", "Ber"), {"a", "b"}),
    (c("city", "startsWith", "B_r"), set()),
    (c("city", "startsWith", "erl"), set()),
    (c("city", "endsWith", "lin"), {"a"}),
    (c("city", "endsWith", "n"), {"a", "b"}),
    (c("city", "endsWith", "%"), set()),
    (c("age", "greaterThan", 29), {"a", "c", "d"}),
    (c("age", "greaterThan", 30), {"c"}),
    (c("age", "greaterThan", 45), set()),
    (c("age", "greaterEqual", 30), {"a", "c", "d"}),
    (c("age", "greaterEqual", 45.5), set()),
    (c("age", "lessThan", 18), {"b"}),
    (c("age", "lessThan", 17), set()),
    (c("age", "lessEqual", 17), {"b"}),
    (c("age", "lessEqual", 16.9), set()),
    (c("score", "greaterThan", 40), {"a"}),  # "n/a" is not a number: no match, and no error
    (c("score", "lessThan", 1000), {"a"}),
    (c("joined", "lessThan", "2024-01-01"), {"d"}),  # strings compare as text
    (c("joined", "greaterEqual", "2024-01-01"), {"c"}),
    (c("joined", "greaterThan", "2024-03-01"), set()),
    (c("plan", "in", ["pro", "free"]), {"a", "b"}),
    (c("age", "in", [17, 45]), {"b", "c"}),
    (c("vip", "in", [False]), {"b"}),
    (c("plan", "in", ["pro", 17, True]), {"a"}),
    (c("plan", "in", []), set()),
    (c("plan", "in", ["PRO"]), set()),
    (c("email", "isSet"), EVERYONE),
    (c("city", "isSet"), {"a", "b"}),  # a null was never stored
    (c("city", "isNotSet"), {"c", "d", "e"}),
    (c("email", "isNotSet"), set()),
    (c("unknownKey", "equals", "x"), set()),
    (c("unknownKey", "isNotSet"), EVERYONE),
    ({}, EVERYONE),
    ({"and": []}, EVERYONE),
    ({"or": []}, set()),
    ({"not": {}}, set()),
    ({"and": [c("plan", "in", ["pro", "free"]), c("age", "greaterThan", 18)]}, {"a"}),
    ({"or": [c("plan", "equals", "free"), c("joined", "isSet")]}, {"b", "c", "d"}),
    ({"not": c("city", "isSet")}, {"c", "d", "e"}),
    ({"not": {"not": c("plan", "equals", "pro")}}, {"a"}),
    ({"not": c("age", "greaterThan", 18)}, {"b", "e"}),  # exact complement: e has no age
    ({"or": [{"and": [c("vip", "equals", True), {"not": c("city", "endsWith", "n")}]},
             {"and": [c("age", "lessEqual", 30),
                      {"or": [c("plan", "equals", "enterprise"), c("vip", "equals", False)]}]}]},
     {"b", "d"}),
    (c("plan", "equals", INJECTION), set()),  # an injection-looking value is a plain value
    (c("note", "equals", INJECTION), {"c"}),
    (c("note", "in", [INJECTION, "'; DROP TABLE contacts; --"]), {"c"}),
    (c("note", "startsWith", "x' OR"), {"c"}),
]


@pytest.fixture
async def people(client, tenant, db):
    await bulk(client, tenant.headers, [{"email": f"{name}@x.io", **attrs} for name, attrs in PEOPLE.items()])
    rows = await db.fetch("SELECT id, attributes->>'email' AS email FROM contacts WHERE org_id = $1", tenant.org_id)
    ids = {r["email"][0]: r["id"] for r in rows}
    survey = await create_survey(client, tenant.headers)
    return {"ids": ids, "survey": survey["id"]}


async def members(client, tenant, people, filters) -> tuple[set[str], int]:
    segment = await create_segment(client, tenant.headers, filters)
    items = await all_members(client, tenant.headers, people["survey"], segment["id"], attributeKeys="email")
    return {item["attributes"]["email"][0] for item in items}, segment["contactCount"]


def group_of(filters: dict) -> str:
    """The operator a case is about (the group's own name for trees and injection-looking values)."""
    if INJECTION in repr(filters) or "DROP" in repr(filters):
        return "injection"
    return filters.get("op", "tree")


GROUPS = sorted({group_of(f) for f, _ in CASES})


@pytest.mark.parametrize("group", GROUPS)
async def test_filter_operators(client, tenant, people, group):
    """Each operator's cases on one set of contacts, including at least one that must not match."""
    cases = [(f, e) for f, e in CASES if group_of(f) == group]
    assert any(expected != EVERYONE for _, expected in cases)
    for filters, expected in cases:
        found, count = await members(client, tenant, people, filters)
        assert (found, count) == (expected, len(expected)), filters


def test_every_operator_has_cases():
    assert set(GROUPS) >= {"equals", "notEquals", "contains", "doesNotContain", "startsWith", "endsWith",
                           "greaterThan", "greaterEqual", "lessThan", "lessEqual", "in", "isSet", "isNotSet",
                           "tree", "injection"}


async def test_static_segment_by_contact_id(client, tenant, people, make_tenant, db):
    ids = people["ids"]
    found, count = await members(client, tenant, people, c("contactId", "in", [str(ids["a"]), ids["c"]]))
    assert (found, count) == ({"a", "c"}, 2)
    found, _ = await members(client, tenant, people, {"not": c("contactId", "in", [ids["a"]])})
    assert found == EVERYONE - {"a"}
    # another organisation's contact ids never enter a segment
    other = await make_tenant()
    await bulk(client, other.headers, [{"email": "z@x.io"}])
    theirs = await db.fetchval("SELECT id FROM contacts WHERE org_id = $1", other.org_id)
    found, count = await members(client, tenant, people, c("contactId", "in", [theirs, ids["b"]]))
    assert (found, count) == ({"b"}, 1)


async def test_create_and_get_segment(client, tenant, people, db):
    filters = {"and": [c("plan", "equals", "pro"), c("city", "isSet", None), c("contactId", "in", ["7"])]}
    resp = await client.post(SEGMENTS, json={"title": "  Pro users ", "filters": filters}, headers=tenant.headers)
    assert resp.status == 201
    data = (await resp.json())["data"]
    normalised = {"and": [c("plan", "equals", "pro"), c("city", "isSet"), c("contactId", "in", [7])]}
    assert {k: data[k] for k in ("title", "filters", "contactCount")} == {
        "title": "Pro users", "filters": normalised, "contactCount": 0}
    assert uuid.UUID(data["id"]) and ISO.match(data["createdAt"])
    row = await db.fetchrow("SELECT org_id, title FROM segments WHERE id = $1", uuid.UUID(data["id"]))
    assert (row["org_id"], row["title"]) == (tenant.org_id, "Pro users")
    got = await client.get(f"{SEGMENTS}/{data['id']}", headers=tenant.headers)
    assert got.status == 200 and (await got.json())["data"] == data


async def test_contact_count_follows_contact_writes(client, tenant, people):
    segment = await create_segment(client, tenant.headers, c("plan", "equals", "pro"))
    assert segment["contactCount"] == 1

    async def count() -> int:
        resp = await client.get(f"{SEGMENTS}/{segment['id']}", headers=tenant.headers)
        return (await resp.json())["data"]["contactCount"]

    assert await count() == 1
    await bulk(client, tenant.headers, [{"email": "b@x.io", "plan": "pro"}, {"email": "f@x.io", "plan": "pro"}])
    # counted less than a second ago: answered as counted (at most MAX_AGE behind), then exact once settled
    assert await count() == 1
    settle(client)
    assert await count() == 3
    resp = await client.post(CONTACTS, json={"attributes": {"plan": "pro"}}, headers=tenant.headers)
    assert resp.status == 201
    settle(client)
    assert await count() == 4
    await bulk(client, tenant.headers, [{"email": "a@x.io", "plan": None}])
    settle(client)
    assert await count() == 3


async def test_malformed_trees_are_422_naming_the_place(client, tenant, db):
    filters = {"and": [c("plan", "equals", "pro"), {"attribute": "plan", "op": "like", "value": "x"},
                       {"or": [c("age", "greaterThan", True)]}, {"not": []}]}
    resp = await client.post(SEGMENTS, json={"title": "", "filters": filters, "extra": 1}, headers=tenant.headers)
    assert resp.status == 422
    assert await resp.json() == error(422, "Unprocessable Entity", [
        {"field": "title", "issue": "ensure this value has at least 1 characters"},
        {"field": "filters.and.1.op", "issue": "value is not a valid enumeration member; permitted: 'equals', "
                                               "'notEquals', 'contains', 'doesNotContain', 'startsWith', "
                                               "'endsWith', 'greaterThan', 'greaterEqual', 'lessThan', "
                                               "'lessEqual', 'in', 'isSet', 'isNotSet'"},
        {"field": "filters.and.2.or.0.value", "issue": "value must be a string or a finite number"},
        {"field": "filters.and.3.not", "issue": "value is not a valid dict"},
        {"field": "extra", "issue": "extra fields not permitted"},
    ])
    deep: dict = c("plan", "isSet")
    for _ in range(20):
        deep = {"not": deep}
    resp = await client.post(SEGMENTS, json={"title": "t", "filters": deep}, headers=tenant.headers)
    assert (await resp.json())["error"]["details"] == [
        {"field": "filters" + ".not" * 8, "issue": "filters nest at most 8 levels deep"}]
    for body, details in (
        ({"title": "t"}, [{"field": "filters", "issue": "field required"}]),
        ({"title": "t", "filters": None}, [{"field": "filters", "issue": "none is not an allowed value"}]),
        ({"title": "t", "filters": [1]}, [{"field": "filters", "issue": "value is not a valid dict"}]),
        ({"title": "t", "filters": {"or": [c("x", "in", 5)] * 300}},
         [{"field": "filters", "issue": "a filter has at most 200 nodes"}]),
    ):
        resp = await client.post(SEGMENTS, json=body, headers=tenant.headers)
        assert (resp.status, (await resp.json())["error"]["details"]) == (422, details)
    assert await db.fetchval("SELECT count(*) FROM segments WHERE org_id = $1", tenant.org_id) == 0


async def test_other_organisations_segments_do_not_exist(client, tenant, make_tenant):
    segment = await create_segment(client, tenant.headers, {})
    other = await make_tenant()
    not_found = error(404, "Not Found", [{"field": "segmentId", "issue": "not found"}])
    for segment_id in (segment["id"], str(uuid.uuid4()), "not-a-uuid", "1"):
        resp = await client.get(f"{SEGMENTS}/{segment_id}", headers=other.headers)
        assert (resp.status, await resp.json()) == (404, not_found)
    reader = await make_tenant(scopes=("links:read",))
    resp = await client.get(f"{SEGMENTS}/{segment['id']}", headers=reader.headers)
    assert resp.status == 403
    resp = await client.post(SEGMENTS, json={"title": "t", "filters": {}})
    assert resp.status == 401
