"""Eager start of coroutines (what Python 3.12's eager tasks do, for 3.11).

A batch's members run concurrently, but most of them wait for nothing (their reads were
prefetched, the caller is known): run each one at once, up to its first wait, and make a
Task only for the ones that do wait. That saves a Task, a scheduling round and a wake-up
per member, a tenth of a batch's time."""
from __future__ import annotations

import asyncio
import types
from typing import Any, Coroutine


def start_eagerly(coro: Coroutine) -> asyncio.Future:
    """A future of the coroutine's result; the coroutine has run up to its first wait."""
    loop = asyncio.get_running_loop()
    try:
        awaited = coro.send(None)
    except StopIteration as finished:
        future = loop.create_future()
        future.set_result(finished.value)
        return future
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - the caller meets it through the future
        future = loop.create_future()
        future.set_exception(exc)
        return future
    return loop.create_task(_go_on(coro, awaited))


@types.coroutine
def _go_on(coro: Coroutine, awaited: Any):
    """Drive a started coroutine on in a Task: the Task first waits for what the coroutine
    waits for (the same future, so cancelling the Task cancels that wait, as usual), then
    resumes it where it stopped."""
    try:
        yield awaited
    except BaseException as exc:  # thrown into the Task (e.g. cancelled): the coroutine's
        try:
            awaited = coro.throw(exc)
        except StopIteration as finished:
            return finished.value
        return (yield from _go_on(coro, awaited))
    return (yield from coro)
