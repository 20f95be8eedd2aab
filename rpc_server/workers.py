"""`flexdb serve` as one process or as FLEXDB_WORKERS processes on one port.

Each worker is a whole server (its own event loop, pools and caches, like an instance
behind a load balancer); with SO_REUSEPORT the kernel spreads new connections over them,
so one machine's cores are used. The parent only starts them, passes SIGTERM/SIGINT on,
and stops them all when one exits (a supervisor then restarts the service)."""
from __future__ import annotations

import asyncio
import multiprocessing
import signal
import sys
from multiprocessing.connection import wait

from rpc_server.config import Settings
from rpc_server.ops.logs import configure_logging


def serve_one(settings: Settings, database_url: str, reuse_port: bool, banner: bool,
              admin_key: str | None = None) -> None:
    from aiohttp import web

    from rpc_server.app import create_app

    try:  # a faster event loop where it installs (it is a dependency, but optional here)
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    base = f"http://{settings.host}:{settings.port}"
    workers = f" ({settings.workers} worker processes)" if settings.workers > 1 else ""

    def print_banner(_message: str) -> None:
        if banner:
            print(f"flexdb is up{workers}\n  JSON-RPC: POST {base}/jsonrpc\n"
                  f"  health:   GET  {base}/health  {base}/ready  {base}/metrics", flush=True)
        if admin_key:
            print(admin_key_line(admin_key), flush=True)

    app = create_app(settings, database_url)
    app.on_startup.insert(0, _stop_on_first_signal)
    app.on_startup.append(_freeze_startup_objects)
    web.run_app(app, host=settings.host, port=settings.port, reuse_port=reuse_port or None,
                print=print_banner, access_log=None, shutdown_timeout=15,
                handle_signals=False)


async def _freeze_startup_objects(_app) -> None:
    """Modules, models and caches built at startup live as long as the process: moved out
    of the collector's sight, full collections no longer walk them (a pause of ~20 ms
    each, at every few thousand requests)."""
    import gc
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 50)


async def _stop_on_first_signal(_app) -> None:
    """SIGTERM or SIGINT starts the graceful shutdown; a second one (Ctrl-C reaches every
    process of the group, a supervisor may signal parent and workers alike) must not cut it
    short, as aiohttp's own handler would."""
    from aiohttp.web_runner import GracefulExit

    loop = asyncio.get_running_loop()

    def stop() -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: None)  # from now on: already stopping
        raise GracefulExit()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)


def admin_key_line(admin_key: str) -> str:
    return f"Platform admin API key (shown once, keep it safe): {admin_key}"


def _worker_main(settings: Settings, database_url: str, banner: bool,
                 admin_key: str | None) -> None:
    configure_logging(settings.log_level, settings.log_format)
    serve_one(settings, database_url, reuse_port=True, banner=banner, admin_key=admin_key)


def serve_workers(settings: Settings, database_url: str, admin_key: str | None = None,
                  banner: bool = True) -> int:
    """The first worker prints the banner (and the first start's admin key) once it
    listens."""
    context = multiprocessing.get_context("spawn")  # no state inherited from this process
    children = [context.Process(target=_worker_main,
                                args=(settings, database_url, banner and i == 0,
                                      admin_key if i == 0 else None),
                                name=f"flexdb-worker-{i}", daemon=False)
                for i in range(settings.workers)]
    requested = False  # a stop asked for by a signal (exit 0), not a worker's death

    signalled: set[int] = set()

    def stop_all() -> None:
        for child in children:  # SIGTERM, once: each worker shuts down gracefully
            if child.pid is not None and child.pid not in signalled and child.is_alive():
                signalled.add(child.pid)
                child.terminate()

    def on_signal(_signum, _frame) -> None:
        nonlocal requested
        requested = True
        stop_all()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for child in children:
        child.start()
    try:
        ready = wait([c.sentinel for c in children])  # until any worker exits
        if not requested:
            # Its pipe closes a moment before it can be reaped: join, not exitcode.
            dead = next(c for c in children if c.sentinel in ready)
            dead.join()
            print(f"flexdb: worker {dead.name} exited (code {dead.exitcode}); stopping the "
                  "others", file=sys.stderr, flush=True)
            stop_all()
    finally:
        if requested:
            stop_all()  # workers started after the signal came
        for child in children:
            child.join(30)
            if child.is_alive():
                child.kill()
                child.join()
    return 0 if requested else 1
