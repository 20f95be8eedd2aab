"""The sweep shared by the workers that serve what they claim in the database under a lease
(webhooks and triggers: changes/webhooks.py; jobs: pipelines/jobs.py): woken by kick() or
every SWEEP_S, it claims as many items as it has free slots, serves each in a task of its
own, and sweeps again as soon as one ends."""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections import Counter
from functools import partial
from typing import Any, Coroutine

import asyncpg

log = logging.getLogger(__name__)
SWEEP_S = 1.0


class ClaimLoop:
    """Subclasses say what they claim (_claim), how they serve one claimed row (_serve_row)
    and, optionally, what else each sweep does (_after_claim)."""
    what = "items"  # for the log

    def __init__(self, concurrency: int):
        self.concurrency = concurrency
        # Who holds a claim: host, process and a random part (a restarted process is new).
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.active: dict[tuple[Any, Any], asyncio.Task] = {}  # (tenant, id) being served
        self._wake = asyncio.Event()

    async def _claim(self, free: int) -> list[asyncpg.Record]:
        raise NotImplementedError

    def _serve_row(self, row: asyncpg.Record) -> Coroutine[Any, Any, None]:
        raise NotImplementedError

    async def _after_claim(self) -> None:
        """Housekeeping once per sweep (its errors count as the sweep's)."""

    def kick(self) -> None:
        self._wake.set()

    def held_by_tenant(self) -> dict[Any, int]:
        """How many of the items being served each tenant has."""
        return Counter(tenant for tenant, _ in self.active)

    def _done(self, key: tuple[Any, Any], task: asyncio.Task) -> None:
        self.active.pop(key, None)
        self._wake.set()  # what arrived meanwhile, and what the slot may now take

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), SWEEP_S)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            free = self.concurrency - len(self.active)
            if free <= 0:
                continue
            try:
                claimed = await self._claim(free)
                await self._after_claim()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - retried at the next sweep
                log.warning("could not claim %s (will retry): %r", self.what, exc)
                await asyncio.sleep(SWEEP_S)
                continue
            for row in claimed:
                key = (row["tenant_id"], row["id"])
                task = loop.create_task(self._serve_row(row))
                self.active[key] = task
                task.add_done_callback(partial(self._done, key))
