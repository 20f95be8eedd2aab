"""FLEXDB_WORKERS: several server processes on one port, started, supervised and stopped
together by `flexdb serve`."""
from __future__ import annotations

import os
import signal

import httpx
import psutil

from rpc_server.client import FlexDBClient

from .conftest import running_server


def listeners(pid: int) -> list[psutil.Process]:
    """The worker processes (not multiprocessing's resource tracker)."""
    return [p for p in psutil.Process(pid).children()
            if "spawn_main" in " ".join(p.cmdline())]


async def test_workers_share_the_port_and_stop_together(database_url):
    with running_server({"FLEXDB_DATABASE_URL": database_url, "FLEXDB_WORKERS": "2"}) as srv:
        workers = listeners(srv.proc.pid)
        assert len(workers) == 2
        # Each call on a new connection: the kernel spreads them; every one is answered.
        for _ in range(20):
            async with FlexDBClient(srv.url, api_key=srv.admin_key) as client:
                await client.call("list_tenants", {})
        # Each scrape on a new connection too: both workers answer, each for itself.
        answered_by = set()
        for _ in range(40):
            with httpx.Client(timeout=10) as http:
                text = http.get(srv.base + "/metrics").text
            answered_by |= {line.split('"')[1] for line in text.splitlines()
                            if line.startswith("flexdb_worker{")}
        assert answered_by == {str(w.pid) for w in workers}

        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(30) == 0
        assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)


async def test_a_worker_that_dies_stops_the_service(database_url):
    """The parent does not limp on with fewer workers: it stops and fails, so that the
    supervisor (systemd, compose) restarts the whole service."""
    with running_server({"FLEXDB_DATABASE_URL": database_url, "FLEXDB_WORKERS": "2"}) as srv:
        first, second = listeners(srv.proc.pid)
        first.kill()
        assert srv.proc.wait(30) != 0
        assert not second.is_running() or second.status() == psutil.STATUS_ZOMBIE


def test_the_default_uses_every_usable_core(database_url):
    """Without FLEXDB_WORKERS: one worker per usable core, at most MAX_DEFAULT_WORKERS (a
    single process leaves a core idle)."""
    from rpc_server.config import MAX_DEFAULT_WORKERS
    expected = min(len(os.sched_getaffinity(0)), MAX_DEFAULT_WORKERS)
    with running_server({"FLEXDB_DATABASE_URL": database_url, "FLEXDB_WORKERS": ""}) as srv:
        workers = listeners(srv.proc.pid)
        assert len(workers) == (expected if expected > 1 else 0)
        assert httpx.get(srv.base + "/health", timeout=10).status_code == 200
