"""Settings: read once from the environment, validated, secrets never printed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.settings import SettingsError, load_settings, parse_signing_keys

SECRET = "s" * 40


def test_defaults():
    settings = load_settings({})
    assert settings.embedded and settings.data_dir == Path(".data")
    assert settings.public_base_url == "http://127.0.0.1:8080"
    assert settings.rate_limit_failure_mode == "open" and settings.key_cache_seconds <= 5


def test_signing_keys_first_signs_all_verify_and_stay_hidden():
    keys = parse_signing_keys(f"new:{SECRET}, old:{'o' * 32}")
    assert [k.kid for k in keys] == ["new", "old"]
    assert SECRET not in repr(keys) and SECRET not in repr(load_settings({"SIGNING_KEYS": f"k:{SECRET}"}))


@pytest.mark.parametrize("raw", ["k", "k:", ":secret", "k:short", f"k:{SECRET},k:{SECRET}"])
def test_bad_signing_keys(raw):
    with pytest.raises(SettingsError):
        parse_signing_keys(raw)


@pytest.mark.parametrize("env", [
    {"RATE_LIMIT_FAILURE_MODE": "sometimes"},
    {"LOG_FORMAT": "xml"},
    {"PUBLIC_BASE_URL": "links.example.com"},
    {"DATABASE_URL": "postgresql://db/x"},  # an external database needs SIGNING_KEYS
    {"LOG_LEVEL": "verbose"},
    {"MAX_BODY_BYTES": "-1"},
    {"MAX_BODY_BYTES": "0"},
    {"PG_POOL_MAX": "0"},
    {"PG_POOL_MAX": "-3"},
    {"PG_POOL_MAX": "ten"},
    {"KEY_CACHE_SECONDS": "60.1"},
    {"KEY_CACHE_SECONDS": "nan"},
    {"KEY_CACHE_SECONDS": "inf"},
    {"KEY_CACHE_SECONDS": "-1"},
    {"KEY_CACHE_SECONDS": "soon"},
    {"TRUSTED_PROXIES": "10.0.0.1, proxy.internal"},
    {"TRUSTED_PROXIES": "10.0.0.0/33"},
    {"UNAUTH_RATE_LIMIT": "20/fortnight"},
    {"UNAUTH_RATE_LIMIT": "0/second"},
    {"HEADER_TIMEOUT_SECONDS": "0"},
    {"HEADER_TIMEOUT_SECONDS": "nan"},
    {"BODY_TIMEOUT_SECONDS": "-1"},
    {"BODY_TIMEOUT_SECONDS": "3601"},
    {"KEEPALIVE_TIMEOUT_SECONDS": "inf"},
    {"KEEPALIVE_TIMEOUT_SECONDS": "long"},
    {"CACHE_REDIS_URL": "cache:6379"},
    {"CACHE_REDIS_URL": "http://cache:6379/0"},
    {"CACHE_REDIS_URL": "redis://"},
    {"PG_POOL_TIMEOUT": "0"},
    {"PG_POOL_TIMEOUT": "60.5"},
    {"PG_POOL_TIMEOUT": "nan"},
    {"STREAM_STALL_SECONDS": "-1"},
    {"STREAM_STALL_SECONDS": "inf"},
    {"STREAM_STALL_SECONDS": "soon"},
    {"EXPORT_CONCURRENCY": "0"},
    {"EXPORT_CONCURRENCY": "10"},  # all of the default pool of 10
    {"EXPORT_CONCURRENCY": "two"},
    {"OPEN_COUNTING": "yes"},
    {"OPEN_COUNTING": "0"},
])
def test_bad_settings(env):
    with pytest.raises(SettingsError, match=next(iter(env))):
        load_settings(env)


@pytest.mark.parametrize(("raw", "counting"), [(None, True), ("", True), ("on", True), (" OFF ", False)])
def test_open_counting_is_on_unless_turned_off(raw, counting):
    assert load_settings({} if raw is None else {"OPEN_COUNTING": raw}).open_counting is counting


@pytest.mark.parametrize("raw", ["debug", "INFO", "Warning", " error "])
def test_log_level_any_case(raw):
    assert load_settings({"LOG_LEVEL": raw}).log_level == raw.strip().upper()


def test_numbers_within_bounds_are_parsed():
    settings = load_settings({"PG_POOL_MAX": "3", "MAX_BODY_BYTES": "1"})
    assert settings.pg_pool_max == 3 and settings.max_body_bytes == 1
    assert load_settings({"KEY_CACHE_SECONDS": "0"}).key_cache_seconds == 0
    assert load_settings({"KEY_CACHE_SECONDS": "60"}).key_cache_seconds == 60


def test_connection_and_unauthenticated_settings():
    defaults = load_settings({})
    assert (defaults.header_timeout_seconds, defaults.body_timeout_seconds, defaults.keepalive_timeout_seconds) \
        == (10, 60, 75)
    assert defaults.unauth_rate_limit == "20/second;600/minute" and defaults.trusted_proxies == frozenset()
    settings = load_settings({"HEADER_TIMEOUT_SECONDS": "0.5", "BODY_TIMEOUT_SECONDS": "3600",
                              "KEEPALIVE_TIMEOUT_SECONDS": "5", "UNAUTH_RATE_LIMIT": " 100/minute ; 5/second ",
                              "TRUSTED_PROXIES": "10.0.0.7, 10.1.0.0/16,::1"})
    assert (settings.header_timeout_seconds, settings.body_timeout_seconds, settings.keepalive_timeout_seconds) \
        == (0.5, 3600, 5)
    assert settings.unauth_rate_limit == "5/second;100/minute"
    assert settings.trusted_proxies == frozenset({"10.0.0.7/32", "10.1.0.0/16", "::1/128"})
    assert load_settings({"UNAUTH_RATE_LIMIT": "off"}).unauth_rate_limit == "off"


def test_cache_redis_url_defaults_to_redis_url_and_takes_every_redis_form():
    assert load_settings({}).cache_redis_url is None
    assert load_settings({"CACHE_REDIS_URL": " "}).cache_redis_url is None
    for url in ("redis://cache:6379/1", "rediss://u:p@cache:6380/0", "unix:///run/redis.sock",
                "redis+cluster://cache:7000", "REDISS+CLUSTER://cache:7000"):
        settings = load_settings({"CACHE_REDIS_URL": url})
        # the caches' server alone does not make Redis external: the buckets' Redis is still embedded
        assert settings.cache_redis_url == url and settings.embedded
        assert settings.with_servers("postgresql://db/x", "redis://r:6379/0", ()).cache_redis_url == url


def test_log_level_refused_at_start_not_in_a_traceback():
    env = {**os.environ, "LOG_LEVEL": "verbose"}
    result = subprocess.run([sys.executable, "-m", "service", "serve"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "LOG_LEVEL must be one of" in result.stderr and "Traceback" not in result.stderr


def test_server_refuses_to_start_without_keys_for_an_external_database():
    env = {**os.environ, "DATABASE_URL": "postgresql://user:pw@127.0.0.1:1/db", "REDIS_URL": "redis://127.0.0.1:1"}
    env.pop("SIGNING_KEYS", None)
    result = subprocess.run([sys.executable, "-m", "service", "serve"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "SIGNING_KEYS is required" in result.stderr
    assert "pw" not in result.stderr


def test_bounds_of_waits_and_exports():
    default = load_settings({})
    assert (default.pg_pool_timeout, default.export_concurrency, default.stream_stall_seconds) == (5.0, 2, 30.0)
    given = load_settings({"PG_POOL_TIMEOUT": "0.25", "STREAM_STALL_SECONDS": "600", "EXPORT_CONCURRENCY": "9"})
    assert (given.pg_pool_timeout, given.export_concurrency, given.stream_stall_seconds) == (0.25, 9, 600.0)
    # the default share of exports always leaves a connection to other requests, when the pool has two
    assert [load_settings({"PG_POOL_MAX": str(n)}).export_concurrency for n in (1, 2, 3, 4)] == [1, 1, 2, 2]
    assert load_settings({"PG_POOL_MAX": "1", "EXPORT_CONCURRENCY": "1"}).export_concurrency == 1
