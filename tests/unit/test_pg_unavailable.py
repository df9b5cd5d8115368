"""Which asyncpg errors mean "PostgreSQL unavailable" (503) and which are bugs (500)."""

from __future__ import annotations

import asyncpg
import pytest

from service.web.middlewares import pg_unavailable


@pytest.mark.parametrize("exc", [
    ConnectionRefusedError(111, "refused"),
    TimeoutError(),
    asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
    asyncpg.InternalClientError("unexpected message"),
    asyncpg.InterfaceError("connection is closed"),
    asyncpg.InterfaceError("pool is closing"),
    asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
    asyncpg.exceptions.TooManyConnectionsError("remaining connection slots are reserved for roles with the SUPERUSER"),
    asyncpg.exceptions.OutOfMemoryError("out of memory"),
    asyncpg.exceptions.DiskFullError("could not extend file: No space left on device"),
    asyncpg.exceptions.PostgresIOError("could not read block"),
    asyncpg.exceptions.CannotConnectNowError("the database system is in recovery mode"),
])
def test_server_gone(exc):
    assert pg_unavailable(exc)


@pytest.mark.parametrize("exc", [
    asyncpg.DataError("invalid input for query argument $1: 'x' (an integer is required)"),
    asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
    asyncpg.exceptions.UndefinedColumnError("column does not exist"),
    ValueError("a bug"),
])
def test_bugs_are_not_outages(exc):
    assert not pg_unavailable(exc)
