"""What the OpenAPI document says about each route: one entry per (method, path pattern), one
module per API family (common.py holds what they share).

A route that is added without an entry here is missing from /openapi.json, and
tests/ops/test_openapi.py fails; request bodies name the marshmallow schemas that validate them.
"""

from __future__ import annotations

from . import contact_links, created_links, filum, lists, management, operational, respondents
from .common import Operation

OPERATIONS: dict[tuple[str, str], Operation] = {
    **operational.OPERATIONS, **filum.OPERATIONS, **management.OPERATIONS, **contact_links.OPERATIONS,
    **respondents.OPERATIONS, **lists.OPERATIONS, **created_links.OPERATIONS,
}
