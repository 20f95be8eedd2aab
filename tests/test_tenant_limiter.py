"""TenantLimiter on its own (security/tenant_limits.py): slots per tenant, waiting in
order, Busy after the wait, and no slot lost to a timeout or a cancellation."""
from __future__ import annotations

import asyncio
import uuid

import pytest

from rpc_server.errors import Busy
from rpc_server.security.tenant_limits import TenantLimiter

A, B = uuid.uuid4(), uuid.uuid4()


async def test_a_tenant_waits_for_its_own_slots_only():
    limiter = TenantLimiter(2, 1.0)
    await limiter.acquire(A)
    await limiter.acquire(A)
    third = asyncio.ensure_future(limiter.acquire(A))
    await asyncio.sleep(0.01)
    assert not third.done()
    await asyncio.wait_for(limiter.acquire(B), 0.1)  # another tenant is not held up
    limiter.release(A)
    await asyncio.wait_for(third, 0.1)  # the slot went to the waiter
    for tenant in (A, A, B):
        limiter.release(tenant)
    assert limiter._slots == {}


async def test_waiters_get_slots_in_arrival_order_and_newcomers_queue_behind():
    limiter = TenantLimiter(1, 1.0)
    await limiter.acquire(A)
    order: list[int] = []

    async def take(n: int) -> None:
        await limiter.acquire(A)
        order.append(n)

    waiting = [asyncio.ensure_future(take(n)) for n in range(3)]
    await asyncio.sleep(0.01)
    limiter.release(A)
    late = asyncio.ensure_future(take(99))  # arrives after a slot was handed on
    for _ in range(3):
        await asyncio.sleep(0.01)
        limiter.release(A)
    await asyncio.gather(*waiting, late)
    assert order == [0, 1, 2, 99]
    limiter.release(A)
    assert limiter._slots == {}


async def test_a_wait_past_wait_s_is_busy_and_leaves_nothing_behind():
    limiter = TenantLimiter(1, 0.05, "pooled database connections", "FLEXDB_TENANT_POOL_MAX")
    await limiter.acquire(A)
    with pytest.raises(Busy) as raised:
        await limiter.acquire(A)
    assert "FLEXDB_TENANT_POOL_MAX" in raised.value.message
    limiter.release(A)
    assert limiter._slots == {}
    await asyncio.wait_for(limiter.acquire(A), 0.1)  # the slot is still there
    limiter.release(A)


async def test_a_cancelled_waiter_passes_on_a_slot_handed_to_it():
    limiter = TenantLimiter(1, 1.0)
    await limiter.acquire(A)
    first = asyncio.ensure_future(limiter.acquire(A))
    second = asyncio.ensure_future(limiter.acquire(A))
    await asyncio.sleep(0.01)
    limiter.release(A)  # the slot goes to `first`, which has not run yet ...
    first.cancel()  # ... and is cancelled before it does
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 0.1)  # the slot was not lost
    limiter.release(A)
    assert limiter._slots == {}


async def test_a_cancelled_waiter_leaves_the_queue():
    limiter = TenantLimiter(1, 1.0)
    await limiter.acquire(A)
    waiter = asyncio.ensure_future(limiter.acquire(A))
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    limiter.release(A)
    assert limiter._slots == {}


async def test_each_wait_ends_at_its_own_deadline():
    # One timer per tenant serves all its waiters: a later waiter is not ended with an
    # earlier one, and still gets a slot freed after the earlier one gave up.
    limiter = TenantLimiter(1, 0.2)
    await limiter.acquire(A)
    early = asyncio.ensure_future(limiter.acquire(A))
    await asyncio.sleep(0.1)
    late = asyncio.ensure_future(limiter.acquire(A))
    await asyncio.sleep(0.15)  # past the early waiter's deadline, not the late one's
    assert early.done() and isinstance(early.exception(), Busy)
    assert not late.done()
    limiter.release(A)
    await asyncio.wait_for(late, 0.05)
    limiter.release(A)
    assert limiter._slots == {}


async def test_a_cancelled_first_waiter_does_not_end_the_next_wait_early():
    limiter = TenantLimiter(1, 0.2)
    await limiter.acquire(A)
    first = asyncio.ensure_future(limiter.acquire(A))
    await asyncio.sleep(0.1)
    second = asyncio.ensure_future(limiter.acquire(A))
    await asyncio.sleep(0.01)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.sleep(0.15)  # the first waiter's deadline has passed
    assert not second.done()
    with pytest.raises(Busy):
        await asyncio.wait_for(second, 0.2)  # its own deadline ends it
    limiter.release(A)
    assert limiter._slots == {}


async def test_a_server_wide_limit_says_so_when_busy():
    # The heavy calls of all tenants share one set (key None) and their own message.
    limiter = TenantLimiter(1, 0.05, busy="Too many heavy calls are running on this server")
    await limiter.acquire(None)
    with pytest.raises(Busy) as raised:
        await limiter.acquire(None)
    assert raised.value.message == "Too many heavy calls are running on this server"
    assert raised.value.data["limit"] == 1
    limiter.release(None)
    assert limiter._slots == {}


async def test_take_finds_a_free_slot_at_once_but_never_one_a_waiter_is_owed():
    """take() (acquire without a coroutine, as every pooled connection takes its tenant's
    share) gets a free slot at once, never jumps the queue, and counts like acquire()."""
    limiter = TenantLimiter(1, 1.0)
    assert limiter.take(A)
    waiter = asyncio.ensure_future(limiter.acquire(A))
    await asyncio.sleep(0.01)
    assert not limiter.take(A)  # the tenant's one slot is taken and a caller waits for it
    assert limiter.take(B)  # another tenant's are its own
    limiter.release(A)
    await asyncio.wait_for(waiter, 0.1)  # the slot went to the waiter, not to take()
    assert not limiter.take(A)
    limiter.release(A)
    limiter.release(B)
    assert limiter._slots == {}  # a failed take() left no count behind
    assert limiter.take(A)
    limiter.release(A)
