"""Warm child processes and the run of one job in one of them.

A few children are started ahead (Python and the policy already imported), each is used for
exactly one run and then discarded; the pool refills in the background. Beyond
`max_running` runs at once the worker answers busy instead of queueing."""
from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

log = logging.getLogger(__name__)
LINE_LIMIT = 16 * 1024 * 1024  # the largest message a child may send (a db call, the result)
MAX_DB_CALLS = 10_000
MAX_RECORDED_OPERATIONS = 1_000
# Where sandbox_worker itself lives, however the project was installed.
CHILD_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
             "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}

DbCall = Callable[[str, dict], Awaitable[tuple[bool, object]]]


class Busy(Exception):
    pass


@dataclass
class Child:
    process: asyncio.subprocess.Process

    async def send(self, message: dict) -> None:
        self.process.stdin.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
        await self.process.stdin.drain()

    async def receive(self) -> dict | None:
        line = await self.process.stdout.readline()
        return json.loads(line) if line else None

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()


async def start_child() -> Child:
    # A bare environment (no secrets of the worker's) and no working directory of ours.
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-s", "-m", "sandbox_worker.child", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, limit=LINE_LIMIT,
        env=CHILD_ENV, cwd="/")
    child = Child(process)
    ready = await child.receive()
    if ready != {"ready": True}:
        child.kill()
        raise RuntimeError("sandbox child did not start")
    return child


@dataclass
class Outcome:
    status: str
    result: object = None
    error: dict | None = None
    output: str = ""
    cpu_ms: float | None = None
    peak_memory_kb: int | None = None
    duration_ms: float = 0.0
    db_operations: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class WarmPool:
    def __init__(self, size: int, max_running: int):
        self.size, self.max_running = size, max_running
        self.running = 0
        self._warm: list[Child] = []
        self._refilling: set[asyncio.Task] = set()

    @property
    def warm(self) -> int:
        return len(self._warm)

    async def start(self) -> None:
        await self._fill()

    async def _fill(self) -> None:
        while len(self._warm) < self.size:
            try:
                self._warm.append(await start_child())
            except Exception:  # noqa: BLE001 - keep serving with what we have
                log.exception("could not start a sandbox child")
                return

    def _refill_later(self) -> None:
        task = asyncio.ensure_future(self._fill())
        self._refilling.add(task)
        task.add_done_callback(self._refilling.discard)

    async def take(self) -> Child:
        if self.running >= self.max_running:
            raise Busy()
        self.running += 1
        try:
            child = self._warm.pop() if self._warm else await start_child()
        except BaseException:
            self.running -= 1
            raise
        self._refill_later()
        return child

    def give_back(self) -> None:
        self.running -= 1

    async def close(self) -> None:
        for task in list(self._refilling):
            task.cancel()
        for child in self._warm:
            child.kill()
        self._warm.clear()


async def run_job(child: Child, job: dict, db_call: DbCall, timeout_s: float,
                  cancelled: asyncio.Event) -> Outcome:
    """Send the job, answer its db calls, and end it on the wall clock or on cancel."""
    started = time.perf_counter()
    operations: list = []
    outcome: Outcome | None = None

    async def converse() -> Outcome:
        calls = 0
        await child.send(job)
        while True:
            message = await child.receive()
            if message is None:
                await child.process.wait()
                return _died(child)
            if "done" in message:
                done = message["done"]
                return Outcome(done.get("status", "failed"), done.get("result"),
                               done.get("error"), done.get("output", ""),
                               done.get("cpu_ms"), done.get("peak_memory_kb"))
            calls += 1
            method, params = message.get("call"), message.get("params")
            began = time.perf_counter()
            if calls > MAX_DB_CALLS:
                ok, answer = False, {"code": -32005, "message": f"more than {MAX_DB_CALLS} "
                                     "db calls in one run", "data": {"type": "too_many_calls"}}
            else:
                ok, answer = await db_call(method, params if isinstance(params, dict) else {})
            if len(operations) < MAX_RECORDED_OPERATIONS:
                operations.append({"method": str(method)[:100],
                                   "duration_ms": round((time.perf_counter() - began) * 1000, 3),
                                   "ok": ok, **({} if ok else {"error": answer.get("message")})})
            await child.send({"result": answer} if ok else {"error": answer})

    talk = asyncio.ensure_future(converse())
    stop = asyncio.ensure_future(cancelled.wait())
    try:
        done, _ = await asyncio.wait({talk, stop}, timeout=timeout_s,
                                     return_when=asyncio.FIRST_COMPLETED)
        if talk in done:
            outcome = talk.result()
        elif stop in done:
            outcome = Outcome("cancelled", error={"type": "cancelled",
                                                  "message": "the run was cancelled"})
        else:
            outcome = Outcome("timed_out", error={
                "type": "timeout", "message": f"the run took longer than {timeout_s:g} s"})
    except (ConnectionError, json.JSONDecodeError, ValueError) as exc:
        outcome = Outcome("failed", error={"type": "crashed",
                                           "message": f"the run's process broke off: {exc}"})
    finally:
        for task in (talk, stop):
            task.cancel()
        child.kill()
        try:
            await asyncio.wait_for(child.process.wait(), 5)
        except asyncio.TimeoutError:
            log.error("a sandbox child did not exit after SIGKILL")
    outcome.duration_ms = round((time.perf_counter() - started) * 1000, 3)
    outcome.db_operations = operations
    return outcome


def _died(child: Child) -> Outcome:
    code = child.process.returncode
    if code in (-signal.SIGXCPU, -signal.SIGKILL):
        return Outcome("timed_out", error={"type": "cpu_limit",
                                           "message": "the run used up its CPU time"})
    if code == -signal.SIGXFSZ:
        return Outcome("failed", error={"type": "file_write",
                                        "message": "writing files is not allowed"})
    return Outcome("failed", error={"type": "crashed",
                                    "message": f"the run's process ended unexpectedly ({code})"})
