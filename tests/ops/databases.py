"""Throwaway databases on the session's PostgreSQL, and what a schema looks like in the catalog."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg

from service.db.migrate import MIGRATIONS_TABLE
from tests.conftest import TEST_KEYS

REPO = Path(__file__).resolve().parents[2]
PREVIOUS_RELEASE_SCHEMA = REPO / "tests" / "fixtures" / "schema_2a02fae.sql"
SCRUBBED = ("DATABASE_URL", "REDIS_URL", "SIGNING_KEYS", "DATA_DIR", "PROMETHEUS_MULTIPROC_DIR")

# everything a migration can get wrong: columns (types, defaults, identity), constraints, indexes
_CATALOG = {
    "columns": """
        SELECT table_name, column_name, ordinal_position, data_type, is_nullable, column_default,
               is_identity, identity_generation, identity_start, identity_increment
        FROM information_schema.columns WHERE table_schema = 'public' AND table_name <> $1 ORDER BY 1, 3""",
    "constraints": """
        SELECT conrelid::regclass::text AS table_name, conname, pg_get_constraintdef(oid) AS definition
        FROM pg_constraint WHERE connamespace = 'public'::regnamespace AND conrelid::regclass::text <> $1
        ORDER BY 1, 2""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes
        WHERE schemaname = 'public' AND tablename <> $1 ORDER BY 1, 2""",
}


@contextlib.asynccontextmanager
async def fresh_database(admin_url: str) -> AsyncIterator[str]:
    """An empty database of its own (dropped at the end); yields its URL."""
    name = f"m_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


async def catalog(url: str) -> dict[str, list[tuple]]:
    """The schema of a database as rows of the catalog (the migrations table left out)."""
    conn = await asyncpg.connect(url)
    try:
        return {part: [tuple(r) for r in await conn.fetch(sql, MIGRATIONS_TABLE)] for part, sql in _CATALOG.items()}
    finally:
        await conn.close()


async def run_sql_file(url: str, path: Path) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(path.read_text())
    finally:
        await conn.close()


def tables_of(sql: str) -> list[str]:
    return re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", sql)


def columns_of(sql: str) -> dict[str, list[str]]:
    """Each table's columns, in order, as a CREATE TABLE statement of `sql` lists them."""
    tables = re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+) \((.*?)\n\);", sql, re.S)
    # a column's line is indented by four spaces; constraints are upper case, continuations indented more
    return {name: [m for m in re.findall(r"^    ([a-z_]+) ", body, re.M)] for name, body in tables}


async def cli(*args: str, database_url: str, redis_url: str, timeout: float = 60) -> tuple[int, str, str]:
    """`python -m service ARGS` against these servers: (exit code, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED} | {
        "DATABASE_URL": database_url, "REDIS_URL": redis_url,
        "SIGNING_KEYS": ",".join(f"{k.kid}:{k.secret.decode()}" for k in TEST_KEYS),
    }
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "service", *args, cwd=REPO, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
