"""Segment filters: the tree is validated here (the edge calls validate_filters); db/filters.py compiles it.

A tree is `{}` (every contact), `{"and": [...]}`, `{"or": [...]}`, `{"not": {...}}`, or a
condition `{"attribute": KEY, "op": OP, "value": V}` (the operators are db/filters.py's). The
validated tree is normalised: what the compiler is given is always one it can compile.
"""

from __future__ import annotations

import re
from typing import Any, cast

from ..db.filters import CONTACT_ID as CONTACT_ID
from ..db.filters import EQUALITY_OPS, ORDER_OPS, PRESENCE_OPS, TEXT_OPS
from .errors import Issue
from .rules import (
    EXTRA,
    MISSING,
    NOT_A_DICT,
    NOT_A_LIST,
    NOT_A_STR,
    Problem,
    Text,
    is_number,
    not_one_of,
    parse_id,
    too_many,
)

MAX_DEPTH = 8
MAX_NODES = 200
MAX_IN_VALUES = 1000
FILTER_TEXT = Text(0, 1000)  # a string a condition compares with
# attribute keys: letters, digits, `_` and `-`; `contactId` is the contact's own id, not an attribute
KEY_CHARS = 64
ATTRIBUTE_KEY = re.compile(rf"^[A-Za-z_][A-Za-z0-9_-]{{0,{KEY_CHARS - 1}}}$")
KEY_RULE = f"an attribute key is 1-{KEY_CHARS} letters, digits, _ or -, not starting with a digit"
BAD_KEY = Problem("value_error.attribute_key", KEY_RULE)

OPERATORS = (*EQUALITY_OPS, *TEXT_OPS, *ORDER_OPS, "in", *PRESENCE_OPS)
GROUPS = ("and", "or", "not")
_CONDITION_FIELDS = ("attribute", "op", "value")

Loc = tuple[str | int, ...]


def valid_attribute_key(key: Any) -> bool:
    return isinstance(key, str) and key != CONTACT_ID and ATTRIBUTE_KEY.match(key) is not None


class _TooBig(Exception):
    pass


class _Validator:
    def __init__(self) -> None:
        self.issues: list[Issue] = []
        self.nodes = 0

    def fail(self, loc: Loc, problem: Problem) -> None:
        self.issues.append(problem.at(loc))

    def node(self, value: Any, loc: Loc, depth: int) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _TooBig()
        if not isinstance(value, dict):
            return self.fail(loc, NOT_A_DICT)
        if not value:
            return {}
        groups = [k for k in GROUPS if k in value]
        if not groups:
            return self.condition(value, loc)
        if len(value) != 1:
            return self.fail(loc, Problem("value_error.filter.group", "a group has exactly one key: and, or or not"))
        if depth >= MAX_DEPTH:
            return self.fail(loc, Problem("value_error.filter.depth", f"filters nest at most {MAX_DEPTH} levels deep"))
        kind = groups[0]
        if kind == "not":
            return {"not": self.node(value["not"], (*loc, "not"), depth + 1)}
        children = value[kind]
        if not isinstance(children, list):
            return self.fail((*loc, kind), NOT_A_LIST)
        return {kind: [self.node(child, (*loc, kind, i), depth + 1) for i, child in enumerate(children)]}

    def condition(self, value: dict[str, Any], loc: Loc) -> Any:
        found = len(self.issues)
        for extra in value:
            if extra not in _CONDITION_FIELDS:
                self.fail((*loc, extra), EXTRA)
        attribute, op = value.get("attribute"), value.get("op")
        if "attribute" not in value:
            self.fail((*loc, "attribute"), MISSING)
        elif not isinstance(attribute, str):
            self.fail((*loc, "attribute"), NOT_A_STR)
        elif attribute != CONTACT_ID and not valid_attribute_key(attribute):
            self.fail((*loc, "attribute"), BAD_KEY)
        if "op" not in value:
            self.fail((*loc, "op"), MISSING)
        elif op not in OPERATORS:
            self.fail((*loc, "op"), not_one_of(OPERATORS))
        elif attribute == CONTACT_ID and op != "in":
            self.fail((*loc, "op"), Problem("value_error.filter.contact_id", "contactId supports only the in operator"))
        if len(self.issues) > found:
            return None
        # no new issue: both were checked to be strings above
        return self.value(cast(str, attribute), cast(str, op), value, (*loc, "value"))

    def value(self, attribute: str, op: str, node: dict[str, Any], loc: Loc) -> Any:
        present = "value" in node
        value = node.get("value")
        if op in PRESENCE_OPS:
            if value is not None:
                self.fail(loc, Problem("value_error.filter.no_value", f"{op} takes no value"))
            return {"attribute": attribute, "op": op}
        if not present:
            return self.fail(loc, MISSING)
        if op == "in":
            if not isinstance(value, list):
                return self.fail(loc, NOT_A_LIST)
            if len(value) > MAX_IN_VALUES:
                return self.fail(loc, too_many(MAX_IN_VALUES))
            check = self.contact_id if attribute == CONTACT_ID else self.scalar
            items = [check(item, (*loc, i), allow_bool=True) for i, item in enumerate(value)]
            return {"attribute": attribute, "op": op, "value": items}
        if op in TEXT_OPS:
            if not isinstance(value, str):
                return self.fail(loc, NOT_A_STR)
            return {"attribute": attribute, "op": op, "value": self.scalar(value, loc, allow_bool=False)}
        return {"attribute": attribute, "op": op,
                "value": self.scalar(value, loc, allow_bool=op in EQUALITY_OPS)}

    def scalar(self, value: Any, loc: Loc, allow_bool: bool) -> Any:
        if isinstance(value, bool):
            if not allow_bool:
                self.fail(loc, Problem("type_error", "value must be a string or a finite number"))
            return value
        if is_number(value):
            return value
        if isinstance(value, str):
            problem = FILTER_TEXT.problem(value)
            if problem is not None:
                self.fail(loc, problem)
            return value
        kinds = "a string, a finite number or a boolean" if allow_bool else "a string or a finite number"
        self.fail(loc, Problem("type_error", f"value must be {kinds}"))
        return None

    def contact_id(self, value: Any, loc: Loc, allow_bool: bool = False) -> int | None:
        """Contact ids are answered as strings; both `"123"` and `123` are accepted."""
        contact_id = parse_id(value)
        if contact_id is not None:
            return contact_id
        self.fail(loc, Problem("type_error.contact_id", "a contact id is a positive integer (or its decimal string)"))
        return None


def validate_filters(tree: Any, loc: Loc = ("body", "filters")) -> tuple[Any, list[Issue]]:
    """The normalised tree and the problems found, each named by its place in the tree."""
    validator = _Validator()
    try:
        normalised = validator.node(tree, loc, 0)
    except _TooBig:
        return None, [Issue(loc, f"a filter has at most {MAX_NODES} nodes", "value_error.filter.size")]
    return normalised, validator.issues
