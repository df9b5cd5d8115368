"""Segment filter trees: validation names the place of each problem; compilation keeps values out of SQL."""

from __future__ import annotations

from decimal import Decimal

import pytest

from service.core.segments import MAX_DEPTH, MAX_NODES, validate_filters
from service.db.filters import compile_filters, jsonpath_any, like_pattern


def problems(tree):
    _, issues = validate_filters(tree, loc=())
    return [(".".join(str(p) for p in i.loc), i.msg) for i in issues]


def cond(attribute="plan", op="equals", **value):
    return {"attribute": attribute, "op": op, **value}


@pytest.mark.parametrize("tree", [
    {},
    {"and": []},
    {"or": []},
    {"not": {}},
    cond(value="pro"),
    cond(value=3.5),
    cond(value=True),
    cond(op="isSet"),
    cond(op="isNotSet", value=None),
    cond(op="in", value=["a", 1, False]),
    cond(op="in", value=[]),
    cond(op="greaterThan", value="2024-01-01"),
    {"and": [cond(value="pro"), {"or": [cond(op="contains", value="x"), {"not": cond(op="isSet")}]}]},
])
def test_valid_trees_pass(tree):
    normalised, issues = validate_filters(tree)
    assert issues == []
    # isSet/isNotSet are answered without a value; every other valid tree comes back as it was
    expected = {"attribute": "plan", "op": "isNotSet"} if tree.get("op") == "isNotSet" else tree
    assert normalised == expected


def test_contact_ids_are_normalised_to_integers():
    tree, issues = validate_filters(cond("contactId", "in", value=["12", 13]))
    assert issues == []
    assert tree == {"attribute": "contactId", "op": "in", "value": [12, 13]}


def test_each_problem_is_named_by_its_place():
    tree = {"and": [
        cond(value="ok"),
        cond(op="between", value=1),
        {"or": [{"attribute": "age"}, cond(op="in", value="x"), "nope"]},
        {"not": cond(op="greaterThan", value=True, extra=1)},
        cond("contactId", "equals", value=1),
        cond("contactId", "in", value=[0, "x", 2**63]),
        cond("1bad", "equals", value=1),
        {"and": [], "or": []},
        cond(op="isSet", value="x"),
        cond(value=None),
        cond(op="contains", value=5),
        cond(value="a\x00b"),
        cond(value="x" * 1001),
        {"attribute": 5, "op": 5, "value": 1},
        cond(op="in", value=[{"x": 1}, None]),
    ]}
    assert problems(tree) == [
        ("and.1.op", "value is not a valid enumeration member; permitted: 'equals', 'notEquals', 'contains', "
                     "'doesNotContain', 'startsWith', 'endsWith', 'greaterThan', 'greaterEqual', 'lessThan', "
                     "'lessEqual', 'in', 'isSet', 'isNotSet'"),
        ("and.2.or.0.op", "field required"),
        ("and.2.or.1.value", "value is not a valid list"),
        ("and.2.or.2", "value is not a valid dict"),
        ("and.3.not.extra", "extra fields not permitted"),
        ("and.4.op", "contactId supports only the in operator"),
        ("and.5.value.0", "a contact id is a positive integer (or its decimal string)"),
        ("and.5.value.1", "a contact id is a positive integer (or its decimal string)"),
        ("and.5.value.2", "a contact id is a positive integer (or its decimal string)"),
        ("and.6.attribute", "an attribute key is 1-64 letters, digits, _ or -, not starting with a digit"),
        ("and.7", "a group has exactly one key: and, or or not"),
        ("and.8.value", "isSet takes no value"),
        ("and.9.value", "value must be a string, a finite number or a boolean"),
        ("and.10.value", "str type expected"),
        ("and.11.value", "NUL characters are not allowed"),
        ("and.12.value", "ensure this value has at most 1000 characters"),
        ("and.13.attribute", "str type expected"),
        ("and.13.op", "value is not a valid enumeration member; permitted: 'equals', 'notEquals', 'contains', "
                      "'doesNotContain', 'startsWith', 'endsWith', 'greaterThan', 'greaterEqual', 'lessThan', "
                      "'lessEqual', 'in', 'isSet', 'isNotSet'"),
        ("and.14.value.0", "value must be a string, a finite number or a boolean"),
        ("and.14.value.1", "value must be a string, a finite number or a boolean"),
    ]


def test_comparisons_take_no_booleans_and_missing_values_are_named():
    assert problems(cond(op="greaterThan", value=True)) == [("value", "value must be a string or a finite number")]
    assert problems(cond(op="lessEqual")) == [("value", "field required")]
    assert problems({"and": {"x": 1}}) == [("and", "value is not a valid list")]
    assert problems([]) == [("", "value is not a valid dict")]


def test_depth_and_size_are_bounded():
    deep: dict = cond(value=1)
    for _ in range(MAX_DEPTH):
        deep = {"not": deep}
    assert problems(deep) == []
    too_deep = {"and": [deep]}
    assert problems(too_deep) == [("and.0" + ".not" * (MAX_DEPTH - 1), "filters nest at most 8 levels deep")]
    wide = {"or": [cond(value=i) for i in range(MAX_NODES - 1)]}
    assert problems(wide) == []
    assert problems({"or": [cond(value=i) for i in range(MAX_NODES)]}) == [("", "a filter has at most 200 nodes")]
    assert problems(cond(op="in", value=list(range(1001)))) == [("value", "ensure this value has at most 1000 items")]


def test_values_and_keys_are_parameters_never_sql_text():
    evil = "x' OR '1'='1'; DROP TABLE contacts; --"
    tree = {"and": [cond("x__OR__1_", value=evil),
                    cond("plan", "in", value=[evil, 7, True]),
                    cond("contactId", "in", value=[5])]}
    normalised, issues = validate_filters(tree)
    assert issues == []
    sql, params = compile_filters(normalised, 4)
    assert evil not in sql and "DROP" not in sql and "plan" not in sql
    assert "$4" in sql and "$3" not in sql
    # the jsonpath for the GIN index is a parameter too (its string escaped for jsonpath); with a number
    # among `in`'s values there is none (see jsonpath_any)
    assert params == ["x__OR__1_", evil, '$."x__OR__1_" == "' + evil + '"', "plan", [evil], [Decimal(7)], [True], [5]]


@pytest.mark.parametrize(("values", "path"), [
    (["pro"], '$."plan" == "pro"'),
    (['a "quoted" \\ value'], '$."plan" == "a \\"quoted\\" \\\\ value"'),
    (["30", "1.50", "-2"], '$."plan" == "30" || $."plan" == 30 || $."plan" == "1.50" || $."plan" == 1.50'
                           ' || $."plan" == "-2" || $."plan" == -2'),
    (["true", False], '$."plan" == "true" || $."plan" == true || $."plan" == false'),
    (["pro", 7], None),  # a number also equals strings such as "07": no finite jsonpath covers it
    ([2.5], None),
])
def test_equality_is_narrowed_by_a_jsonpath_the_gin_index_answers(values, path):
    assert jsonpath_any("plan", values) == path


def test_empty_groups():
    assert compile_filters({}, 1) == ("TRUE", [])
    assert compile_filters({"and": []}, 1) == ("TRUE", [])
    assert compile_filters({"or": []}, 1) == ("FALSE", [])
    assert compile_filters({"not": {}}, 1) == ("(NOT TRUE)", [])


def test_numbers_are_passed_as_exact_decimals():
    _, params = compile_filters(cond(op="greaterThan", value=0.1), 1)
    assert params == ["plan", Decimal("0.1")]


@pytest.mark.parametrize(("template", "value", "pattern"), [
    ("%{}%", "50%", "%50\\%%"),
    ("{}%", "a_b", "a\\_b%"),
    ("%{}", "c:\\x", "%c:\\\\x"),
])
def test_like_wildcards_are_literal(template, value, pattern):
    assert like_pattern(template, value) == pattern


def test_every_parameter_is_used_by_the_sql():
    for tree in (cond(op="in", value=[]), {"and": [cond(op="in", value=[]), cond(op="isSet")]},
                 cond("contactId", "in", value=[]), cond(op="in", value=[True])):
        sql, params = compile_filters(tree, 3)
        assert [f"${3 + i}" in sql for i in range(len(params))] == [True] * len(params)
        assert f"${3 + len(params)}" not in sql
