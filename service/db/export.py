"""A segment's members for the CSV export, in keyset batches: ids, and each row's attribute columns
already rendered as CSV by PostgreSQL (UTF-8 bytes, written as they come)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

import asyncpg

from .filters import compile_filters
from .members import OpenedFilter

# a cell that starts like a formula is run by spreadsheets (CSV injection): it gets a leading `'`,
# unless it is a plain number such as -5 or +1.5e3, which spreadsheets read as the number it is
_FORMULA_START = r"^[=+@\t\r-]"
_PLAIN_NUMBER = r"^[+-]?[0-9]+([.][0-9]+)?([eE][+-]?[0-9]+)?$"


def csv_field_sql(expr: str) -> str:
    """SQL rendering a text value as one CSV field (RFC 4180): quoted when it holds `"`, `,`, CR or LF,
    and neutralised with a leading `'` when it would start a spreadsheet formula."""
    guard = f"CASE WHEN {expr} ~ '{_FORMULA_START}' AND {expr} !~ '{_PLAIN_NUMBER}' THEN '''' ELSE '' END"
    return (f"CASE WHEN {expr} IS NULL THEN '' WHEN {expr} ~ '[\",\\r\\n]'"
            f" THEN '\"' || {guard} || replace({expr}, '\"', '\"\"') || '\"' ELSE {guard} || {expr} END")


def csv_field(text: str) -> str:
    """The same rendering in Python, for the header row. Its cells are attribute keys, which
    validation keeps to `[A-Za-z_][A-Za-z0-9_-]*`, so today this returns them unchanged: it is kept
    so that the header stays safe if keys are ever allowed more."""
    if re.match(_FORMULA_START, text) and not re.match(_PLAIN_NUMBER, text):
        text = "'" + text
    if any(c in text for c in '",\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def batch_sql(condition: str, key_params: Sequence[int]) -> str:
    """One batch after the (created_at, id) cursor, as one row: the ids in page order, each contact's
    attribute columns as CSV bytes, and the oldest created_at (the last row's: it is the cursor's).

    One row of arrays, not a row per contact: asyncpg decodes an array element at a fraction of the
    cost of a record, and this decoding is the export's largest cost after signing.
    """
    tail = " || ".join(f"',' || {csv_field_sql(f'(attributes->>${n}::text)')}" for n in key_params) or "''"
    order = "ORDER BY created_at DESC, id DESC"
    return (f"SELECT array_agg(id {order}), array_agg(convert_to(tail, 'UTF8') {order}), min(created_at)"
            f" FROM (SELECT id, created_at, {tail} AS tail FROM contacts WHERE org_id = $1"
            f" AND (created_at, id) < ($3, $4) AND {condition} {order} LIMIT $2) AS batch")


class Batch(NamedTuple):
    ids: list[int]
    tails: list[bytes]
    cursor: tuple[datetime, int]  # where the next batch starts


class MemberBatches:
    """The members of one segment (that have or have not opened, with `opened`), newest first, `size` at
    a time: the statement is built once, each batch is a seek past the cursor on the page index."""

    def __init__(self, conn: asyncpg.Connection, org_id: uuid.UUID, filters: dict[str, Any], keys: list[str],
                 opened: OpenedFilter | None, size: int) -> None:
        self._conn, self._org_id, self._size = conn, org_id, size
        # $1 org, $2 limit, $3/$4 cursor, then the attribute keys, the filter's parameters, the survey (opened=)
        condition, params = compile_filters(filters, 5 + len(keys))
        if opened is not None:
            condition += opened.sql(5 + len(keys) + len(params))
            params.append(opened.survey_id)
        self._sql = batch_sql(condition, range(5, 5 + len(keys)))
        self._tail_params = [*keys, *params]

    async def read(self, cursor: tuple[datetime, int]) -> Batch:
        """The batch just past `cursor` (no ids: none is left)."""
        row = await self._conn.fetchrow(self._sql, self._org_id, self._size, *cursor, *self._tail_params)
        assert row is not None  # aggregates without GROUP BY: one row, even for no contact
        ids, tails, oldest = row
        if not ids:
            return Batch([], [], cursor)
        return Batch(ids, tails, (oldest, ids[-1]))
