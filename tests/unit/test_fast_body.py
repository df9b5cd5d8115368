"""The create-link fast path answers exactly what CreateLinkSchema answers, or defers to it."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from marshmallow import ValidationError

from service.core.rules import INT64_MAX
from service.web.fastbody import MAX_METADATA_ITEMS, NAME, fast_create_link
from service.web.schemas import MAX_LIST_ITEMS, MAX_VALUE_CHARS, CreateLinkSchema

SCHEMA = CreateLinkSchema()
assert NAME.max_chars is not None
NAME_MAX = NAME.max_chars  # the bound the schema and the fast path both ask
SPACES = [" ", "\t", "\n", "\u00a0", "\u2003", "\u3000", "\x1f", ""]
NAMES = ["", " ", "a", "SKU 12345 - Link 001", "x" * NAME_MAX, "x" * (NAME_MAX + 1), "é" * NAME_MAX, "a\x00b",
         "\x00", "日本語", "\ud800", "emoji \U0001f600"]


def _schema(data: Any) -> tuple[bool, Any]:
    try:
        return True, SCHEMA.load(data)
    except ValidationError as exc:
        return False, exc.messages


def _string(rng: random.Random, limit: int) -> str:
    n = rng.choice([0, 1, 5, limit - 1, limit, limit + 1])
    return rng.choice(SPACES) + "s" * max(0, n) + rng.choice(SPACES)


def _scalar(rng: random.Random) -> Any:
    return rng.choice([
        lambda: _string(rng, MAX_VALUE_CHARS), lambda: rng.randint(-(2**70), 2**70), lambda: rng.random() * 1e300,
        lambda: "a\x00b", lambda: "\x00", lambda: "é\u2028\U0001f600",
        lambda: 0, lambda: -0.0, lambda: 1.0, lambda: True, lambda: False, lambda: None, lambda: math.inf,
        lambda: math.nan, lambda: {"a": 1}, lambda: [], lambda: "1",
    ])()


def _value(rng: random.Random, small: bool = False) -> Any:
    if rng.random() < 0.3:
        big = not small and rng.random() < 0.2
        n = rng.choice([MAX_LIST_ITEMS, MAX_LIST_ITEMS + 1]) if big else rng.choice([0, 1, 3, 4])
        return [_scalar(rng) if rng.random() < 0.2 else rng.choice(["v", 1, 2.5, None]) for _ in range(n)]
    return _scalar(rng)


def _metadata_id(rng: random.Random) -> Any:
    return rng.choice([1, 2, 3, 7, 10**6, INT64_MAX, INT64_MAX + 1, 0, -1, True, 1.0, "1", None, [1],
                       # what pydantic v1 reads as an int: the schema takes those it reads without loss
                       " 7 ", "+7", "0_7", "7.0", "", 7.0, 1.5, 2.0**53, 2.0**53 + 2, -3.0, math.nan])


def _item(rng: random.Random, small: bool) -> Any:
    roll = rng.random()
    if roll < 0.03:
        return rng.choice([None, 1, "x", [], [1]])
    item: dict[str, Any] = {}
    if rng.random() < 0.95:
        item["metadata_id"] = _metadata_id(rng) if rng.random() < 0.3 else rng.randint(1, 40)
    if rng.random() < 0.9:
        item["value"] = _value(rng, small)
    if rng.random() < 0.1:
        item["extra"] = "ignored"
    return item


def _body(rng: random.Random) -> Any:
    roll = rng.random()
    if roll < 0.02:
        return rng.choice([None, [], "x", 1, True])
    body: dict[str, Any] = {}
    if rng.random() < 0.95:
        body["name"] = rng.choice(NAMES) if rng.random() < 0.5 else rng.choice([
            rng.choice(SPACES) + "Link" + rng.choice(SPACES), 1, None, ["x"], {"x": 1}, True,
            1.5, -0.0, 10**30, 1e300, 2.0**63, math.inf, 0])
    mode = rng.random()
    if mode < 0.1:
        pass
    elif mode < 0.15:
        body["metadata_mapping"] = rng.choice([None, {}, "x", 1, [None]])
    else:
        big = rng.random() < 0.05
        n = rng.choice([MAX_METADATA_ITEMS, MAX_METADATA_ITEMS + 1]) if big else rng.choice([0, 1, 2, 3, 5])
        body["metadata_mapping"] = [_item(rng, small=big) for _ in range(n)]
    if rng.random() < 0.1:
        body["unknown"] = {"nested": True}
    return body


@pytest.mark.parametrize("seed", range(8))
def test_generated_bodies_agree_with_the_schema(seed):
    rng = random.Random(seed)
    fast_hits = 0
    for _ in range(1500):
        body = _body(rng)
        fast = fast_create_link(body)
        ok, answer = _schema(body)
        if fast is not None:
            fast_hits += 1
            assert ok, (body, answer)
            assert fast == answer
            # same values and types all the way down (1, 1.0 and True compare equal in Python)
            assert repr(fast) == repr(answer)
    assert fast_hits > 50  # the generator does reach the fast path


def test_fast_path_takes_the_common_valid_bodies():
    bodies: list[dict[str, Any]] = [
        {"name": "SKU 12345 - Link 001", "metadata_mapping": [{"metadata_id": 1, "value": "SKU-12345"},
                                                               {"metadata_id": 2, "value": "2024-01-15"}]},
        {"name": "  padded  "},
        {"name": "n", "metadata_mapping": []},
        {"name": "n", "metadata_mapping": None},
        {"name": "n", "metadata_mapping": [{"metadata_id": 3}]},
        {"name": "n", "metadata_mapping": [{"metadata_id": 3, "value": [1, "a", None, 2.5]}], "extra": 1},
        {"name": "n", "metadata_mapping": [{"metadata_id": 3, "value": 1e308, "other": "x"}]},
    ]
    for body in bodies:
        fast = fast_create_link(body)
        assert fast is not None, body
        assert fast == SCHEMA.load(body)


@pytest.mark.parametrize("body", [
    {"name": ""}, {"name": "   "}, {"name": "x" * 256}, {"name": "a\x00"}, {}, {"name": True}, [],
    {"name": "n", "metadata_mapping": [{"metadata_id": 1}, {"metadata_id": 1}]},
    {"name": "n", "metadata_mapping": [{"metadata_id": True}]},
    {"name": "n", "metadata_mapping": [{"metadata_id": 1.5}]},
    {"name": "n", "metadata_mapping": [{"metadata_id": "1.0"}]},
    {"name": "n", "metadata_mapping": [{"metadata_id": 1}, {"metadata_id": "1"}]},
    {"name": "n", "metadata_mapping": [{"metadata_id": 1, "value": True}]},
    {"name": "n", "metadata_mapping": [{"metadata_id": 1, "value": math.nan}]},
    {"name": "n", "metadata_mapping": [{"metadata_id": 1, "value": {"a": 1}}]},
    {"name": "n", "metadata_mapping": [{"metadata_id": 1, "value": [[1]]}]},
    {"name": "n", "metadata_mapping": [{"metadata_id": 1, "value": "x" * 2001}]},
    {"name": "n", "metadata_mapping": [{"metadata_id": 1, "value": "a\x00"}]},
    {"name": "n", "metadata_mapping": [{"metadata_id": 1, "value": ["ok", "\x00"]}]},
    {"name": "n", "metadata_mapping": [{"value": 1}]},
    {"name": "n", "metadata_mapping": {}},
])
def test_every_invalid_body_is_left_to_the_schema(body):
    assert fast_create_link(body) is None
    assert not _schema(body)[0]


@pytest.mark.parametrize(("body", "loaded"), [
    ({"name": 123}, {"name": "123", "metadata_mapping": []}),
    ({"name": 1.5}, {"name": "1.5", "metadata_mapping": []}),
    ({"name": "n", "metadata_mapping": [{"metadata_id": " 12 "}, {"metadata_id": 13.0, "value": 1}]},
     {"name": "n", "metadata_mapping": [{"metadata_id": 12, "value": None}, {"metadata_id": 13, "value": 1}]}),
])
def test_what_pydantic_coerces_without_loss_is_left_to_the_schema_which_takes_it(body, loaded):
    assert fast_create_link(body) is None
    assert SCHEMA.load(body) == loaded
    assert repr(SCHEMA.load(body)) == repr(loaded)  # 12 and 13 are ints, not strings or floats
