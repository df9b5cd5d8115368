"""Segment filters: the tree is validated here (the edge calls validate_filters); db/filters.py compiles it.

A tree is `{}` (every contact), `{"and": [...]}`, `{"or": [...]}`, `{"not": {...}}`, or a
condition `{"attribute": KEY, "op": OP, "value": V}` (the operators are db/filters.py's). The
validated tree is normalised: what the compiler is given is always one it can compile.
"""

from __future__ import annotations

import math
import re
from typing import Any, cast

from ..db.filters import CONTACT_ID as CONTACT_ID
from ..db.filters import EQUALITY_OPS, ORDER_OPS, PRESENCE_OPS, TEXT_OPS
from .errors import Issue

MAX_DEPTH = 8
MAX_NODES = 200
MAX_IN_VALUES = 1000
MAX_STRING = 1000
INT64_MAX = 2**63 - 1
# attribute keys: letters, digits, `_` and `-`; `contactId` is the contact's own id, not an attribute
ATTRIBUTE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
KEY_RULE = "an attribute key is 1-64 letters, digits, _ or -, not starting with a digit"

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
