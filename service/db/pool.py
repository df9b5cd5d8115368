"""The PostgreSQL pool and the schema."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import asyncpg
import orjson


def schema_sql() -> str:
    """schema.sql beside the package (repository layout), else the packaged copy."""
    path = Path(__file__).resolve().parents[2] / "schema.sql"
    if path.exists():
        return path.read_text()
    return resources.files("service").joinpath("schema.sql").read_text()


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads,
                              schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release a connection without asyncpg's reset query (one more round trip per request).

    The service keeps no session state: no SET, LISTEN, session advisory lock or cursor outside a
    transaction. asyncpg still rolls back a transaction left open before this is called.
    """


async def create_pool(dsn: str, max_size: int = 10) -> asyncpg.Pool:
    """A pool whose connections speak jsonb as Python values."""
    return await asyncpg.create_pool(
        dsn, min_size=1, max_size=max_size, init=_init_connection, command_timeout=30, reset=_keep_session,
        # fail fast when the server is gone instead of hanging requests
        timeout=5,
    )


async def apply_schema(conn: asyncpg.Connection) -> None:
    """Apply schema.sql; every statement is idempotent, and a lock keeps concurrent starters apart."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(7243001)")
        await conn.execute(schema_sql())
