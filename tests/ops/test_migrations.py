"""The migration runner against a real PostgreSQL: once each, in order, under a lock, checksummed; the
CLI's `migrate`; a database newer than the code, or with an edited migration, refused; schema.sql."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web

from service.app import create_app
from service.db.migrate import LOCK_KEY, MigrationError, check_current, load_migrations, migrate
from service.embedded.process import free_port
from service.settings import Settings
from tests.ops.databases import PREVIOUS_RELEASE_SCHEMA, REPO, catalog, cli, fresh_database, run_sql_file

PACKAGED = REPO / "service" / "db" / "migrations"
SLOW = """SELECT pg_sleep(0.2);
CREATE TABLE migration_log (version integer NOT NULL);
INSERT INTO migration_log VALUES (2);
"""
KNOWN = [m.label for m in load_migrations()]  # the packaged migrations, in order
FUTURE = len(KNOWN) + 1  # a version only a newer release knows
NEWER = (f"migration error: the database is at migration {FUTURE:04d}_from_the_future, newer than this code "
         f"(which knows up to {KNOWN[-1]}): run a newer release")
EDITED = ("migration error: migration 0001_initial was changed after it was applied (its checksum differs from "
          "the recorded one): restore it and make the change a new migration")


def directory(tmp_path: Path, **extra: str) -> Path:
    """A migrations directory: the packaged 0001, then `extra` (file stem: SQL) in name order."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    shutil.copy2(PACKAGED / "0001_initial.sql", folder)
    for stem, sql in extra.items():
        (folder / f"{stem}.sql").write_text(sql)
    return folder


async def start_app(settings: Settings) -> None:
    """Start the app as a worker does (its cleanup contexts), then stop it."""
    runner = web.AppRunner(create_app(settings))
    try:
        await runner.setup()
    finally:
        await runner.cleanup()


async def recorded_rows(url: str) -> list[tuple]:
    conn = await asyncpg.connect(url)
    try:
        return [tuple(r) for r in await conn.fetch(
            "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version")]
    finally:
        await conn.close()


def test_the_packaged_migrations_and_their_first_is_the_previous_release_schema():
    first = load_migrations()[0]
    assert (first.version, first.name, first.label) == (1, "initial", "0001_initial")
    assert first.checksum == hashlib.sha256((PACKAGED / "0001_initial.sql").read_bytes()).hexdigest()
    # statement for statement: only the header comment (4 lines instead of 1) differs
    previous = PREVIOUS_RELEASE_SCHEMA.read_text().splitlines()
    assert previous[0].startswith("-- ") and first.sql.splitlines()[:4] != previous[:4]
    assert first.sql.splitlines()[4:] == previous[1:]


@pytest.mark.parametrize(("files", "message"), [
    ({"2_next.sql": "SELECT 1"}, "migration file 2_next.sql is not named NNNN_name.sql"),
    ({"0003_gap.sql": "SELECT 1"}, "migrations must be numbered 1, 2, 3... without gaps: "
                                   "0003_gap where 0002 was expected"),
    ({"0001_again.sql": "SELECT 1"}, "two migrations are numbered 0001: 0001_again, 0001_initial"),
])
def test_badly_numbered_migrations_are_refused(tmp_path, files, message):
    folder = directory(tmp_path)
    (folder / "README.md").write_text("not a migration: ignored")
    for name, sql in files.items():
        (folder / name).write_text(sql)
    with pytest.raises(MigrationError) as caught:
        load_migrations(folder)
    assert str(caught.value) == message


def test_an_empty_directory_is_refused(tmp_path):
    with pytest.raises(MigrationError, match=r"^no migrations found$"):
        load_migrations(tmp_path)


async def test_migrate_twice_the_second_is_a_no_op(servers):
    async with fresh_database(servers.database_url) as url:
        urls = {"database_url": url, "redis_url": servers.redis_url}
        assert await cli("migrate", **urls) == (0, "".join(f"applied {label}\n" for label in KNOWN), "")
        first = await recorded_rows(url)
        assert [(v, n, c) for v, n, c, _ in first] == [(m.version, m.name, m.checksum) for m in load_migrations()]
        schema = await catalog(url)
        assert await cli("migrate", **urls) == (0, f"up to date at {KNOWN[-1]}\n", "")
        assert await recorded_rows(url) == first  # same rows, applied_at included
        assert await catalog(url) == schema


async def test_five_concurrent_migrations_apply_each_once(servers, tmp_path):
    migrations = load_migrations(directory(tmp_path, **{"0002_slow": SLOW,
                                                        "0003_more": "INSERT INTO migration_log VALUES (3);\n"}))
    async with fresh_database(servers.database_url) as url:
        conns = [await asyncpg.connect(url) for _ in range(5)]
        try:
            reports = await asyncio.gather(*(migrate(conn, migrations) for conn in conns))
            log = [r["version"] for r in await conns[0].fetch("SELECT version FROM migration_log ORDER BY 1")]
        finally:
            for conn in conns:
                await conn.close()
        applied = sorted(m.label for report in reports for m in report.applied)
        assert applied == ["0001_initial", "0002_slow", "0003_more"]  # each by one of the five, once
        assert {report.current.label for report in reports} == {"0003_more"}
        assert log == [2, 3]
        assert [(v, n, c) for v, n, c, _ in await recorded_rows(url)] == [(m.version, m.name, m.checksum)
                                                                           for m in migrations]


async def test_a_failing_migration_leaves_nothing_of_itself(servers, tmp_path):
    folder = directory(tmp_path, **{"0002_slow": SLOW,
                                    "0003_broken": "CREATE TABLE half_done (x integer);\nSELECT 1 / 0;\n"})
    async with fresh_database(servers.database_url) as url:
        conn = await asyncpg.connect(url)
        try:
            with pytest.raises(MigrationError) as caught:
                await migrate(conn, load_migrations(folder))
            assert str(caught.value) == ("migration 0003_broken failed and was rolled back: "
                                         "DivisionByZeroError: division by zero")
            assert await conn.fetchval("SELECT to_regclass('half_done')") is None
            assert [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")] == [1, 2]
            # mended before it was ever recorded: the next run applies it
            (folder / "0003_broken.sql").write_text("CREATE TABLE half_done (x integer);\n")
            report = await migrate(conn, load_migrations(folder))
            assert [m.label for m in report.applied] == ["0003_broken"]
            assert await conn.fetchval("SELECT to_regclass('half_done')::text") == "half_done"
        finally:
            await conn.close()


async def test_an_edited_applied_migration_is_refused(servers, tmp_path):
    folder = directory(tmp_path, **{"0002_slow": SLOW})
    async with fresh_database(servers.database_url) as url:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn, load_migrations(folder))
            before = await recorded_rows(url)
            (folder / "0002_slow.sql").write_text(SLOW + "ALTER TABLE migration_log ADD COLUMN note text;\n")
            edited = load_migrations(folder)
            message = ("migration 0002_slow was changed after it was applied (its checksum differs from the "
                       "recorded one): restore it and make the change a new migration")
            with pytest.raises(MigrationError) as caught:
                await migrate(conn, edited)
            assert str(caught.value) == message
            with pytest.raises(MigrationError) as caught:
                await check_current(conn, edited)
            assert str(caught.value) == message
            assert await recorded_rows(url) == before
            assert await conn.fetchval("SELECT count(*) FROM information_schema.columns "
                                       "WHERE table_name = 'migration_log'") == 1
        finally:
            await conn.close()

        # the packaged 0001 as the CLI sees it: a recorded checksum that differs is the same refusal
        conn = await asyncpg.connect(url)
        await conn.execute("DELETE FROM schema_migrations WHERE version = 2")
        await conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
        await conn.close()
        urls = {"database_url": url, "redis_url": servers.redis_url}
        assert await cli("migrate", **urls) == (1, "", EDITED + "\n")


async def test_a_database_newer_than_the_code_is_refused(servers, settings):
    async with fresh_database(servers.database_url) as url:
        urls = {"database_url": url, "redis_url": servers.redis_url}
        assert (await cli("migrate", **urls))[0] == 0
        conn = await asyncpg.connect(url)
        await conn.execute("INSERT INTO schema_migrations (version, name, checksum)"
                           " VALUES ($1, 'from_the_future', 'x')", FUTURE)
        await conn.close()
        before = await recorded_rows(url)

        assert await cli("migrate", **urls) == (1, "", NEWER + "\n")
        code, out, err = await cli("serve", "--port", str(free_port()), **urls)
        assert (code, out, err.splitlines()) == (1, "", [NEWER])
        code, out, err = await cli("admin", "create-org", "--name", "Acme", **urls)
        assert (code, out, err.splitlines()) == (1, "", [NEWER])
        # a worker started after another instance migrated past it refuses too
        with pytest.raises(MigrationError, match="newer than this code"):
            await start_app(replace(settings, database_url=url))
        assert await recorded_rows(url) == before
        conn = await asyncpg.connect(url)
        assert await conn.fetchval("SELECT count(*) FROM organizations") == 0
        await conn.close()


async def test_the_app_refuses_a_database_that_was_not_migrated(servers, settings):
    async with fresh_database(servers.database_url) as url:
        with pytest.raises(MigrationError) as caught:
            await start_app(replace(settings, database_url=url))
        assert str(caught.value) == (f"the database has no recorded migrations, this code needs {KNOWN[-1]}: "
                                     "run `python -m service migrate`")


async def test_a_database_behind_the_code_is_refused_until_migrated(servers, tmp_path):
    newer_code = load_migrations(directory(tmp_path, **{"0002_slow": SLOW}))
    async with fresh_database(servers.database_url) as url:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn, newer_code[:1])
            with pytest.raises(MigrationError) as caught:
                await check_current(conn, newer_code)
            assert str(caught.value) == ("the database lacks migration 0002_slow, this code needs 0002_slow: "
                                         "run `python -m service migrate`")
            assert [m.label for m in (await migrate(conn, newer_code)).applied] == ["0002_slow"]
            assert (await check_current(conn, newer_code)).label == "0002_slow"
        finally:
            await conn.close()


async def test_waiting_for_another_instance_s_lock_is_bounded(servers, monkeypatch):
    monkeypatch.setattr("service.db.migrate.LOCK_WAIT_SECONDS", 1)
    async with fresh_database(servers.database_url) as url:
        holder, waiter = await asyncpg.connect(url), await asyncpg.connect(url)
        try:
            async with holder.transaction():
                await holder.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
                with pytest.raises(MigrationError) as caught:
                    await migrate(waiter)
            assert str(caught.value) == ("another instance held the migration lock for over 1 s; "
                                         "retry when its migrations are done")
            assert await waiter.fetchval("SELECT to_regclass('schema_migrations')") is None
            assert [m.label for m in (await migrate(waiter)).applied] == KNOWN  # once it is free
        finally:
            await holder.close()
            await waiter.close()


async def test_an_unreachable_postgresql_is_one_line(servers):
    code, out, err = await cli("migrate", database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/x",
                               redis_url=servers.redis_url)
    assert (code, out) == (1, "")
    assert len(err.splitlines()) == 1
    assert err.startswith("migration error: cannot connect to PostgreSQL to migrate: ConnectionRefusedError")


async def test_schema_sql_is_what_the_migrations_make(servers):
    """The root schema.sql (for reading), the migrations, and the previous release's schema agree."""
    async with (fresh_database(servers.database_url) as migrated, fresh_database(servers.database_url) as read,
                fresh_database(servers.database_url) as previous):
        conn = await asyncpg.connect(migrated)
        await migrate(conn)
        await conn.close()
        await run_sql_file(read, REPO / "schema.sql")
        await run_sql_file(previous, PREVIOUS_RELEASE_SCHEMA)
        made = await catalog(migrated)
        assert len(made["columns"]) > 50 and len(made["indexes"]) > 10
        assert await catalog(read) == made, "schema.sql differs from what the migrations make: update it"
        # while 0001 is the only migration; a later one changes the schema away from the previous release's
        if len(load_migrations()) == 1:
            assert await catalog(previous) == made
