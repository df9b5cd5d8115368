"""The Filum path answers each input as FastAPI 0.99 on pydantic 1.10 does (SPEC: "Filum runs FastAPI
on pydantic v1"), against the real service on embedded PostgreSQL and Redis.

The reference's answers are recorded in pydantic_v1_answers.json by reference_model.py (a FastAPI model
of Filum's page; see its docstring to regenerate) for the inputs in inputs.json. A 422 must be the
recorded status and body, exactly; where the reference accepts (200), this service must accept too
and store what pydantic read (the name, and each metadata id with its value). The differences that
SPEC makes on purpose are DELIBERATE below, each with its reason and this service's own exact answer.
"""

from __future__ import annotations

import base64
import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import create_survey, links_path

HERE = Path(__file__).parent
CASES = {case["id"]: case for case in json.loads((HERE / "inputs.json").read_text())}
RECORDED = json.loads((HERE / "pydantic_v1_answers.json").read_text())["answers"]
REFERENCE_CAMPAIGN = "0b9c5f4e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
FIELDS = {900001: "SKU Number", 900002: "Date"}  # the metadata ids the inputs name


def issue(loc: list[Any], msg: str, type_: str, ctx: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": type_, **({} if ctx is None else {"ctx": ctx})}


def not_json(pos: int, why: str) -> dict[str, Any]:
    """What this service answers for bytes that orjson refuses and Python's json module reads."""
    return {"detail": [issue(["body", pos], f"Invalid JSON: {why}", "value_error.jsondecode")]}


ID = ["body", "metadata_mapping", 0, "metadata_id"]
VALUE = ["body", "metadata_mapping", 0, "value"]
NOT_AN_INTEGER = {"detail": [issue(ID, "value is not a valid integer", "type_error.integer")]}
VALUE_TYPES = "value must be a string, a finite number, a list of those, or null"
UNEXPECTED, INFINITE = "unexpected character, expected a JSON value", "number is infinity when parsed as double"

# case: (why this service answers otherwise, its status, its body)
DELIBERATE: dict[str, tuple[str, int, Any]] = {
    "name true": ("a boolean is not a name: pydantic would store Python's spelling, 'True'", 422,
                  {"detail": [issue(["body", "name"], "str type expected", "type_error.str")]}),
    "name NaN": ("NaN is not JSON (RFC 8259): pydantic would store the name 'nan'", 422,
                 not_json(9, UNEXPECTED)),
    "name 1e400": ("past a double's range: pydantic would store the name 'inf'", 422,
                   not_json(9, INFINITE)),
    "name past 64 bits": ("our JSON parser reads an integer past 64 bits as a double, whose text would not be the "
                          "digits sent: refused rather than stored wrong", 422,
                          {"detail": [issue(["body", "name"], "str type expected", "type_error.str")]}),
    "name NUL": ("PostgreSQL cannot store U+0000 (SPEC: NUL characters are refused)", 422,
                 {"detail": [issue(["body", "name"], "NUL characters are not allowed", "value_error.str.nul")]}),
    "id fraction": ("int(1.5) is 1: a lossy coercion (SPEC)", 422, NOT_AN_INTEGER),
    "id true": ("int(True) is 1: a lossy coercion (SPEC)", 422, NOT_AN_INTEGER),
    "id false": ("int(False) is 0: a lossy coercion (SPEC)", 422, NOT_AN_INTEGER),
    "id NaN": ("NaN is not JSON (RFC 8259): refused by the parser, not the field", 422,
               not_json(51, UNEXPECTED)),
    "id 1e400": ("past a double's range: refused by the parser, not the field", 422,
                 not_json(51, INFINITE)),
    "id zero": ("a metadata_id must name a metadata field of the organisation (SPEC); ids start at 1", 422,
                {"detail": [issue(ID, "ensure this value is greater than or equal to 1", "value_error.number.not_ge",
                                  {"limit_value": 1})]}),
    "id unknown": ("a metadata_id must name a metadata field of the organisation (SPEC)", 422,
                   {"detail": [issue(ID, "metadata field 424242 does not exist", "value_error.not_found")]}),
    "id twice": ("one metadata_id at most once (SPEC)", 422,
                 {"detail": [issue(["body", "metadata_mapping", 1, "metadata_id"], "metadata_id appears more than once",
                                   "value_error.duplicate")]}),
    "value true": ("a value is a string, a finite number (not a boolean), a list of those or null (SPEC)", 422,
                   {"detail": [issue(VALUE, VALUE_TYPES, "type_error")]}),
    "value object": ("a value is a string, a finite number (not a boolean), a list of those or null (SPEC)", 422,
                     {"detail": [issue(VALUE, VALUE_TYPES, "type_error")]}),
    "value 2001 characters": ("a string value has at most 2000 characters (SPEC)", 422,
                              {"detail": [issue(VALUE, "ensure this value has at most 2000 characters",
                                                "value_error.any_str.max_length", {"limit_value": 2000})]}),
    "body UTF-8 BOM": ("RFC 8259 forbids a byte order mark; every endpoint refuses it", 422,
                       not_json(0, "UTF-8 byte order mark (BOM) is not supported")),
}


def _body(case: dict[str, Any]) -> bytes:
    if "raw" in case:
        return case["raw"].encode()
    return base64.b64decode(case["raw_b64"])


def _path(case: dict[str, Any], survey_id: str) -> str:
    """The case's path, with our campaign's id spelled as the case spells the reference's."""
    campaign = case.get("campaign", REFERENCE_CAMPAIGN)
    for spell in (str.lower, str.upper, lambda s: s.replace("-", "")):
        if spell(REFERENCE_CAMPAIGN) in campaign:
            campaign = campaign.replace(spell(REFERENCE_CAMPAIGN), spell(survey_id))
            break
    return links_path(campaign) + case.get("suffix", "")


def test_every_input_has_a_recorded_answer_and_the_differences_are_few():
    assert set(RECORDED) == set(CASES)
    assert set(DELIBERATE) <= set(CASES)
    same = [c for c in CASES if c not in DELIBERATE]
    assert len(CASES) >= 30 and len(same) >= 3 * len(DELIBERATE), (len(same), len(DELIBERATE))
    # each is a real difference, and a refusal: where SPEC refuses what the reference takes, or in another shape
    for name, (reason, status, body) in DELIBERATE.items():
        assert reason and status == 422, name
        assert (RECORDED[name]["status"], RECORDED[name]["body"]) != (status, body), name


@pytest.mark.parametrize("name", list(CASES))
async def test_the_answer_is_pydantic_v1s(client, make_tenant, db, name):
    case = CASES[name]
    tenant = await make_tenant(link_quota=1000)
    for field_id, field_name in FIELDS.items():
        # the ids the inputs name, owned by this test's organisation (taken from the previous case's)
        async with db.transaction():
            await db.execute("DELETE FROM metadata_fields WHERE id = $1", field_id)
            await db.execute("INSERT INTO metadata_fields (id, org_id, name, variable) OVERRIDING SYSTEM VALUE"
                             " VALUES ($1, $2, $3, $3)", field_id, tenant.org_id, field_name)
    survey_id = (await create_survey(client, tenant.headers))["id"]
    headers = {**tenant.headers, **case.get("headers", {"Content-Type": "application/json"})}
    resp = await client.post(_path(case, survey_id), data=io.BytesIO(_body(case)), headers=headers,
                             skip_auto_headers=("Content-Type",))  # a case without one sends none
    answer = (resp.status, await resp.json())
    links = await db.fetch("SELECT id, name, metadata_mapping FROM survey_links WHERE survey_id = $1",
                           uuid.UUID(survey_id))
    if name in DELIBERATE:
        _, status, body = DELIBERATE[name]
        assert answer == (status, body)
        assert links == []
        return
    recorded = RECORDED[name]
    if recorded["status"] != 200:
        assert answer == (recorded["status"], recorded["body"])
        assert links == []
        return
    # accepted: the link holds what pydantic read
    read = recorded["body"]["read"]
    status, link = answer
    assert status == 200, link
    expected = sorted((item["metadata_id"], json.dumps(item["value"])) for item in read["metadata_mapping"] or [])
    assert link["name"] == read["name"]
    assert sorted((m["metadata"]["id"], json.dumps(m["value"])) for m in link["metadata_mapping"]) == expected
    assert [(row["id"], row["name"]) for row in links] == [(link["id"], read["name"])]
