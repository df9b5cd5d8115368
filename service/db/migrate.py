"""Numbered schema migrations: plain SQL files in service/db/migrations, applied once each, in order.

Plain SQL and this small runner rather than a tool such as yoyo-migrations: the service already
speaks asyncpg, the rules it needs fit here (one transaction per migration, PostgreSQL's advisory
lock for concurrent starters, a checksum per file, refusing a database newer than the code), and a
runner would bring its own driver (psycopg), connection handling and state table.

Files are `NNNN_name.sql`, numbered 1, 2, 3... without gaps. Each runs in its own transaction
(so a failing one leaves nothing of itself behind, and CREATE INDEX CONCURRENTLY cannot be used),
and is recorded in `schema_migrations` with the SHA-256 of its text in the same transaction.
Every step holds the transaction-scoped advisory lock 7243001, the key the release before
migrations took to apply schema.sql, so old and new instances starting together keep apart too.

The release before migrations (commit 2a02fae) left its tables and no `schema_migrations`: 0001 is
its schema with every statement IF NOT EXISTS, so on such a database 0001 changes nothing and is
recorded, and the data stays.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import asyncpg

MIGRATIONS_TABLE = "schema_migrations"
LOCK_KEY = 7243001
# waiting for another instance's migrations: long enough for a big index build, not forever
LOCK_WAIT_SECONDS = 300

_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")
_CREATE_TABLE = f"""
CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(Exception):
    """The schema cannot be brought to (or is not at) what the code needs; the message is one line."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str
    checksum: str

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


@dataclass(frozen=True)
class Report:
    applied: tuple[Migration, ...]
    # the newest migration the database now has
    current: Migration


def checksum(sql: str) -> str:
    # line endings normalised: a checkout with CRLF is the same migration
    return hashlib.sha256(sql.replace("\r\n", "\n").encode()).hexdigest()


def load_migrations(directory: Traversable | Path | None = None) -> tuple[Migration, ...]:
    """The migrations of `directory` (default: the packaged service/db/migrations), in order."""
    folder = directory if directory is not None else resources.files("service.db").joinpath("migrations")
    found: list[Migration] = []
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE.fullmatch(entry.name)
        if match is None:
            raise MigrationError(f"migration file {entry.name} is not named NNNN_name.sql")
        sql = entry.read_text(encoding="utf-8")
        found.append(Migration(int(match[1]), match[2], sql, checksum(sql)))
    found.sort(key=lambda m: (m.version, m.name))
    for before, after in itertools.pairwise(found):
        if before.version == after.version:
            raise MigrationError(f"two migrations are numbered {before.version:04d}: {before.label}, {after.label}")
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise MigrationError(f"migrations must be numbered 1, 2, 3... without gaps: "
                                 f"{migration.label} where {expected:04d} was expected")
    if not found:
        raise MigrationError("no migrations found")
    return tuple(found)


async def recorded(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """The rows of schema_migrations by version; none when the table does not exist yet."""
    if await conn.fetchval("SELECT to_regclass($1)", MIGRATIONS_TABLE) is None:
        return []
    return await conn.fetch(f"SELECT version, name, checksum FROM {MIGRATIONS_TABLE} ORDER BY version")


def _verify(rows: list[asyncpg.Record], known: tuple[Migration, ...]) -> None:
    """Refuse a database that recorded a migration this code does not know, or one whose file changed."""
    for row in rows:
        if row["version"] > len(known) or row["version"] < 1:
            newest = rows[-1]
            raise MigrationError(f"the database is at migration {newest['version']:04d}_{newest['name']}, newer "
                                 f"than this code (which knows up to {known[-1].label}): run a newer release")
        migration = known[row["version"] - 1]
        if row["checksum"] != migration.checksum:
            raise MigrationError(f"migration {migration.label} was changed after it was applied (its checksum "
                                 f"differs from the recorded one): restore it and make the change a new migration")


async def migrate(conn: asyncpg.Connection, migrations: tuple[Migration, ...] | None = None) -> Report:
    """Apply the migrations the database lacks, each once, in order, each in its own transaction."""
    known = migrations if migrations is not None else load_migrations()
    applied: list[Migration] = []
    while True:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_WAIT_SECONDS}s'")
            try:
                await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
            except asyncpg.LockNotAvailableError:
                raise MigrationError(f"another instance held the migration lock for over {LOCK_WAIT_SECONDS} s; "
                                     "retry when its migrations are done") from None
            await conn.execute("SET LOCAL lock_timeout TO DEFAULT")
            await conn.execute(_CREATE_TABLE)
            # read under the lock: another instance may have applied some meanwhile
            rows = await recorded(conn)
            _verify(rows, known)
            migration = _first_missing(rows, known)
            if migration is None:
                return Report(tuple(applied), known[-1])
            try:
                await conn.execute(migration.sql)
            except asyncpg.PostgresError as exc:
                raise MigrationError(f"migration {migration.label} failed and was rolled back: "
                                     f"{type(exc).__name__}: {_one_line(str(exc))}") from None
            await conn.execute(f"INSERT INTO {MIGRATIONS_TABLE} (version, name, checksum) VALUES ($1, $2, $3)",
                               migration.version, migration.name, migration.checksum)
        applied.append(migration)


async def check_current(conn: asyncpg.Connection, migrations: tuple[Migration, ...] | None = None) -> Migration:
    """The database's newest migration, when it has exactly the code's migrations; else MigrationError."""
    known = migrations if migrations is not None else load_migrations()
    rows = await recorded(conn)
    _verify(rows, known)
    missing = _first_missing(rows, known)
    if missing is not None:
        at = f"lacks migration {missing.label}" if rows else "has no recorded migrations"
        raise MigrationError(f"the database {at}, this code needs {known[-1].label}: run `python -m service migrate`")
    return known[-1]


def _first_missing(rows: list[asyncpg.Record], known: tuple[Migration, ...]) -> Migration | None:
    done = {row["version"] for row in rows}
    return next((m for m in known if m.version not in done), None)


async def migrate_url(database_url: str, migrations: tuple[Migration, ...] | None = None) -> Report:
    """migrate() on a connection of its own; a PostgreSQL that does not answer is a MigrationError."""
    try:
        conn = await asyncpg.connect(database_url, timeout=10)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise MigrationError(f"cannot connect to PostgreSQL to migrate: {type(exc).__name__}: "
                             f"{_one_line(str(exc))}") from None
    try:
        return await migrate(conn, migrations)
    finally:
        await conn.close()


def _one_line(text: str) -> str:
    return " ".join(text.split())
