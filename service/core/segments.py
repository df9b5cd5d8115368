"""Segment filters: the tree is validated at the edge, then compiled to parameterised SQL.

A tree is `{}` (every contact), `{"and": [...]}`, `{"or": [...]}`, `{"not": {...}}`, or a
condition `{"attribute": KEY, "op": OP, "value": V}`. Every value and every attribute key becomes
a `$n` parameter; the SQL text only ever holds operators chosen here, so the text depends on the
tree's shape alone (and prepared statements are shared between segments of the same shape).

Every compiled condition is true or false, never NULL, so `not` is an exact complement: a missing
attribute makes `equals` false and `notEquals` true.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, cast

from .errors import Issue

MAX_DEPTH = 8
MAX_NODES = 200
MAX_IN_VALUES = 1000
MAX_STRING = 1000
INT64_MAX = 2**63 - 1
CONTACT_ID = "contactId"
# attribute keys: letters, digits, `_` and `-`; `contactId` is the contact's own id, not an attribute
ATTRIBUTE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
KEY_RULE = "an attribute key is 1-64 letters, digits, _ or -, not starting with a digit"

EQUALITY_OPS = ("equals", "notEquals")
TEXT_OPS = {"contains": "%{}%", "doesNotContain": "%{}%", "startsWith": "{}%", "endsWith": "%{}"}
ORDER_OPS = {"greaterThan": ">", "greaterEqual": ">=", "lessThan": "<", "lessEqual": "<="}
PRESENCE_OPS = ("isSet", "isNotSet")
OPERATORS = (*EQUALITY_OPS, *TEXT_OPS, *ORDER_OPS, "in", *PRESENCE_OPS)
GROUPS = ("and", "or", "not")
_CONDITION_FIELDS = ("attribute", "op", "value")

Loc = tuple[str | int, ...]


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def valid_attribute_key(key: Any) -> bool:
    return isinstance(key, str) and key != CONTACT_ID and ATTRIBUTE_KEY.match(key) is not None


def parse_contact_id(value: Any) -> int | None:
    """A positive bigint, given as an int or as its decimal string (at most 19 ASCII digits), else None."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        value = int(value)
    if type(value) is int and 1 <= value <= INT64_MAX:
        return value
    return None


class _TooBig(Exception):
    pass


class _Validator:
    def __init__(self) -> None:
        self.issues: list[Issue] = []
        self.nodes = 0

    def fail(self, loc: Loc, msg: str, type_: str) -> None:
        self.issues.append(Issue(loc, msg, type_))

    def node(self, value: Any, loc: Loc, depth: int) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _TooBig()
        if not isinstance(value, dict):
            return self.fail(loc, "value is not a valid dict", "type_error.dict")
        if not value:
            return {}
        groups = [k for k in GROUPS if k in value]
        if not groups:
            return self.condition(value, loc)
        if len(value) != 1:
            return self.fail(loc, "a group has exactly one key: and, or or not", "value_error.filter.group")
        if depth >= MAX_DEPTH:
            return self.fail(loc, f"filters nest at most {MAX_DEPTH} levels deep", "value_error.filter.depth")
        kind = groups[0]
        if kind == "not":
            return {"not": self.node(value["not"], (*loc, "not"), depth + 1)}
        children = value[kind]
        if not isinstance(children, list):
            return self.fail((*loc, kind), "value is not a valid list", "type_error.list")
        return {kind: [self.node(child, (*loc, kind, i), depth + 1) for i, child in enumerate(children)]}

    def condition(self, value: dict[str, Any], loc: Loc) -> Any:
        found = len(self.issues)
        for extra in value:
            if extra not in _CONDITION_FIELDS:
                self.fail((*loc, extra), "extra fields not permitted", "value_error.extra")
        attribute, op = value.get("attribute"), value.get("op")
        if "attribute" not in value:
            self.fail((*loc, "attribute"), "field required", "value_error.missing")
        elif not isinstance(attribute, str):
            self.fail((*loc, "attribute"), "str type expected", "type_error.str")
        elif attribute != CONTACT_ID and not valid_attribute_key(attribute):
            self.fail((*loc, "attribute"), KEY_RULE, "value_error.attribute_key")
        if "op" not in value:
            self.fail((*loc, "op"), "field required", "value_error.missing")
        elif op not in OPERATORS:
            self.fail((*loc, "op"), "value is not a valid enumeration member; permitted: "
                      + ", ".join(repr(o) for o in OPERATORS), "type_error.enum")
        elif attribute == CONTACT_ID and op != "in":
            self.fail((*loc, "op"), "contactId supports only the in operator", "value_error.filter.contact_id")
        if len(self.issues) > found:
            return None
        # no new issue: both were checked to be strings above
        return self.value(cast(str, attribute), cast(str, op), value, (*loc, "value"))

    def value(self, attribute: str, op: str, node: dict[str, Any], loc: Loc) -> Any:
        present = "value" in node
        value = node.get("value")
        if op in PRESENCE_OPS:
            if value is not None:
                self.fail(loc, f"{op} takes no value", "value_error.filter.no_value")
            return {"attribute": attribute, "op": op}
        if not present:
            return self.fail(loc, "field required", "value_error.missing")
        if op == "in":
            if not isinstance(value, list):
                return self.fail(loc, "value is not a valid list", "type_error.list")
            if len(value) > MAX_IN_VALUES:
                return self.fail(loc, f"ensure this value has at most {MAX_IN_VALUES} items",
                                 "value_error.list.max_items")
            check = self.contact_id if attribute == CONTACT_ID else self.scalar
            items = [check(item, (*loc, i), allow_bool=True) for i, item in enumerate(value)]
            return {"attribute": attribute, "op": op, "value": items}
        if op in TEXT_OPS:
            if not isinstance(value, str):
                return self.fail(loc, "str type expected", "type_error.str")
            return {"attribute": attribute, "op": op, "value": self.scalar(value, loc, allow_bool=False)}
        return {"attribute": attribute, "op": op,
                "value": self.scalar(value, loc, allow_bool=op in EQUALITY_OPS)}

    def scalar(self, value: Any, loc: Loc, allow_bool: bool) -> Any:
        if isinstance(value, bool):
            if not allow_bool:
                self.fail(loc, "value must be a string or a finite number", "type_error")
            return value
        if is_number(value):
            return value
        if isinstance(value, str):
            if len(value) > MAX_STRING:
                self.fail(loc, f"ensure this value has at most {MAX_STRING} characters",
                          "value_error.any_str.max_length")
            elif "\x00" in value:
                self.fail(loc, "NUL characters are not allowed", "value_error.str.nul")
            return value
        kinds = "a string, a finite number or a boolean" if allow_bool else "a string or a finite number"
        self.fail(loc, f"value must be {kinds}", "type_error")
        return None

    def contact_id(self, value: Any, loc: Loc, allow_bool: bool = False) -> int | None:
        """Contact ids are answered as strings; both `"123"` and `123` are accepted."""
        contact_id = parse_contact_id(value)
        if contact_id is not None:
            return contact_id
        self.fail(loc, "a contact id is a positive integer (or its decimal string)", "type_error.contact_id")
        return None


def validate_filters(tree: Any, loc: Loc = ("body", "filters")) -> tuple[Any, list[Issue]]:
    """The normalised tree and the problems found, each named by its place in the tree."""
    validator = _Validator()
    try:
        normalised = validator.node(tree, loc, 0)
    except _TooBig:
        return None, [Issue(loc, f"a filter has at most {MAX_NODES} nodes", "value_error.filter.size")]
    return normalised, validator.issues


# numbers stored as JSON numbers, or as strings in plain decimal notation, compare as numbers;
# anything else is NULL here (never a cast error), so the comparison is false
_NUMBER_TEXT = r"'^-?[0-9]{1,40}(\.[0-9]{1,40})?$'"


def like_pattern(template: str, value: str) -> str:
    """`value` inside a LIKE pattern, its wildcards and the escape character taken literally."""
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return template.format(escaped)


def _decimal(value: int | float) -> Decimal:
    # str() keeps 0.1 as 0.1 (Decimal(0.1) would carry the binary float's long tail)
    return Decimal(str(value))


def _jsonpath_terms(value: Any) -> list[str] | None:
    """The jsonpath literals an attribute equal to `value` can be: a string matches its own text, a
    number's text form (`"30"` is 30 and 30.0) and a boolean's; None for a number (a stored string such
    as `"042"` equals 42 too, which no finite list of literals covers)."""
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if not isinstance(value, str):
        return None
    terms = ['"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"']
    if re.fullmatch(_NUMBER_TEXT.strip("'"), value):
        terms.append(str(Decimal(value)))
    elif value in ("true", "false"):
        terms.append(value)
    return terms


def jsonpath_any(attribute: str, values: Sequence[Any]) -> str | None:
    """A jsonpath true for a contact whose attribute may equal one of `values`: `$."plan" == "pro" || ...`
    (keys are letters, digits, `_` and `-`; string values escaped), or None when one value cannot be
    written so. `attributes @@ path` is what the GIN index (jsonb_path_ops) on attributes answers."""
    terms: list[str] = []
    for value in values:
        found = _jsonpath_terms(value)
        if found is None:
            return None
        terms.extend(found)
    return " || ".join(f'$."{attribute}" == {term}' for term in terms) or None


class _Compiler:
    def __init__(self, first: int) -> None:
        self.first = first
        self.params: list[Any] = []
        self.attribute = ""  # of the condition being compiled

    def param(self, value: Any) -> str:
        self.params.append(value)
        return f"${self.first + len(self.params) - 1}"

    def node(self, node: dict[str, Any]) -> str:
        if not node:
            return "TRUE"
        if "and" in node:
            parts = [self.node(child) for child in node["and"]]
            return "(" + " AND ".join(parts) + ")" if parts else "TRUE"
        if "or" in node:
            parts = [self.node(child) for child in node["or"]]
            return "(" + " OR ".join(parts) + ")" if parts else "FALSE"
        if "not" in node:
            return f"(NOT {self.node(node['not'])})"
        return self.condition(node["attribute"], node["op"], node.get("value"))

    def condition(self, attribute: str, op: str, value: Any) -> str:
        if attribute == CONTACT_ID:
            return f"(id = ANY({self.param(list(value))}::bigint[]))"
        if op == "in" and not value:
            return "FALSE"  # before the key's parameter: a parameter the SQL never uses has no type
        self.attribute = attribute
        key = self.param(attribute)
        json_value, text = f"attributes->({key}::text)", f"attributes->>({key}::text)"
        number = (f"CASE jsonb_typeof({json_value}) WHEN 'number' THEN ({json_value})::numeric"
                  f" WHEN 'string' THEN CASE WHEN ({text}) ~ {_NUMBER_TEXT} THEN ({text})::numeric END END")
        if op in PRESENCE_OPS:
            test = f"(attributes ? ({key}::text))"
            return test if op == "isSet" else f"(NOT {test})"
        if op in EQUALITY_OPS:
            test = self.indexed([value], self.equals(value, json_value, text, number))
            return test if op == "equals" else f"(NOT {test})"
        if op in TEXT_OPS:
            test = f"coalesce(({text}) LIKE {self.param(like_pattern(TEXT_OPS[op], value))}::text, false)"
            return f"(NOT {test})" if op == "doesNotContain" else test
        if op in ORDER_OPS:
            sign = ORDER_OPS[op]
            if isinstance(value, str):
                return f'coalesce(({text}) COLLATE "C" {sign} {self.param(value)}::text, false)'
            return f"coalesce(({number}) {sign} {self.param(_decimal(value))}::numeric, false)"
        assert op == "in", op
        return self.indexed(value, self.member(value, json_value, text, number))

    def indexed(self, values: Sequence[Any], exact: str) -> str:
        """`exact`, behind a test that the GIN index on attributes answers when one exists: every contact
        whose attribute equals one of `values` (by the rules above) passes it, so it only narrows."""
        path = jsonpath_any(self.attribute, values)
        return exact if path is None else f"(attributes @@ {self.param(path)}::jsonpath AND {exact})"

    def equals(self, value: Any, json_value: str, text: str, number: str) -> str:
        if isinstance(value, bool):
            return f"coalesce({json_value} = {self.param(value)}::jsonb, false)"
        if isinstance(value, str):
            return f"coalesce(({text}) = {self.param(value)}::text, false)"
        return f"coalesce(({number}) = {self.param(_decimal(value))}::numeric, false)"

    def member(self, values: Sequence[Any], json_value: str, text: str, number: str) -> str:
        strings = [v for v in values if isinstance(v, str)]
        flags = [v for v in values if isinstance(v, bool)]
        numbers = [_decimal(v) for v in values if is_number(v)]
        parts = []
        if strings:
            parts.append(f"({text}) = ANY({self.param(strings)}::text[])")
        if numbers:
            parts.append(f"({number}) = ANY({self.param(numbers)}::numeric[])")
        if flags:
            parts.append(f"{json_value} = ANY({self.param(flags)}::jsonb[])")
        return "coalesce(" + " OR ".join(parts) + ", false)"


def compile_filters(tree: dict[str, Any], first_param: int) -> tuple[str, list[Any]]:
    """A boolean SQL expression over `contacts` for a validated tree, numbering its parameters
    from `$first_param`, and the parameters' values."""
    compiler = _Compiler(first_param)
    return compiler.node(tree), compiler.params
