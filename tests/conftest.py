"""Shared fixtures: real embedded PostgreSQL and Redis for the whole session, a fresh database per
test module, Redis flushed before every test, and helpers that create tenants (org + key)."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import redis

from service.app import create_app
from service.core.auth import SCOPES, hash_secret, issue_key
from service.db import orgs
from service.db.migrate import migrate
from service.embedded import EmbeddedServers, EmbeddedUrls
from service.settings import Settings, SigningKey

TEST_KEYS = (SigningKey("t1", b"test-signing-secret-number-one-0123456789"),)


@pytest.fixture(scope="session")
def servers() -> Iterator[EmbeddedUrls]:
    """One real PostgreSQL and one real Redis for the whole run, in a temporary DATA_DIR."""
    root = Path(tempfile.mkdtemp(prefix="sls-test-"))
    embedded = EmbeddedServers(root)
    urls = embedded.open()
    assert urls.database_url and urls.redis_url
    yield urls
    embedded.destroy()


@pytest.fixture(scope="module")
def database_url(servers: EmbeddedUrls) -> Iterator[str]:
    """A fresh database for this test module, migrated."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin_url = servers.database_url
    assert admin_url is not None  # the session's servers include PostgreSQL
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"

    async def create() -> None:
        conn = await asyncpg.connect(admin_url)
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()
        conn = await asyncpg.connect(url)
        await migrate(conn)
        await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(admin_url)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()

    asyncio.run(create())
    yield url
    asyncio.run(drop())


@pytest.fixture
def redis_url(servers: EmbeddedUrls) -> str:
    """The session's Redis, flushed before the test."""
    assert servers.redis_url is not None  # the session's servers include Redis
    client = redis.Redis.from_url(servers.redis_url)
    client.flushall()
    client.script_flush()
    client.close()
    return servers.redis_url


@pytest.fixture
def settings(database_url: str, redis_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url, redis_url=redis_url, data_dir=tmp_path,
        public_base_url="http://links.test", signing_keys=TEST_KEYS, key_cache_seconds=0.5,
        # every test client is 127.0.0.1: the tests of that limit set it themselves
        unauth_rate_limit="off",
    )


@pytest.fixture
async def client(aiohttp_client, settings: Settings):
    """An aiohttp test client on the whole app, against the real servers."""
    return await aiohttp_client(create_app(settings))


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the module's database, to check side effects."""
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@dataclass(frozen=True)
class Tenant:
    org_id: uuid.UUID
    key: str
    key_id: uuid.UUID

    @property
    def org(self) -> str:
        return str(self.org_id)

    @property
    def headers(self) -> dict[str, str]:
        return {"x-api-key": self.key}


TenantFactory = Callable[..., Awaitable[Tenant]]


@pytest.fixture
def make_tenant(db: asyncpg.Connection) -> TenantFactory:
    """Create an organisation and a key: `await make_tenant(link_quota=10, rate_limit="off")`."""

    async def make(link_quota: int = 50, rate_limit: str = "off", scopes: tuple[str, ...] = SCOPES,
                   name: str = "org") -> Tenant:
        org = await orgs.insert_org(db, name, link_quota, rate_limit)
        key_id, secret = issue_key()
        await orgs.insert_key(db, org.id, "test", hash_secret(secret), list(scopes), key_id)
        return Tenant(org.id, secret, key_id)

    return make


@pytest.fixture
async def tenant(make_tenant: TenantFactory) -> Tenant:
    return await make_tenant()
