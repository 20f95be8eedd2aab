"""Executing pipeline runs: mint the run's execution token, hand the job to the sandbox
worker, record the outcome. Used by run_pipeline (wait: true) and by the queue, which takes
queued runs from PostgreSQL (FOR UPDATE SKIP LOCKED) a few at a time, tenant by tenant in
turn (round robin: see PipelineRunRepository.claim_queued), and marks runs left 'running' by
a server that died as failed ('interrupted')."""
from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any, Callable, Mapping

import asyncpg

from rpc_server.pipelines.sandbox_client import (
    GRACE_S,
    SandboxBusy,
    SandboxClient,
    SandboxRefused,
    SandboxUnavailable,
)
from rpc_server.storage.repositories.pipelines import PipelineRunRepository

log = logging.getLogger(__name__)
IDLE_POLL_S = 0.5
SWEEP_EVERY_S = 5.0
INTERRUPTED_GRACE_S = GRACE_S


class PipelineRunner:
    def __init__(self, pool: asyncpg.Pool, sandbox: SandboxClient | None,
                 run_token: Callable[[Mapping[str, Any] | asyncpg.Record], str], concurrency: int,
                 running_per_tenant: int, *, db_methods: dict[str, list[str]]):
        """run_token: the execution token for a run (security.execution_tokens.run_token
        with the server's secret). db_methods: what a run's `db` offers (method -> params
        by position), from the registry (api/registry.run_db_methods): sent with every job,
        the worker keeps no list."""
        self.pool, self.sandbox, self.run_token = pool, sandbox, run_token
        self.db_methods = db_methods
        self.concurrency = concurrency
        self.running_per_tenant = running_per_tenant
        self.wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.finished: Counter[str] = Counter()  # runs by final status, read by /metrics
        # Called after each run this process finishes (app.py: triggers waiting for a run).
        self.on_finished: Callable[[], None] | None = None

    @property
    def enabled(self) -> bool:
        return self.sandbox is not None

    def job(self, run: Mapping[str, Any] | asyncpg.Record) -> dict:
        return {"run_id": str(run["id"]), "tenant_id": str(run["tenant_id"]),
                "token": self.run_token(run), "code": run["code"], "input": run["input"],
                "timeout_ms": run["timeout_ms"], "memory_mb": run["memory_mb"],
                "request_id": run["request_id"], "verbose": run["debug_level"] == "verbose",
                "map": bool(run.get("map_items", False)), "db_methods": self.db_methods}

    async def execute(self, run: asyncpg.Record,
                      requeue_when_busy: bool = False) -> tuple[asyncpg.Record | None, bool]:
        """Run it and record the outcome: (the finished run, or None if it was cancelled
        meanwhile or put back in the queue; whether the sandbox was busy)."""
        assert self.sandbox is not None  # runs are executed only when enabled
        busy = False
        try:
            outcome = await self.sandbox.run(self.job(run))
        except SandboxBusy:
            if requeue_when_busy:  # not the run's failure: it waits for a free slot
                await self._requeue(run)
                return None, True
            busy = True
            outcome = {"status": "failed", "error": {
                "type": "busy", "message": "every sandbox slot was in use; retry shortly"}}
        except SandboxRefused as exc:  # (not retried: it would be refused again)
            outcome = {"status": "failed", "error": {"type": "sandbox_refused",
                                                     "message": str(exc)}}
        except SandboxUnavailable as exc:
            log.warning("sandbox worker unavailable for run %s: %s", run["id"], exc)
            outcome = {"status": "failed", "error": {
                "type": "sandbox_unavailable", "message": "the sandbox worker cannot be "
                                                          "reached"}}
        if run["debug_level"] == "none" and isinstance(outcome.get("error"), dict):
            outcome["error"].pop("traceback", None)
        async with self.pool.acquire() as conn:
            finished = await PipelineRunRepository(conn).finish(run["tenant_id"], run["id"],
                                                                outcome)
        self.finished[finished["status"] if finished is not None else "cancelled"] += 1
        if self.on_finished is not None:
            self.on_finished()
        return finished, busy

    async def cancel(self, run_id) -> None:
        if self.sandbox is not None:
            await self.sandbox.cancel(str(run_id))

    # ---------------------------------------------------------------- the queue

    def start(self) -> None:
        if self.enabled and self.concurrency > 0:
            self._task = asyncio.ensure_future(self._process_queue())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def sweep_interrupted(self) -> int:
        async with self.pool.acquire() as conn:
            count = await PipelineRunRepository(conn).fail_interrupted(INTERRUPTED_GRACE_S)
        if count:
            log.warning("marked %d run(s) failed: interrupted (their server stopped)", count)
        return count

    async def _claim(self) -> asyncpg.Record | None:
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                return await PipelineRunRepository(conn).claim_queued(self.running_per_tenant)

    async def _requeue(self, run: asyncpg.Record) -> None:
        async with self.pool.acquire() as conn:
            await PipelineRunRepository(conn).requeue(run["tenant_id"], run["id"])

    async def _execute_queued(self, run: asyncpg.Record, slots: asyncio.Semaphore) -> None:
        try:
            _, busy = await self.execute(run, requeue_when_busy=True)
            if busy:
                await asyncio.sleep(1.0)
        except Exception:  # noqa: BLE001 - one run's trouble must not stop the queue
            log.exception("queued run %s could not be executed", run["id"])
        finally:
            slots.release()

    async def _process_queue(self) -> None:
        slots = asyncio.Semaphore(self.concurrency)
        last_sweep = 0.0
        loop = asyncio.get_running_loop()
        while True:
            try:
                if loop.time() - last_sweep > SWEEP_EVERY_S:
                    await self.sweep_interrupted()
                    last_sweep = loop.time()
                await slots.acquire()
                try:
                    run = await self._claim()
                except BaseException:
                    slots.release()
                    raise
                if run is None:
                    slots.release()
                    self.wake.clear()
                    try:
                        await asyncio.wait_for(self.wake.wait(), IDLE_POLL_S)
                    except asyncio.TimeoutError:
                        pass
                    continue
                asyncio.ensure_future(self._execute_queued(run, slots))
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - e.g. the database is briefly unavailable
                log.exception("pipeline queue error; retrying")
                await asyncio.sleep(1.0)
