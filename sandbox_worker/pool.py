"""Warm child processes and the run of one job in one of them.

Children are forked by the zygote (zygote.py), which has Python and the policy imported
already. A few are kept forked ahead; each is used for exactly one run and then killed; the
pool refills in the background. Beyond `max_running` runs at once the worker answers busy
instead of queueing."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

from rpc_server.audit.events import summarize  # the audit trail's redaction, for verbose runs

from .child import storable_text

log = logging.getLogger(__name__)
LINE_LIMIT = 16 * 1024 * 1024  # the largest message a child may send (a db call, the result)
MAX_DB_CALLS = 10_000
MAX_RECORDED_OPERATIONS = 1_000
ZYGOTE_MAX_FORKS = 256
RETIRE_PATIENCE_S = 120.0  # longer than any run (60 s at most) plus its kill
# A bare environment (no secrets of the worker's), with sandbox_worker importable however
# the project was installed.
CHILD_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
             "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}

DbCall = Callable[[str, dict], Awaitable[tuple[bool, object]]]


class Busy(Exception):
    pass


class ZygoteGone(Exception):
    pass


class Child:
    """One forked child: its protocol socket and, from the zygote, its exit status."""

    def __init__(self, pid: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 exited: asyncio.Future):
        self.pid, self.reader, self.writer, self._exited = pid, reader, writer, exited
        self.returncode: int | None = None

    async def send(self, message: dict) -> None:
        self.writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
        await self.writer.drain()

    async def receive(self) -> dict | None:
        line = await self.reader.readline()
        return json.loads(line) if line else None

    def kill(self) -> None:
        if not self._exited.done():  # once reaped, its pid may belong to another process
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    async def wait(self) -> int:
        # Shielded: a waiter that is cancelled must not cancel the exit status for others.
        returncode: int = await asyncio.shield(self._exited)
        self.returncode = returncode
        self.writer.close()
        return returncode


class Zygote:
    """The worker's side of the zygote (zygote.py): ask for forks, hear about exits."""

    def __init__(self):
        self.process: asyncio.subprocess.Process | None = None
        self.forked = 0
        self._sock: socket.socket | None = None
        self._forks: deque[asyncio.Future] = deque()
        self._exits: dict[int, asyncio.Future] = {}
        self._children: set[int] = set()  # forked and not yet reported as exited
        self._idle = asyncio.Event()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None \
            and self._sock is not None

    async def start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-s", "-m", "sandbox_worker.zygote", str(theirs.fileno()),
                pass_fds=[theirs.fileno()], env=CHILD_ENV, cwd="/",
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL)
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours
        asyncio.get_running_loop().add_reader(ours.fileno(), self._on_message)

    def _exit_future(self, pid: int) -> asyncio.Future:
        if pid not in self._exits:
            self._exits[pid] = asyncio.get_running_loop().create_future()
        return self._exits[pid]

    def _on_message(self) -> None:
        while (sock := self._sock) is not None:
            try:
                message, fds, _, _ = socket.recv_fds(sock, 4096, 1)
            except BlockingIOError:
                return
            if not message:
                self._gone(sock)
                return
            data = json.loads(message)
            if "forked" in data and self._forks:
                future = self._forks.popleft()
                if future.done():
                    os.close(fds[0])
                else:
                    future.set_result((data["forked"], fds[0]))
            elif "exited" in data:
                self._children.discard(data["exited"])
                if not self._children:
                    self._idle.set()
                pid = data["exited"]
                # Exited before anyone asked: keep the status in a new future.
                future = self._exits.pop(pid) if pid in self._exits else self._exit_future(pid)
                if not future.done():
                    future.set_result(data["status"])

    def _gone(self, sock: socket.socket) -> None:
        asyncio.get_running_loop().remove_reader(sock.fileno())
        sock.close()
        self._sock = None
        for future in [*self._forks, *self._exits.values()]:
            if not future.done():
                future.set_exception(ZygoteGone())
                future.exception()  # retrieved: nobody may be waiting for it
        self._forks.clear()

    async def fork(self) -> Child:
        sock = self._sock
        if sock is None or not self.alive:
            raise ZygoteGone()
        future = asyncio.get_running_loop().create_future()
        self._forks.append(future)
        sock.send(b"fork")
        pid, fd = await asyncio.wait_for(future, 10)
        self.forked += 1
        self._children.add(pid)
        self._idle.clear()
        exited = self._exit_future(pid)
        reader, writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=fd),
                                                            limit=LINE_LIMIT)
        child = Child(pid, reader, writer, exited)
        if await child.receive() != {"ready": True}:
            child.kill()
            raise RuntimeError("sandbox child did not start")
        return child

    async def retire(self, patience_s: float) -> None:
        """Stop once every child it forked has ended (their exit statuses come from it)."""
        try:
            if self._children:
                await asyncio.wait_for(self._idle.wait(), patience_s)
        except asyncio.TimeoutError:
            log.warning("retiring a sandbox zygote with %d children still running",
                        len(self._children))
        await self.close()

    async def close(self) -> None:
        if self._sock is not None:
            self._gone(self._sock)
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


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
        self.zygote = Zygote()
        self._rotating = asyncio.Lock()
        self._warm: list[Child] = []
        self._refilling: set[asyncio.Task] = set()

    async def _new_child(self) -> Child:
        async with self._rotating:
            if not self.zygote.alive:  # first use, or the zygote died: start a new one
                await self.zygote.close()
                self.zygote = Zygote()
                await self.zygote.start()
            elif self.zygote.forked >= ZYGOTE_MAX_FORKS:
                # Forked children share the zygote's memory layout and hash seed: a new
                # zygote now and then bounds how many runs see the same ones.
                retiring, self.zygote = self.zygote, Zygote()
                await self.zygote.start()
                self._background(retiring.retire(RETIRE_PATIENCE_S))
        return await self.zygote.fork()

    def _background(self, coroutine) -> None:
        task = asyncio.ensure_future(coroutine)
        self._refilling.add(task)
        task.add_done_callback(self._refilling.discard)

    @property
    def warm(self) -> int:
        return len(self._warm)

    async def start(self) -> None:
        await self._fill()

    async def _fill(self) -> None:
        while len(self._warm) < self.size:
            try:
                self._warm.append(await self._new_child())
            except Exception:  # noqa: BLE001 - keep serving with what we have
                log.exception("could not start a sandbox child")
                return

    def _refill_later(self) -> None:
        self._background(self._fill())

    async def take(self) -> Child:
        if self.running >= self.max_running:
            raise Busy()
        self.running += 1
        try:
            child = self._warm.pop() if self._warm else await self._new_child()
        except BaseException:
            self.running -= 1
            raise
        self._refill_later()
        return child

    def give_back(self) -> None:
        self.running -= 1

    async def close(self) -> None:
        for task in list(self._refilling):  # refills and retiring zygotes
            task.cancel()
        for child in self._warm:
            child.kill()
        self._warm.clear()
        await self.zygote.close()


async def run_job(child: Child, job: dict, db_call: DbCall, timeout_s: float,
                  cancelled: asyncio.Event, verbose: bool = False) -> Outcome:
    """Send the job, answer its db calls, and end it on the wall clock or on cancel. With
    `verbose`, each recorded db operation also holds a summary of its params (secrets
    redacted, documents reduced to their size, as in the audit trail)."""
    started = time.perf_counter()
    operations: list = []
    outcome: Outcome | None = None

    async def converse() -> Outcome:
        calls = 0
        await child.send(job)
        while True:
            message = await child.receive()
            if message is None:
                await child.wait()
                return _died(child)
            if "done" in message:
                done = message["done"]
                return Outcome(done.get("status", "failed"), done.get("result"),
                               done.get("error"), done.get("output", ""),
                               done.get("cpu_ms"), done.get("peak_memory_kb"))
            calls += 1
            method, params = message.get("call"), message.get("params")
            began = time.perf_counter()
            answer: Any  # the call's result when ok, else its JSON-RPC error (a dict)
            if calls > MAX_DB_CALLS:
                ok, answer = False, {"code": -32005, "message": f"more than {MAX_DB_CALLS} "
                                     "db calls in one run", "data": {"type": "too_many_calls"}}
            else:
                # str(): the child's message is untrusted; db_call refuses unknown names.
                ok, answer = await db_call(str(method),
                                           params if isinstance(params, dict) else {})
            if len(operations) < MAX_RECORDED_OPERATIONS:
                operation = {"method": str(method)[:100],
                             "duration_ms": round((time.perf_counter() - began) * 1000, 3),
                             "ok": ok, **({} if ok else {
                                 "error": storable_text(str(answer.get("message")))[:500]})}
                if verbose and isinstance(params, dict):
                    operation["params"] = json.loads(summarize(params))
                operations.append(operation)
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
            await asyncio.wait_for(child.wait(), 5)
        except (asyncio.TimeoutError, ZygoteGone):
            log.error("no exit status for sandbox child %s", child.pid)
    outcome.duration_ms = round((time.perf_counter() - started) * 1000, 3)
    outcome.db_operations = operations
    return outcome


def _died(child: Child) -> Outcome:
    code = child.returncode
    if code in (-signal.SIGXCPU, -signal.SIGKILL):
        return Outcome("timed_out", error={"type": "cpu_limit",
                                           "message": "the run used up its CPU time"})
    if code == -signal.SIGXFSZ:
        return Outcome("failed", error={"type": "file_write",
                                        "message": "writing files is not allowed"})
    return Outcome("failed", error={"type": "crashed",
                                    "message": f"the run's process ended unexpectedly ({code})"})
