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
])
def test_bad_settings(env):
    with pytest.raises(SettingsError):
        load_settings(env)


def test_server_refuses_to_start_without_keys_for_an_external_database():
    env = {**os.environ, "DATABASE_URL": "postgresql://user:pw@127.0.0.1:1/db", "REDIS_URL": "redis://127.0.0.1:1"}
    env.pop("SIGNING_KEYS", None)
    result = subprocess.run([sys.executable, "-m", "service", "serve"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "SIGNING_KEYS is required" in result.stderr
    assert "pw" not in result.stderr
