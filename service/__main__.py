"""Command line: `serve`, `migrate`, `admin ...`, `demo`, `bench`."""

from __future__ import annotations

import argparse
import json
import sys

from .settings import Settings, SettingsError, load_settings


def _port(raw: str) -> int:
    """A TCP port to listen on; 0 (any free port) is refused: links and workers need the port known up front."""
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a port from 1 to 65535")
    return int(raw)


def _parser() -> argparse.ArgumentParser:
    from .admin import DEFAULT_LINK_QUOTA
    from .core.auth import SCOPES
    from .core.ratepolicy import DEFAULT_POLICY

    parser = argparse.ArgumentParser(prog="python -m service", description="Survey-link service")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_port, default=8080)
    serve.add_argument("--workers", type=int, default=1)

    sub.add_parser("migrate", help="apply the schema migrations the database lacks (serve does it too)")

    admin = sub.add_parser("admin", help="organisations and API keys")
    asub = admin.add_subparsers(dest="action", required=True)
    org = asub.add_parser("create-org", help="create an organisation")
    org.add_argument("--name", required=True)
    org.add_argument("--link-quota", type=int, default=DEFAULT_LINK_QUOTA)
    org.add_argument("--rate-limit", default=DEFAULT_POLICY,
                     help="N/second;M/minute (second, minute, hour) or off")
    upd = asub.add_parser("update-org", help="change an organisation's link quota or rate limit")
    upd.add_argument("--org", required=True)
    upd.add_argument("--link-quota", type=int)
    upd.add_argument("--rate-limit")
    key = asub.add_parser("create-key", help="create an API key (the secret is shown only here)")
    key.add_argument("--org", required=True)
    key.add_argument("--name", default="")
    key.add_argument("--scopes", default=",".join(SCOPES))
    rev = asub.add_parser("revoke-key", help="revoke an API key")
    rev.add_argument("key_id")

    sub.add_parser("demo", help="create demo data and print curl commands")
    sub.add_parser("url", help="print the base URL of the server running on DATA_DIR")
    from .bench import add_arguments

    add_arguments(sub.add_parser("bench", help="benchmark the hot paths with wrk against reference servers"))
    return parser


def _missing(exc: ModuleNotFoundError) -> str:
    """One line for a Python without the service's dependencies (not the virtualenv's)."""
    return (f"python -m service: this Python ({sys.executable}) lacks the service's dependencies"
            f" (no module {exc.name!r}): run scripts/serve once (it installs them into .venv),"
            " then use .venv/bin/python -m service ...")


def main(argv: list[str] | None = None) -> int:
    try:
        parser = _parser()  # imports the dependencies
    except ModuleNotFoundError as exc:
        print(_missing(exc), file=sys.stderr)
        return 1
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    from .db.migrate import MigrationError

    try:
        return _run(settings, args)
    except MigrationError as exc:  # one line, no traceback: the operator's to fix
        print(f"migration error: {exc}", file=sys.stderr)
        return 1


def _run(settings: Settings, args: argparse.Namespace) -> int:
    if args.command == "serve":
        from .listen import ListenError
        from .server import serve

        try:
            serve(settings, args.host, args.port, args.workers)
        except ListenError as exc:
            print(f"python -m service serve: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.command == "migrate":
        return _migrate(settings)
    if args.command == "admin":
        return _admin(settings, args)
    if args.command == "url":
        return _url(settings)
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(settings)
    if args.command == "bench":
        from .bench.cli import run

        return run(args)
    return 2


def _migrate(settings: Settings) -> int:
    from .runtime import migrate_database, servers

    if settings.database_url:  # only PostgreSQL is needed: no Redis, embedded or not
        report = migrate_database(settings)
    else:
        with servers(settings) as ready:
            report = migrate_database(ready)
    for migration in report.applied:
        print(f"applied {migration.label}")
    if not report.applied:
        print(f"up to date at {report.current.label}")
    return 0


def _url(settings: Settings) -> int:
    """The running server's base URL (as its links have it), for scripts: one line, or exit 1."""
    from .runtime import served_url

    url = served_url(settings) or (settings.public_base_url if settings.public_base_url_set else None)
    if url is None:
        print(f"no server runs on DATA_DIR {settings.data_dir} (start one: scripts/serve)", file=sys.stderr)
        return 1
    print(url)
    return 0


def _admin(settings: Settings, args: argparse.Namespace) -> int:
    from . import admin
    from .core.ratepolicy import PolicyError
    from .runtime import servers

    try:
        with servers(settings, migrate=True) as ready:
            if args.action == "create-org":
                out = admin.create_org(ready, args.name, args.link_quota, args.rate_limit)
            elif args.action == "update-org":
                out = admin.update_org(ready, args.org, args.link_quota, args.rate_limit)
            elif args.action == "create-key":
                out = admin.create_key(ready, args.org, args.name, args.scopes)
            else:
                out = admin.revoke_key(ready, args.key_id)
    except (admin.AdminError, PolicyError) as exc:
        print(json.dumps({"error": str(exc)}), file=sys.stderr)
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
