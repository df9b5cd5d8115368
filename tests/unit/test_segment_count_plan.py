"""Which form a segment count takes (db/members.py, docs/design.md "Counts with stale statistics"): hops
through the page index with sorts off, unless another index may answer the filter (then numbered)."""

from __future__ import annotations

from typing import Any

import pytest

from service.db.members import _other_index


def cond(attribute: str = "plan", op: str = "equals", **value: Any) -> dict[str, Any]:
    return {"attribute": attribute, "op": op, **value}


@pytest.mark.parametrize("tree", [
    cond(value="pro"),
    cond(value=True),
    cond(op="in", value=["pro", "team"]),
    cond(attribute="contactId", op="in", value=[1, 2]),
    {"and": [cond(op="isSet"), cond(value="pro")]},  # the index narrows, the rest is checked on its rows
    {"or": [cond(value="pro"), cond(attribute="email", value="a@x.io")]},  # a union of two index scans
])
def test_a_filter_another_index_may_answer_is_numbered(tree):
    assert _other_index(tree) is True


@pytest.mark.parametrize("tree", [
    {},
    {"and": []},
    {"or": []},
    cond(value=42),  # a number has no jsonpath (a stored "042" equals 42)
    cond(op="in", value=["pro", 42]),
    cond(op="in", value=[]),
    cond(op="notEquals", value="pro"),
    cond(op="contains", value="ro"),
    cond(op="isSet"),
    {"not": cond(value="pro")},
    {"or": [cond(value="pro"), cond(op="contains", value="ro")]},  # one branch no index answers: every row
])
def test_a_filter_only_the_page_order_answers_takes_the_hops(tree):
    assert _other_index(tree) is False
