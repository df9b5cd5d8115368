"""`servers()` embeds only what has no URL: an external PostgreSQL with no REDIS_URL starts Redis alone,
and the other way round; leaving stops what was started."""

from __future__ import annotations

import asyncpg
import redis

from service import runtime
from service.embedded.postgres import EmbeddedPostgres
from service.embedded.redis import EmbeddedRedis
from service.settings import load_settings

KEYS = "k1:" + "s" * 40


def test_external_postgres_embeds_redis_alone(tmp_path, servers):
    data_dir = tmp_path / "data"
    settings = load_settings({"DATABASE_URL": servers.database_url, "DATA_DIR": str(data_dir),
                              "SIGNING_KEYS": KEYS})
    with runtime.servers(settings) as ready:
        assert ready.database_url == servers.database_url
        assert ready.redis_url is not None and ready.redis_url != servers.redis_url
        client = redis.Redis.from_url(ready.redis_url)
        assert client.ping() is True
        client.close()
        embedded_redis = EmbeddedRedis(data_dir.resolve())
        assert embedded_redis.running_port() == int(ready.redis_url.rsplit(":", 1)[1].split("/")[0])
        # no cluster initialised, no PostgreSQL started under DATA_DIR, and no signing key written
        # (an external DATABASE_URL comes with SIGNING_KEYS)
        assert not (data_dir / "postgres").exists()
        assert not (data_dir / "signing_keys").exists()
        assert ready.signing_keys == settings.signing_keys
    assert embedded_redis.running_port() is None


async def test_external_redis_embeds_postgres_alone(tmp_path, servers):
    data_dir = tmp_path / "data"
    settings = load_settings({"REDIS_URL": servers.redis_url, "DATA_DIR": str(data_dir)})
    with runtime.servers(settings) as ready:
        assert ready.redis_url == servers.redis_url
        assert ready.database_url is not None and ready.database_url != servers.database_url
        conn = await asyncpg.connect(ready.database_url)
        assert await conn.fetchval("SELECT 1") == 1
        await conn.close()
        embedded_postgres = EmbeddedPostgres(data_dir.resolve())
        assert embedded_postgres.running_port() == int(ready.database_url.rsplit(":", 1)[1].split("/")[0])
        assert not (data_dir / "redis").exists()
        # the signing key still comes from DATA_DIR, as in fully embedded mode
        assert ready.signing_keys and (data_dir / "signing_keys").exists()
    assert embedded_postgres.running_port() is None
