"""Segment filters compiled to parameterised SQL over `contacts`, and the filter language's operators.

The tree is validated first (core/segments.py): `{}` (every contact), `{"and": [...]}`,
`{"or": [...]}`, `{"not": {...}}`, or a condition `{"attribute": KEY, "op": OP, "value": V}`.
Every value and every attribute key becomes a `$n` parameter; the SQL text only ever holds
operators chosen here, so the text depends on the tree's shape alone (and prepared statements are
shared between segments of the same shape).

Every compiled condition is true or false, never NULL, so `not` is an exact complement: a missing
attribute makes `equals` false and `notEquals` true.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

# the contact's own id (the `id` column), not an attribute: it takes `in` alone
CONTACT_ID = "contactId"
EQUALITY_OPS = ("equals", "notEquals")
# each text operator's LIKE pattern around the escaped value
TEXT_OPS = {"contains": "%{}%", "doesNotContain": "%{}%", "startsWith": "{}%", "endsWith": "%{}"}
ORDER_OPS = {"greaterThan": ">", "greaterEqual": ">=", "lessThan": "<", "lessEqual": "<="}
PRESENCE_OPS = ("isSet", "isNotSet")

# numbers stored as JSON numbers, or as strings in plain decimal notation, compare as numbers;
# anything else is NULL here (never a cast error), so the comparison is false
_NUMBER_TEXT = r"'^-?[0-9]{1,40}(\.[0-9]{1,40})?$'"


def like_pattern(template: str, value: str) -> str:
    """`value` inside a LIKE pattern, its wildcards and the escape character taken literally."""
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return template.format(escaped)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


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
        numbers = [_decimal(v) for v in values if _is_number(v)]
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
