"""The CLI on embedded servers: admin commands attach to a running server's data, and stop cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from service.core.auth import key_id_of
from service.embedded.postgres import EmbeddedPostgres
from service.embedded.process import free_port
from service.embedded.redis import EmbeddedRedis


def cli(data_dir, *args, check=True):
    env = {**os.environ, "DATA_DIR": str(data_dir), "LOG_LEVEL": "WARNING"}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    result = subprocess.run([sys.executable, "-m", "service", *args], env=env, capture_output=True, text=True,
                            timeout=120)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def http(method, url, body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def answered_within(ask, expected, timeout=15.0):
    """Ask until the answer is `expected` (a server's key cache expiring), failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while (answer := ask()) != expected:
        assert time.monotonic() < deadline, f"still {answer!r} after {timeout} s"
        time.sleep(0.2)  # under the old policy's 10/second, which these asks spend


def policy_header(port, key):
    """The RateLimit-Policy a request with `key` is answered with."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v2/management/metadata-fields",
                                 headers={"x-api-key": key})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
        return resp.headers["RateLimit-Policy"]


@pytest.mark.slow
def test_admin_commands_work_while_the_server_runs(tmp_path):
    data_dir = tmp_path / "data"
    port = free_port()
    # keys cached for 1 s: the revocation and the policy change below reach the server that soon
    env = {**os.environ, "DATA_DIR": str(data_dir), "LOG_LEVEL": "WARNING", "KEY_CACHE_SECONDS": "1"}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    server = subprocess.Popen([sys.executable, "-m", "service", "serve", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert server.stderr is not None
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if http("GET", f"http://127.0.0.1:{port}/ready")[0] == 200:
                    break
            except OSError:
                pass
            if server.poll() is not None:
                pytest.fail(f"server exited {server.returncode}: {server.stderr.read().decode()[-2000:]}")
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)

        org = json.loads(cli(data_dir, "admin", "create-org", "--name", "Acme", "--link-quota", "7",
                             "--rate-limit", "10/second").stdout)
        assert set(org) == {"id", "name", "linkQuota", "rateLimit"}
        assert (org["name"], org["linkQuota"], org["rateLimit"]) == ("Acme", 7, "10/second")
        key = json.loads(cli(data_dir, "admin", "create-key", "--org", org["id"], "--scopes", "manage").stdout)
        assert set(key) == {"id", "key", "scopes"} and key["scopes"] == ["manage"]
        assert key["key"].startswith("sls_") and len(key["key"]) == 75 and str(key_id_of(key["key"])) == key["id"]

        status, body = http("POST", f"http://127.0.0.1:{port}/api/v2/management/surveys", {"name": "S"},
                            {"x-api-key": key["key"]})
        assert status == 201 and body["data"]["linkQuota"] is None

        revoked = cli(data_dir, "admin", "revoke-key", key["id"])
        assert json.loads(revoked.stdout) == {"id": key["id"], "revoked": True}
        again = cli(data_dir, "admin", "revoke-key", key["id"], check=False)
        assert again.returncode == 1 and "no active key" in json.loads(again.stderr)["error"]
        bad = cli(data_dir, "admin", "create-org", "--name", "B", "--rate-limit", "5/fortnight", check=False)
        assert bad.returncode == 1 and "bad rate-limit window" in json.loads(bad.stderr)["error"]
        plain = json.loads(cli(data_dir, "admin", "create-org", "--name", "Plain").stdout)
        assert {k: plain[k] for k in ("name", "linkQuota", "rateLimit")} == {
            "name": "Plain", "linkQuota": 50, "rateLimit": "5/second;50/minute"}
        # the policy is changeable: a live organisation gets the new one once its keys' cache entries expire
        second = json.loads(cli(data_dir, "admin", "create-key", "--org", org["id"], "--scopes", "manage").stdout)
        assert policy_header(port, second["key"]) == '"second";q=10;w=1'
        changed = json.loads(
            cli(data_dir, "admin", "update-org", "--org", org["id"], "--rate-limit", "1/minute").stdout)
        assert changed["rateLimit"] == "1/minute"
        # once the server's key cache has let go of each key (asked again, not slept past)
        answered_within(lambda: http("GET", f"http://127.0.0.1:{port}/api/v2/management/metadata-fields",
                                     headers={"x-api-key": key["key"]})[0], 401)
        answered_within(lambda: policy_header(port, second["key"]), '"minute";q=1;w=60')
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        finally:
            server.kill() if server.poll() is None else None
            server.stderr.close()
    assert server.returncode == 0
    # the server was the last user of the embedded servers: both are stopped, and the data stays
    assert EmbeddedPostgres(data_dir.resolve()).running_port() is None
    assert EmbeddedRedis(data_dir.resolve()).running_port() is None
    assert (data_dir / "postgres" / "PG_VERSION").exists()
    # a restart sees the same data
    listed = cli(data_dir, "admin", "update-org", "--org", org["id"], "--link-quota", "9")
    assert json.loads(listed.stdout)["linkQuota"] == 9


@pytest.mark.slow
def test_create_key_scopes_default_to_all_and_unknown_ones_are_refused(tmp_path):
    """Without a running server: each command starts the embedded servers for its own duration."""
    data_dir = tmp_path / "data"
    org = json.loads(cli(data_dir, "admin", "create-org", "--name", "Scoped").stdout)
    every = json.loads(cli(data_dir, "admin", "create-key", "--org", org["id"]).stdout)
    assert every["scopes"] == ["links:write", "links:read", "manage"]
    expected = {"error": "--scopes must be a comma-separated subset of links:write,links:read,manage"}
    for scopes in ("links:write,admin", "Manage", " , "):
        refused = cli(data_dir, "admin", "create-key", "--org", org["id"], "--scopes", scopes, check=False)
        assert refused.returncode == 1, (scopes, refused.stdout)
        assert json.loads(refused.stderr) == expected, scopes
        assert refused.stdout == "", scopes  # no key (and no secret) printed
    # and each command stopped them again when it was done
    assert EmbeddedPostgres(data_dir.resolve()).running_port() is None
    assert EmbeddedRedis(data_dir.resolve()).running_port() is None
