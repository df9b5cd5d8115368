"""The contacts of a segment: one page, or how many there are (with every `step`-th member's position).

The filter is compiled to SQL by `filters.py` (values and keys are `$n` parameters). A page
walks `contacts_page_idx` (org, created_at DESC, id DESC) and reads only ids for the skipped rows;
the attributes asked for are extracted in SQL for the page's rows alone.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from .filters import CONTACT_ID, compile_filters, jsonpath_any
from .segments import CONTACTS_VERSION, Since


@dataclass(frozen=True)
class OpenedFilter:
    """Only the members that have (or have not) opened the survey's contact link: `?opened=`."""

    survey_id: uuid.UUID
    opened: bool
    # the survey's opens version when the request began (see LinkContext)
    version: int

    def sql(self, param: int) -> str:
        """The condition on `contacts`, the survey id being `$param`: a probe of contact_opens' key."""
        exists = "EXISTS" if self.opened else "NOT EXISTS"
        return (f" AND {exists} (SELECT 1 FROM contact_opens o"
                f" WHERE o.org_id = contacts.org_id AND o.survey_id = ${param} AND o.contact_id = contacts.id)")


def _opened(opened: OpenedFilter | None, param: int) -> tuple[str, list[Any]]:
    return ("", []) if opened is None else (opened.sql(param), [opened.survey_id])


@dataclass(frozen=True)
class PageRow:
    contact_id: int
    # the asked-for attributes as JSON text (None when no keys were asked for)
    attributes_json: str | None


@dataclass(frozen=True)
class Counted:
    """A segment counted in one snapshot, with the key of every `step`-th member in the page order."""

    total: int
    since: Since
    # (created_at, id) of the members at positions 1, step + 1, 2 * step + 1, ... (1-based)
    markers: list[tuple[datetime, int]]
    # the survey's opens version the count saw (reminder lists, `opened=`; 0 otherwise)
    opens_version: int = 0


# A segment filter's values decide its best plan (a jsonpath that matches one contact wants the attribute
# index, one that matches most of them the page order), so its pages and counts are planned with their
# values, never by the generic plan PostgreSQL may settle on after five runs of a prepared statement.
# Only these statements: on every connection, the setting doubled the cost of the hot paths' statements
# (opening a link, a replay, ~100 us more each; docs/design.md).
_CUSTOM_PLAN = "SET LOCAL plan_cache_mode = force_custom_plan"


async def _fetch_planned(conn: asyncpg.Connection, sql: str, args: list[Any], values: bool,
                         walk: bool = False) -> list[asyncpg.Record]:
    """`conn.fetch`, planned with its values when the filter has any (`values`), with sorts off (`walk`)."""
    settings = [setting for setting, on in ((_CUSTOM_PLAN, values), (_WALK, walk)) if on]
    if not settings:
        return await conn.fetch(sql, *args)
    async with conn.transaction():
        await conn.execute("; ".join(settings))
        return await conn.fetch(sql, *args)


# Every `step`-th member (1-based positions 1, step + 1, ...) found by hops through the page index: each
# hop seeks past the last one found and walks `step` members (only ids and created_at: an index-only
# walk for `{}`), so the whole statement walks the segment once, like a count, with none of a window
# function's cost per row. The total is (markers - 1) * step plus the members from the last marker on
# (at most `step`: a walk from the marker too, not a count the planner may take through another index).
# Only ever run under _WALK: for filters no other index answers, and for the others when it was the faster
# form for the segment (count_members, core/count_forms.py).
_COUNT = """
WITH RECURSIVE m (n, at, id) AS (
    (SELECT 1, created_at, id FROM contacts WHERE org_id = $1 AND {cond} ORDER BY created_at DESC, id DESC LIMIT 1)
  UNION ALL
    SELECT m.n + 1, x.created_at, x.id FROM m CROSS JOIN LATERAL (
        SELECT created_at, id FROM contacts WHERE org_id = $1 AND (created_at, id) < (m.at, m.id) AND {cond}
        ORDER BY created_at DESC, id DESC OFFSET $2 - 1 LIMIT 1) AS x
), last AS (SELECT n, at, id FROM m ORDER BY n DESC LIMIT 1)
SELECT (SELECT array_agg(at ORDER BY n) FROM m) AS ats, (SELECT array_agg(id ORDER BY n) FROM m) AS ids,
       coalesce((SELECT (last.n - 1) * $2 + (SELECT count(*) FROM (SELECT 1 FROM contacts WHERE org_id = $1
                 AND (created_at, id) <= (last.at, last.id) AND {cond} ORDER BY created_at DESC, id DESC LIMIT $2)
                 AS tail) FROM last), 0) AS total,
       pg_current_snapshot()::text AS snapshot, {version} AS version, {opens} AS opens
"""
# The reminder list (`{cond}` ends with the opened condition), and filters another index may answer: every
# member numbered in page order, every `step`-th kept. The hops above probe contact_opens once per contact
# walked, in page order, and walked 3-25x slower than a count; this form lets PostgreSQL join the survey's
# opens by hash while reading the page index in order (300,000 contacts: 29-170 ms where the hops took
# 200-750, docs/performance.md). One scan and at most one sort, whatever the plan: never quadratic.
_COUNT_NUMBERED = """
WITH numbered AS MATERIALIZED (
    SELECT created_at AS at, id, row_number() OVER (ORDER BY created_at DESC, id DESC) AS n
    FROM contacts WHERE org_id = $1 AND {cond}
)
SELECT array_agg(at ORDER BY n) AS ats, array_agg(id ORDER BY n) AS ids,
       (SELECT count(*) FROM numbered) AS total,
       pg_current_snapshot()::text AS snapshot, {version} AS version, {opens} AS opens
FROM numbered WHERE (n - 1) % $2 = 0
"""
# the survey's opens version, read in the count's snapshot (the survey id as $n)
_OPENS = "(SELECT coalesce(max(version), 0) FROM contact_opens_versions WHERE org_id = $1 AND survey_id = ${0})"


# The hops are planned one by one from PostgreSQL's estimates. With stale statistics (a bulk import that
# autovacuum has not analysed yet: the table or the organisation looks a few rows big) each hop became a
# bitmap scan of every member past its marker plus a sort of them, to keep 250: quadratic (100,000 contacts:
# 20,049,851 rows read, 5-7 s; 25 ms once analysed). With sorts off (SET LOCAL, in the count's own
# transaction) the page index's order is the one plan without a sort, so each hop is a walk of `step`,
# whatever the statistics. That also shuts out the attribute index (a bitmap, unordered), and a filter it
# answers had the same quadratic trap with fresh statistics (a sort of the matches past each marker), so
# those counts are numbered in one statement, where it can pay: one scan, at most one sort. Figures:
# docs/design.md, "Counts with stale statistics".
_WALK = "SET LOCAL enable_sort = off"


def _other_index(node: dict[str, Any]) -> bool:
    """Whether an index other than the page order may answer the filter: a test `filters` puts behind the
    attribute index (equals, in), or contact ids (the primary key); under `or`, every branch must be."""
    if not node or "not" in node:
        return False
    if "and" in node:
        return any(_other_index(child) for child in node["and"])
    if "or" in node:
        return bool(node["or"]) and all(_other_index(child) for child in node["or"])
    if node["attribute"] == CONTACT_ID:
        return True
    values = node.get("value") if node["op"] == "in" else [node.get("value")]
    return node["op"] in ("equals", "in") and jsonpath_any(node["attribute"], values or []) is not None


def either_form(filters: dict[str, Any], opened: OpenedFilter | None) -> bool:
    """Whether a count of this segment may take either form: numbered is its default (another index may
    answer the filter), and the hops are just as right (no reminder-list condition)."""
    return opened is None and _other_index(filters)


async def count_members(conn: asyncpg.Connection, org_id: uuid.UUID, filters: dict[str, Any], step: int,
                        opened: OpenedFilter | None = None, hops: bool = False) -> Counted:
    """How many contacts the segment holds (that have or have not opened, with `opened`) and where
    every `step`-th member is, in one snapshot.

    One statement: the snapshot (and the opens version) it reports is the one the count and the
    positions saw. It reads the segment once (never once per hop: _WALK), so it costs about what a
    count costs (core.segment_cache runs it rarely). `hops` chooses the form where either_form allows
    a choice (numbered by default); elsewhere the filter decides.
    """
    condition, params = compile_filters(filters, 3)
    opened_sql, opened_params = _opened(opened, 3 + len(params))
    opens = "0::bigint" if opened is None else _OPENS.format(3 + len(params))
    if not either_form(filters, opened):
        hops = opened is None
    sql = _COUNT if hops else _COUNT_NUMBERED
    (row,) = await _fetch_planned(conn, sql.format(cond=condition + opened_sql, version=CONTACTS_VERSION, opens=opens),
                                  [org_id, step, *params, *opened_params], bool(params), hops)  # one row
    markers = list(zip(row["ats"] or [], row["ids"] or [], strict=True))
    return Counted(row["total"], Since(row["snapshot"], row["version"]), markers, row["opens"])


def _page_sql(condition: str, key_count: int, anchored: bool) -> str:
    # from a remembered member on (inclusive): a row comparison on the page index, however deep the page
    anchor = " AND (created_at, id) <= ($4::timestamptz, $5::bigint)" if anchored else ""
    where = f"org_id = $1{anchor} AND {condition}"  # `condition` ends with any opened filter
    order = "ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
    if key_count == 0:
        return f"SELECT id, NULL::text AS attrs FROM contacts WHERE {where} {order}"
    first = 6 if anchored else 4
    # `->>`: each value as text, as Formbricks' schema answers attributes (a number in its JSON text, `42`,
    # a boolean as `true`); only the page's rows are joined back for their attributes, the skipped ones
    # are never read for them. Stored values are never null, so stripping nulls leaves exactly the keys
    # the contact has.
    pairs = ", ".join(f"${first + i}::text, c.attributes->>(${first + i}::text)" for i in range(key_count))
    return (
        f"SELECT p.id, jsonb_strip_nulls(jsonb_build_object({pairs}))::text AS attrs"
        f" FROM (SELECT id, created_at FROM contacts WHERE {where} {order}) AS p"
        " JOIN contacts c ON c.id = p.id AND c.org_id = $1 ORDER BY p.created_at DESC, p.id DESC"
    )


async def member_page(
    conn: asyncpg.Connection, org_id: uuid.UUID, filters: dict[str, Any], limit: int, offset: int,
    attribute_keys: list[str], anchor: tuple[datetime, int] | None = None, opened: OpenedFilter | None = None,
) -> list[PageRow]:
    """One page of the segment's contacts (of those that have or have not opened, with `opened`),
    newest first (ties by id), with the asked-for attributes.

    With an `anchor` (a member's created_at and id), the page starts `offset` members after it (the
    anchor itself is member 0): a seek through the page index, then a short walk. Without one, it
    walks `offset` members from the newest.
    """
    fixed: list[Any] = [org_id, limit, offset]
    if anchor is not None:
        fixed.extend(anchor)
    condition, params = compile_filters(filters, len(fixed) + 1 + len(attribute_keys))
    opened_sql, opened_params = _opened(opened, len(fixed) + 1 + len(attribute_keys) + len(params))
    rows = await _fetch_planned(conn, _page_sql(condition + opened_sql, len(attribute_keys), anchor is not None),
                                [*fixed, *attribute_keys, *params, *opened_params], bool(params))
    return [PageRow(r[0], r[1]) for r in rows]
