"""cancel_pipeline_run: a queued run, a running run (its child is stopped), a run someone is
waiting for, a cancel while the worker starts the child; finished runs cannot be
cancelled."""
from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from rpc_server.client import Conflict, FlexDBClient, NotFound, PipelineFailed

from .conftest import migrated_database, missing_id, server_with_sandbox, unique
from .pipeline_helpers import (
    FAILING,
    SPIN,
    all_runs,
    audit_events,
    failed_run,
    get_run,
    make_pipeline,
    run,
    wait_for,
)

# ---------------------------------------------------------------- cancel

async def sandbox_running(worker) -> int:
    async with httpx.AsyncClient() as http:
        return (await http.get(worker.base + "/health", timeout=5)).json()["running"]



async def test_cancel_a_queued_run(idle):
    async with FlexDBClient(idle.url, api_key=idle.admin_key) as c:
        t = (await c.call("create_tenant", {"slug": unique("q"), "name": "Q"}))["tenant"]["id"]
        pipeline = await make_pipeline(c, t)
        queued = await run(c, t, pipeline["id"], "hello", wait=False)
        await asyncio.sleep(0.6)  # longer than the queue's idle poll: nobody takes it
        assert (await get_run(c, t, queued["id"]))["status"] == "queued"
        cancelled = (await c.call("cancel_pipeline_run", {"tenant_id": t, "id": queued["id"]}))[
            "run"]
        assert cancelled["status"] == "cancelled"
        assert cancelled["error"] == {"type": "cancelled", "message": "the run was cancelled"}
        assert cancelled["started_at"] is None and cancelled["finished_at"] is not None
        assert cancelled["result"] is None and cancelled["output"] == ""
        assert cancelled["db_operations"] == []
        assert await get_run(c, t, queued["id"]) == cancelled
        with pytest.raises(Conflict) as exc:
            await c.call("cancel_pipeline_run", {"tenant_id": t, "id": queued["id"]})
        assert exc.value.code == -32004 and exc.value.data["status"] == "cancelled"
        assert [r["id"] for r in await all_runs(c, t, status="cancelled")] == [queued["id"]]
        events = await audit_events(c, t, method="cancel_pipeline_run")
        assert [(e["target_kind"], e["target_id"]) for e in events] == \
            [("pipeline_run", queued["id"])]


async def test_cancel_a_running_run(server, rpc, tenant):
    t = tenant["id"]
    pipeline = await make_pipeline(rpc, t, SPIN, timeout_ms=10_000)
    queued = await run(rpc, t, pipeline["id"], wait=False)
    await wait_for(rpc, t, queued["id"], "running", timeout=10)
    deadline = time.monotonic() + 5
    while await sandbox_running(server.sandbox) == 0:  # the worker has it
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    started = time.monotonic()
    cancelled = (await rpc.call("cancel_pipeline_run", {"tenant_id": t, "id": queued["id"]}))[
        "run"]
    assert cancelled["status"] == "cancelled" and cancelled["started_at"] is not None
    while await sandbox_running(server.sandbox) > 0:  # the child was stopped, not left to spin
        assert time.monotonic() - started < 3, "the cancelled run is still running"
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    final = await get_run(rpc, t, queued["id"])
    assert final["status"] == "cancelled"
    assert final["error"]["type"] == "cancelled"
    with pytest.raises(Conflict):
        await rpc.call("cancel_pipeline_run", {"tenant_id": t, "id": queued["id"]})


async def test_cancel_a_run_someone_is_waiting_for(server, rpc, tenant):
    t = tenant["id"]
    pipeline = await make_pipeline(rpc, t, SPIN, timeout_ms=10_000)
    waiting = asyncio.ensure_future(run(rpc, t, pipeline["id"], "w"))
    deadline = time.monotonic() + 10
    while True:
        running = await all_runs(rpc, t, status="running", pipeline_id=pipeline["id"])
        if running and await sandbox_running(server.sandbox):
            break
        assert time.monotonic() < deadline and not waiting.done()
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    started = time.monotonic()
    await rpc.call("cancel_pipeline_run", {"tenant_id": t, "id": running[0]["id"]})
    with pytest.raises(PipelineFailed) as exc:
        await asyncio.wait_for(waiting, 5)
    assert time.monotonic() - started < 3
    answered = exc.value.data["run"]
    assert (answered["id"], answered["status"]) == (running[0]["id"], "cancelled")
    assert "cancelled" in exc.value.message
    assert (await get_run(rpc, t, answered["id"]))["status"] == "cancelled"


def test_a_cancel_while_the_worker_starts_the_child_stops_the_run(pg_server_url):
    async def cancel_at_once(srv):
        async with FlexDBClient(srv.url, api_key=srv.admin_key) as c:
            t = (await c.call("create_tenant", {"slug": unique("c"), "name": "C"}))["tenant"][
                "id"]
            pipeline = await make_pipeline(c, t, SPIN, timeout_ms=3000)
            waiting = asyncio.ensure_future(run(c, t, pipeline["id"], "w"))
            while not (running := await all_runs(c, t, status="running")):
                await asyncio.sleep(0.01)
            started = time.monotonic()
            await c.call("cancel_pipeline_run", {"tenant_id": t, "id": running[0]["id"]})
            with pytest.raises(PipelineFailed) as exc:
                await waiting
            assert exc.value.data["run"]["status"] == "cancelled"
            assert time.monotonic() - started < 2.5, "the cancel did not stop the run"

    with migrated_database(pg_server_url) as url:
        # No warm child: the worker's take() has to make one (the first starts the zygote).
        with server_with_sandbox(url, sandbox_env={"FLEXDB_SANDBOX_POOL_SIZE": "0"}) as srv:
            asyncio.run(cancel_at_once(srv))


async def test_a_finished_run_cannot_be_cancelled(rpc, tenant):
    t = tenant["id"]
    pipeline = await make_pipeline(rpc, t, FAILING)
    for finished in (await run(rpc, t, pipeline["id"], 1), await failed_run(rpc, t,
                                                                             pipeline["id"], 0)):
        with pytest.raises(Conflict) as exc:
            await rpc.call("cancel_pipeline_run", {"tenant_id": t, "id": finished["id"]})
        assert exc.value.code == -32004 and exc.value.data["status"] == finished["status"]
        assert await get_run(rpc, t, finished["id"]) == finished
    with pytest.raises(NotFound) as exc:
        await rpc.call("cancel_pipeline_run", {"tenant_id": t, "id": missing_id()})
    assert exc.value.data["kind"] == "pipeline_run"
