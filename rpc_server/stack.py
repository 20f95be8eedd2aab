"""`flexdb up`: the quick start. Starts the database (embedded PostgreSQL when no URL is set),
applies migrations, makes the first platform admin, then runs the sandbox worker, the
JSON-RPC server and the REST facade as child processes, waits until all three answer, and
prints one short block with the endpoints and (at the first start) the admin key, as the
last thing before requests come in. Ctrl-C or SIGTERM stops the three gracefully, then the
database. If one of them dies, the others are stopped too and `up` fails."""
from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from typing import Any

import httpx

from rpc_server.config import Settings, env_var
from rpc_server.ops.local_instances import registered

START_TIMEOUT_S = 90
STOP_TIMEOUT_S = 40


class StackError(Exception):
    pass


def _die_with_parent() -> None:
    """Children get SIGTERM if `up` itself is killed, instead of running on unowned."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Child:
    def __init__(self, name: str, command: str, health_url: str, env: dict[str, str]):
        self.name, self.health_url = name, health_url
        # Own session: a Ctrl-C at the terminal reaches `up` only, which stops each child
        # once (a second signal would cut a child's graceful shutdown short).
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rpc_server", command, "--no-banner"], env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)

    def healthy(self) -> bool:
        try:
            return httpx.get(self.health_url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)


def _child_env(settings: Settings, database_url: str, secret: str, sandbox_secret: str,
               overrides: dict[str, Any]) -> dict[str, str]:
    env = dict(os.environ)
    env.update((env_var(name), str(value)) for name, value in overrides.items())
    rpc_url = f"http://{_local(settings.host)}:{settings.port}/jsonrpc"
    env.update({
        env_var("database_url"): database_url,
        env_var("secret_key"): secret,  # resolved once, here: the server makes none
        env_var("sandbox_secret"): sandbox_secret,
        env_var("rpc_url"): env.get(env_var("rpc_url")) or rpc_url,
        env_var("sandbox_url"): env.get(env_var("sandbox_url"))
        or f"http://{_local(settings.sandbox_host)}:{settings.sandbox_port}",
    })
    return env


def _local(host: str) -> str:
    """Where to reach a service bound to `host` from this machine."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def summary(settings: Settings, admin_key: str | None) -> str:
    """The block `up` ends its start with: short, plain text, the key last."""
    rpc = f"http://{_local(settings.host)}:{settings.port}"
    rest = f"http://{_local(settings.facade_host)}:{settings.facade_port}"
    if settings.database_url:
        database = "PostgreSQL at FLEXDB_DATABASE_URL"
    else:
        database = f"embedded PostgreSQL in {settings.data_dir.expanduser().resolve() / 'pg'}"
    workers = f" ({settings.workers} processes)" if settings.workers > 1 else ""
    if admin_key:
        key = f"{admin_key}\n               shown once: keep it safe"
    else:
        key = "shown at the first start only; a new one: .venv/bin/flexdb create-key --admin"
    return "\n".join([
        "",
        "flexdb is running. Ctrl-C stops it.",
        f"  JSON-RPC   POST {rpc}/jsonrpc{workers}",
        f"  REST       {rest}/tenants   docs: {rest}/docs",
        f"  health     {rpc}/ready   metrics: {rpc}/metrics",
        f"  database   {database}",
        f"  admin key  {key}",
        "",
    ])


def run_stack(settings: Settings, overrides: dict[str, Any]) -> int:
    """`overrides`: {setting name: value} given as flags, passed on to the children."""
    from rpc_server.security.bootstrap import prepare_database
    from rpc_server.security.server_secret import server_secret
    from rpc_server.storage.db import database_url

    stopping = {"signal": None}

    def on_signal(signum, _frame) -> None:
        stopping["signal"] = signum

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    secret = server_secret(settings)
    sandbox_secret = settings.sandbox_secret or secrets.token_urlsafe(32)
    with ExitStack() as stack:
        url = stack.enter_context(database_url(settings))
        admin_key = asyncio.run(prepare_database(url, settings, secret))
        if not settings.database_url:
            stack.enter_context(registered(
                settings.data_dir, f"http://{_local(settings.host)}:{settings.port}/jsonrpc"))
        env = _child_env(settings, url, secret.decode(), sandbox_secret, overrides)
        children = [
            Child("sandbox worker", "sandbox", f"http://{_local(settings.sandbox_host)}:"
                  f"{settings.sandbox_port}/health", env),
            Child("JSON-RPC server", "serve",
                  f"http://{_local(settings.host)}:{settings.port}/health", env),
            Child("REST facade", "facade", f"http://{_local(settings.facade_host)}:"
                  f"{settings.facade_port}/health", env),
        ]
        try:
            return _supervise(children, stopping, settings, admin_key)
        finally:
            _stop_all(children)
    return 0


def _supervise(children: list[Child], stopping: dict, settings: Settings,
               admin_key: str | None) -> int:
    deadline = time.monotonic() + START_TIMEOUT_S
    waiting = list(children)
    while waiting:
        if stopping["signal"] is not None:
            return 0
        dead = _first_dead(children)
        if dead is not None:
            print(f"flexdb: the {dead.name} exited during start (code "
                  f"{dead.proc.returncode}); stopping the others", file=sys.stderr, flush=True)
            return 1
        waiting = [c for c in waiting if not c.healthy()]
        if waiting and time.monotonic() > deadline:
            names = ", ".join(c.name for c in waiting)
            print(f"flexdb: no answer from the {names} after {START_TIMEOUT_S} s; stopping",
                  file=sys.stderr, flush=True)
            return 1
        if waiting:
            time.sleep(0.2)
    print(summary(settings, admin_key), flush=True)
    while stopping["signal"] is None:
        dead = _first_dead(children)
        if dead is not None:
            print(f"flexdb: the {dead.name} exited (code {dead.proc.returncode}); stopping "
                  "the others", file=sys.stderr, flush=True)
            return 1
        time.sleep(0.2)
    return 0


def _first_dead(children: list[Child]) -> Child | None:
    return next((c for c in children if c.proc.poll() is not None), None)


def _stop_all(children: list[Child]) -> None:
    """SIGTERM once to each (the facade and the server finish in-flight calls), then wait;
    a child that outlives the wait is killed."""
    for child in children:
        child.stop()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for child in children:
        try:
            child.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.proc.kill()
            child.proc.wait()
