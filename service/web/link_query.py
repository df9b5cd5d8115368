"""Query parameters of the contact-links operations (and the created-links `limit`), read as Formbricks does."""

from __future__ import annotations

from typing import Any

from multidict import MultiMapping

from ..core.errors import Issue
from ..core.rules import INT64_MAX, PAGE_LIMIT, Whole
from ..core.segments import valid_attribute_key
from .query import read_query_int

MAX_LINK_ATTRIBUTE_KEYS = 20

# name -> its rule; expirationDays has no default: absent means no expiry
QUERY_INTEGERS: dict[str, Whole] = {
    "limit": PAGE_LIMIT,
    "skip": Whole(0, INT64_MAX, 0),
    "expirationDays": Whole(1, 365),
}


# `opened`: true or false (1 or 0), in any case; empty is absent (no filter)
QUERY_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


def load_link_query(query: MultiMapping[str], names: tuple[str, ...]) -> tuple[dict[str, Any], list[Issue]]:
    """The contact-links query parameters in `names`, each invalid one an Issue of its own.

    Read as Formbricks reads them (its published document and route code): the last of a repeated
    parameter wins, an empty value is the default, and other parameters are not looked at.
    """
    values: dict[str, Any] = {}
    issues: list[Issue] = []
    for name in names:
        given = query.getall(name, [])
        raw = given[-1] if given else ""
        if name == "attributeKeys":
            keys = list(dict.fromkeys(k.strip() for k in raw.split(",") if k.strip()))
            if len(keys) > MAX_LINK_ATTRIBUTE_KEYS:
                issues.append(Issue(("query", name), f"ensure this value has at most {MAX_LINK_ATTRIBUTE_KEYS} keys",
                                    "value_error.list.max_items"))
            # keys that cannot exist are as unknown as keys that do not: ignored
            values[name] = [k for k in keys if valid_attribute_key(k)]
            continue
        if name == "opened":
            values[name] = QUERY_BOOLEANS.get(raw.strip().lower())
            if raw and values[name] is None:
                issues.append(Issue(("query", name), "value could not be parsed to a boolean", "type_error.bool"))
            continue
        rule = QUERY_INTEGERS[name]
        if not raw:
            values[name] = rule.default
            continue
        value, issue = read_query_int(raw, name, rule)
        if issue is not None:
            issues.append(issue)
        values[name] = value
    return values, issues
