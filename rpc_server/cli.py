"""The `flexdb` command: up, serve, facade, sandbox, migrate, create-key, encrypt-value.

Settings come from FLEXDB_* environment variables (config.py declares each one and the
commands that read it); the common ones are also flags, which win over the environment.
Every command's --help lists its flags and the settings it reads, with their defaults."""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import textwrap
from contextlib import nullcontext
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from rpc_server.config import (
    CREATE_KEY,
    FACADE,
    MIGRATE,
    SANDBOX,
    SERVE,
    ConfigError,
    Settings,
    env_var,
    load_settings,
    settings_read_by,
    shown_default,
)
from rpc_server.ops.logs import configure_logging
from rpc_server.storage.migrations import MigrationError

UP = "up"
# The common settings that are flags too: flag -> the settings it sets, per command.
FLAGS: dict[str, dict[str, tuple[str, ...]]] = {
    UP: {"--host": ("host", "facade_host"), "--port": ("port",), "--workers": ("workers",),
         "--database-url": ("database_url",), "--data-dir": ("data_dir",)},
    SERVE: {"--host": ("host",), "--port": ("port",), "--workers": ("workers",),
            "--database-url": ("database_url",), "--data-dir": ("data_dir",)},
    FACADE: {"--host": ("facade_host",), "--port": ("facade_port",)},
    SANDBOX: {"--host": ("sandbox_host",), "--port": ("sandbox_port",)},
    MIGRATE: {"--database-url": ("database_url",), "--data-dir": ("data_dir",)},
    CREATE_KEY: {"--database-url": ("database_url",), "--data-dir": ("data_dir",)},
}
FLAG_HELP = {"--host": "address to bind to", "--port": "port to listen on",
             "--workers": "server processes sharing the port",
             "--database-url": "PostgreSQL URL (prefer the environment variable for URLs "
                               "that hold a password: flags show in `ps`)",
             "--data-dir": "local state: embedded PostgreSQL and the generated secret"}
COMMAND_HELP = {
    UP: "start everything (the quick start): the sandbox worker, the JSON-RPC server and "
        "the REST facade, with an embedded PostgreSQL when no database URL is set",
    SERVE: "run the JSON-RPC server (applies pending migrations first)",
    FACADE: "run the REST facade (forwards to FLEXDB_RPC_URL)",
    SANDBOX: "run the sandbox worker that executes pipeline code",
    MIGRATE: "apply pending migrations and exit",
    CREATE_KEY: "print a new platform admin API key (run on the server host to recover "
                "access)",
}


def flexdb_version() -> str:
    try:
        return version("flexdb")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def settings_help(command: str) -> str:
    """The settings a command reads, with defaults and meaning, for its --help."""
    names = (list(Settings.model_fields) if command == UP else settings_read_by(command))
    width = max(60, min(100, shutil.get_terminal_size((100, 20)).columns)) - 2
    lines = ["settings (environment variables; the flags above win over them):"]
    for name in names:
        meaning = (Settings.model_fields[name].description or "").replace("`", "")
        lines.append(f"  {env_var(name)}  (default: {shown_default(name).replace('`', '')})")
        lines += textwrap.wrap(meaning, width, initial_indent="      ",
                               subsequent_indent="      ")
    if command == UP:
        lines.append("  Every setting is passed on to the three processes.")
    lines.append("Any value may be given encrypted as ENC(...) (see `flexdb encrypt-value`).")
    return "\n".join(lines)


def overrides_from(command: str, args: argparse.Namespace) -> dict[str, tuple[str, Any]]:
    found = {}
    for flag, names in FLAGS.get(command, {}).items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"), None)
        for name in names:
            found[name] = (flag, value)
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flexdb", description="flexdb database service")
    parser.add_argument("--version", action="version", version=f"flexdb {flexdb_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    commands = {}
    for command, summary in COMMAND_HELP.items():
        commands[command] = sub.add_parser(
            command, help=summary, description=summary, epilog=settings_help(command),
            formatter_class=argparse.RawDescriptionHelpFormatter)
        for flag in FLAGS[command]:
            kind = int if flag in ("--port", "--workers") else str
            commands[command].add_argument(flag, type=kind, default=None, help=FLAG_HELP[flag])
    for command in (SERVE, FACADE, SANDBOX):  # `flexdb up` prints one block for all three
        commands[command].add_argument("--no-banner", action="store_true",
                                       help=argparse.SUPPRESS)
    key = commands[CREATE_KEY]
    key.add_argument("--admin", action="store_true", required=True,
                     help="a key of the platform admin (the only kind this command makes)")
    key.add_argument("--name", default="create-key", help="label shown by list_api_keys")
    enc = sub.add_parser("encrypt-value", help="read a setting's value on stdin and print it as "
                         "ENC(...) for FLEXDB_* variables (needs FLEXDB_MASTER_KEY[_FILE])",
                         description="Read a value on stdin (not argv: no shell history, no "
                         "ps) and print it as ENC(...), for any FLEXDB_* variable.",
                         epilog="settings (environment variables):\n  FLEXDB_MASTER_KEY or "
                         "FLEXDB_MASTER_KEY_FILE  (default: unset)\n      the Fernet key (or a "
                         "file holding it) that encrypts and decrypts ENC(...) values",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    enc.add_argument("--new-key", action="store_true", help="print a new master key instead")
    return parser


def warn_if_anonymous(settings: Settings, process: str) -> None:
    """Loud, on stderr, at every start of a process that lets anyone in."""
    if settings.anonymous_role == "none":
        return
    bar = "!" * 78
    print(f"{bar}\n! WARNING: FLEXDB_ANONYMOUS_ROLE={settings.anonymous_role}: the {process} "
          f"serves every caller\n! without credentials as {settings.anonymous_role}. Use this "
          f"only on a trusted network.\n{bar}", file=sys.stderr, flush=True)


def _serve(settings: Settings, args) -> int:
    from rpc_server.ops.local_instances import registered
    from rpc_server.security.bootstrap import prepare_database
    from rpc_server.security.server_secret import server_secret
    from rpc_server.storage.db import database_url
    from rpc_server.workers import serve_one, serve_workers

    warn_if_anonymous(settings, "JSON-RPC server")
    secret = server_secret(settings)
    # Workers get the secret itself: resolved (and warned about) once, here.
    settings = settings.model_copy(update={"secret_key": secret.decode()})
    with database_url(settings) as url:
        admin_key = asyncio.run(prepare_database(url, settings, secret))
        banner = not args.no_banner
        rpc_url = f"http://{settings.host}:{settings.port}/jsonrpc"
        with nullcontext() if settings.database_url else registered(settings.data_dir, rpc_url):
            if settings.workers > 1:
                return serve_workers(settings, url, admin_key, banner)
            serve_one(settings, url, reuse_port=False, banner=banner, admin_key=admin_key)
    return 0


def _up(settings: Settings, args) -> int:
    from rpc_server.stack import run_stack

    return run_stack(settings, {name: value for name, (_, value) in
                                overrides_from(UP, args).items() if value is not None})


def _migrate(settings: Settings, args) -> int:
    from rpc_server.storage.db import connect, database_url
    from rpc_server.storage.migrations import migrate

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
    from rpc_server.security.bootstrap import new_admin_key
    from rpc_server.security.server_secret import server_secret
    from rpc_server.storage.db import connect, database_url
    from rpc_server.storage.migrations import migrate

    settings = admin_target(settings, args)
    secret = server_secret(settings, create=False)

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


def admin_target(settings: Settings, args) -> Settings:
    """The settings create-key uses. It never creates a database or a secret: with a
    database URL it uses that; otherwise a data dir that holds a cluster already (the
    one given, else ./.flexdb, else the one running quick start on this machine)."""
    from rpc_server.ops.local_instances import holds_cluster, running_instances

    if settings.database_url:
        return settings
    data_dir = settings.data_dir.expanduser().resolve()
    explicit = args.data_dir is not None or bool(os.environ.get(env_var("data_dir")))
    if holds_cluster(data_dir):
        return settings
    how = ("  Run it from the directory where you started flexdb, or point it at the server:\n"
           "  --data-dir DIR (FLEXDB_DATA_DIR) for a quick start's data dir, or\n"
           "  --database-url URL (FLEXDB_DATABASE_URL) and FLEXDB_SECRET_KEY for your own "
           "PostgreSQL.")
    if explicit:
        raise ConfigError(f"{data_dir} holds no flexdb database (no embedded PostgreSQL in "
                          f"{data_dir / 'pg'}); nothing was created.\n{how}")
    running = running_instances()
    if len(running) == 1:
        print(f"flexdb: using the running quick start's data dir {running[0].data_dir} "
              f"(server {running[0].rpc_url})", file=sys.stderr)
        return settings.model_copy(update={"data_dir": running[0].data_dir})
    if running:
        dirs = "\n".join(f"  {r.data_dir} (server {r.rpc_url})" for r in running)
        raise ConfigError(f"no flexdb data dir here ({data_dir}), and several quick starts "
                          f"are running; choose one with --data-dir:\n{dirs}")
    raise ConfigError(f"no flexdb data dir here ({data_dir}) and no running quick start "
                      f"found.\n  Nothing was done: this would have made a new, empty "
                      f"database and secret here.\n{how}")


def _sandbox(settings: Settings, args) -> int:
    from aiohttp import web

    from sandbox_worker.app import create_app

    if not settings.sandbox_secret:
        raise ConfigError("FLEXDB_SANDBOX_SECRET must be set (the same value as rpc_server's)")
    app = create_app(settings)
    base = f"http://{settings.sandbox_host}:{settings.sandbox_port}"

    def banner(_message: str) -> None:
        if not args.no_banner:
            print(f"flexdb sandbox worker is up\n  runs:   POST {base}/runs (signed)\n"
                  f"  health: GET  {base}/health\n  calls back: {settings.rpc_url}", flush=True)

    web.run_app(app, host=settings.sandbox_host, port=settings.sandbox_port, print=banner,
                access_log=None, shutdown_timeout=15)
    return 0


def _facade(settings: Settings, args) -> int:
    import uvicorn

    from rest_facade.app import create_app

    warn_if_anonymous(settings, "REST facade")
    base = f"http://{settings.facade_host}:{settings.facade_port}"
    if not args.no_banner:
        print(f"flexdb REST facade is up\n  REST: {base}/tenants …\n  docs: {base}/docs  "
              f"{base}/redoc  {base}/openapi.json\n  forwards to: {settings.rpc_url}",
              flush=True)
    # h11 refuses request heads over 64 KiB; httptools would read any size into memory.
    # (None: uvicorn's default, for httptools which has no such setting.)
    max_head = 65536 if settings.facade_http == "h11" else None
    uvicorn.run(create_app(settings), host=settings.facade_host, port=settings.facade_port,
                loop="uvloop", http=settings.facade_http, access_log=False, server_header=False,
                h11_max_incomplete_event_size=max_head,
                # uvicorn's start-up lines are routine: kept only when debugging.
                log_level="debug" if settings.log_level == "DEBUG" else "warning",
                # In-flight calls may wait for rpc_server up to its timeout: let them finish.
                timeout_graceful_shutdown=int(settings.facade_rpc_timeout_s) + 5,
                log_config=None)  # our handler on the root logger, not uvicorn's
    return 0


def _encrypt_value(args) -> int:
    """Read a value on stdin (not argv: no shell history, no ps), print ENC(...)."""
    from rpc_server.config_secrets import SecretError, encrypt_value, master_key, new_master_key

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


COMMANDS = {UP: _up, SERVE: _serve, FACADE: _facade, MIGRATE: _migrate,
            CREATE_KEY: _create_key, SANDBOX: _sandbox}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "encrypt-value":  # needs no other setting
        return _encrypt_value(args)
    try:
        settings = load_settings(overrides=overrides_from(args.command, args))
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
        return f"embedded PostgreSQL in {Path(settings.data_dir).expanduser().resolve()}"
    parts = urlsplit(settings.database_url)
    return f"{parts.hostname or 'local socket'}:{parts.port or 5432}{parts.path}"
