"""The `flexdb` command: serve, migrate, facade, sandbox, create-key, encrypt-value."""
from __future__ import annotations

import argparse
import asyncio
import sys
from urllib.parse import urlsplit

import asyncpg

from .config import ConfigError, Settings, load_settings
from .logs import configure_logging
from .migrations import MigrationError


def _serve(settings: Settings, args) -> int:
    from .db import database_url
    from .workers import serve_one, serve_workers

    with database_url(settings) as url:
        if settings.workers > 1:
            return serve_workers(settings, url)
        serve_one(settings, url, reuse_port=False, banner=True)
    return 0


def _migrate(settings: Settings, args) -> int:
    from .db import connect, database_url
    from .migrations import migrate

    async def run(url: str) -> list[str]:
        conn = await connect(url, settings)
        try:
            return await migrate(conn, settings.migrations_dir)
        finally:
            await conn.close()

    with database_url(settings) as url:
        applied = asyncio.run(run(url))
    print("applied: " + ", ".join(applied) if applied else "database is up to date")
    return 0


def _create_key(settings: Settings, args) -> int:
    from .bootstrap import new_admin_key
    from .db import connect, database_url
    from .migrations import migrate
    from .server_secret import server_secret

    secret = server_secret(settings)

    async def run(url: str) -> str:
        conn = await connect(url, settings)
        try:
            await migrate(conn, settings.migrations_dir)
            return await new_admin_key(conn, secret, args.name)
        finally:
            await conn.close()

    with database_url(settings) as url:
        key = asyncio.run(run(url))
    print(key)  # alone on stdout: KEY=$(flexdb create-key --admin)
    return 0


def _sandbox(settings: Settings, args) -> int:
    from aiohttp import web

    from sandbox_worker.app import create_app

    if not settings.sandbox_secret:
        raise ConfigError("FLEXDB_SANDBOX_SECRET must be set (the same value as rpc_server's)")
    app = create_app(settings)
    base = f"http://{settings.sandbox_host}:{settings.sandbox_port}"

    def banner(_message: str) -> None:
        print(f"flexdb sandbox worker is up\n  runs:   POST {base}/runs (signed)\n"
              f"  health: GET  {base}/health\n  calls back: {settings.rpc_url}", flush=True)

    web.run_app(app, host=settings.sandbox_host, port=settings.sandbox_port, print=banner,
                access_log=None, shutdown_timeout=15)
    return 0


def _facade(settings: Settings, args) -> int:
    import uvicorn

    from rest_facade.app import create_app

    base = f"http://{settings.facade_host}:{settings.facade_port}"
    print(f"flexdb REST facade is up\n  REST: {base}/tenants …\n  docs: {base}/docs  "
          f"{base}/redoc  {base}/openapi.json\n  forwards to: {settings.rpc_url}", flush=True)
    # h11 refuses request heads over 64 KiB; httptools would read any size into memory.
    parser = {"h11_max_incomplete_event_size": 65536} if settings.facade_http == "h11" else {}
    uvicorn.run(create_app(settings), host=settings.facade_host, port=settings.facade_port,
                loop="uvloop", http=settings.facade_http, access_log=False, server_header=False,
                **parser,
                log_level=settings.log_level.lower(),
                # In-flight calls may wait for rpc_server up to its timeout: let them finish.
                timeout_graceful_shutdown=int(settings.facade_rpc_timeout_s) + 5,
                log_config=None)  # our JSON handler on the root logger, not uvicorn's text
    return 0


def _encrypt_value(args) -> int:
    """Read a value on stdin (not argv: no shell history, no ps), print ENC(...)."""
    from .secrets import SecretError, encrypt_value, master_key, new_master_key

    if args.new_key:
        print(new_master_key())
        return 0
    try:
        fernet = master_key()
    except SecretError as exc:
        print(f"flexdb: {exc}", file=sys.stderr)
        return 2
    value = sys.stdin.read()
    value = value[:-1] if value.endswith("\n") else value
    if not value:
        print("flexdb: give the value to encrypt on stdin", file=sys.stderr)
        return 2
    print(encrypt_value(value, fernet))
    return 0


COMMANDS = {"serve": _serve, "facade": _facade, "migrate": _migrate, "create-key": _create_key,
            "sandbox": _sandbox}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flexdb", description="flexdb database service")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the JSON-RPC server (applies migrations first)")
    sub.add_parser("migrate", help="apply pending migrations and exit")
    sub.add_parser("facade", help="run the REST facade (forwards to FLEXDB_RPC_URL)")
    sub.add_parser("sandbox", help="run the sandbox worker that executes pipeline code")
    key = sub.add_parser("create-key", help="print a new platform admin API key (run on the "
                         "server host to recover access)")
    key.add_argument("--admin", action="store_true", required=True,
                     help="a key of the platform admin (the only kind this command makes)")
    key.add_argument("--name", default="create-key", help="label shown by list_api_keys")
    enc = sub.add_parser("encrypt-value", help="read a setting's value on stdin and print it as "
                         "ENC(...) for FLEXDB_* variables (needs FLEXDB_MASTER_KEY[_FILE])")
    enc.add_argument("--new-key", action="store_true", help="print a new master key instead")
    args = parser.parse_args(argv)
    if args.command == "encrypt-value":  # needs no other setting
        return _encrypt_value(args)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"flexdb: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    try:
        return COMMANDS[args.command](settings, args)
    except ConfigError as exc:
        print(f"flexdb: {exc}", file=sys.stderr)
        return 2
    except MigrationError as exc:
        print(f"flexdb: migration failed: {exc}", file=sys.stderr)
        return 1
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError,
            asyncpg.InterfaceError) as exc:
        # Name the setting and the server, never the credentials in the URL.
        print(f"flexdb: cannot use the database at {describe_database(settings)} "
              f"(FLEXDB_DATABASE_URL): {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def describe_database(settings: Settings) -> str:
    if not settings.database_url:
        return f"embedded PostgreSQL in {settings.data_dir}"
    parts = urlsplit(settings.database_url)
    return f"{parts.hostname or 'local socket'}:{parts.port or 5432}{parts.path}"
