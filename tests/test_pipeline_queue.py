"""The run queue: run_pipeline with wait: false returns at once and the queue runs it, many
queued runs all complete, queued runs survive a restart, and a run of a killed server is
marked interrupted."""
from __future__ import annotations

import asyncio
import signal
import time
import uuid

from rpc_server.client import FlexDBClient

from .conftest import migrated_database, server_with_sandbox, unique
from .pipeline_helpers import RUN_KEYS, SPIN, all_runs, get_run, make_pipeline, run, sql, wait_for

# ---------------------------------------------------------------- the queue

async def test_wait_false_returns_at_once_and_the_queue_runs_it(rpc, tenant):
    t = tenant["id"]
    code = ("def run(input, db):\n"
            "    total = 0\n"
            "    for i in range(200000):\n"
            "        total += i\n"
            "    print('summed')\n"
            "    return {'input': input, 'total': total}\n")
    pipeline = await make_pipeline(rpc, t, code)
    started = time.monotonic()
    queued = await run(rpc, t, pipeline["id"], {"n": 1}, wait=False)
    assert time.monotonic() - started < 2
    assert set(queued) >= RUN_KEYS
    assert queued["status"] == "queued" and queued["result"] is None
    assert queued["started_at"] is None and queued["finished_at"] is None
    assert queued["input"] == {"n": 1}
    done = await wait_for(rpc, t, queued["id"], ("succeeded", "failed", "timed_out"))
    assert done["status"] == "succeeded"
    assert done["result"] == {"input": {"n": 1}, "total": sum(range(200000))}
    assert done["output"] == "summed\n" and done["duration_ms"] > 0
    assert done["started_at"] >= done["created_at"]


async def test_a_queued_run_has_the_same_shape_as_any_run(rpc, tenant):
    pipeline = await make_pipeline(rpc, tenant["id"])
    queued = await run(rpc, tenant["id"], pipeline["id"], 1, wait=False)
    assert set(queued) == RUN_KEYS


async def test_many_queued_runs_all_complete(rpc, tenant, node_type):
    t = tenant["id"]
    code = ("def run(input, db):\n"
            "    node = db.create_node(input['nt'], {'name': 'n' + str(input['i'])})['node']\n"
            "    return input['i'] * 2\n")
    pipeline = await make_pipeline(rpc, t, code)
    queued = await asyncio.gather(*[run(rpc, t, pipeline["id"], {"nt": node_type["id"], "i": i},
                                        wait=False) for i in range(12)])
    assert {q["status"] for q in queued} <= {"queued", "running", "succeeded"}
    finished = [await wait_for(rpc, t, q["id"], ("succeeded", "failed", "timed_out",
                                                   "cancelled"), timeout=30) for q in queued]
    assert [f["status"] for f in finished] == ["succeeded"] * 12
    assert sorted(f["result"] for f in finished) == [i * 2 for i in range(12)]
    nodes = await rpc.call("list_nodes", {"tenant_id": t, "pagination": {"page_size": 100}})
    assert sorted(n["data"]["name"] for n in nodes["nodes"]) == sorted(f"n{i}" for i in range(12))
    assert len(await all_runs(rpc, t, status="succeeded")) == 12


# ---------------------------------------------------------------- restarts
# Sync tests: starting and stopping servers blocks, and migrated_database runs its own loop.

NODE_WRITER = ("def run(input, db):\n"
               "    db.create_node(input['nt'], {'name': input['name']})\n"
               "    return input['name']\n")


async def _tenant_with_node_type(c) -> tuple[str, str]:
    t = (await c.call("create_tenant", {"slug": unique("r"), "name": "R"}))["tenant"]["id"]
    nt = (await c.call("create_node_type", {"tenant_id": t, "name": "N"}))["node_type"]["id"]
    return t, nt


def test_queued_runs_survive_a_restart(pg_server_url):
    async def queue_runs(srv):
        async with FlexDBClient(srv.url, api_key=srv.admin_key) as c:
            t, nt = await _tenant_with_node_type(c)
            pipeline = await make_pipeline(c, t, NODE_WRITER)
            queued = [(await run(c, t, pipeline["id"], {"nt": nt, "name": f"r{i}"},
                                 wait=False))["id"] for i in range(4)]
            await c.call("cancel_pipeline_run", {"tenant_id": t, "id": queued[1]})
            await asyncio.sleep(0.6)  # longer than the queue's idle poll
            assert [r["status"] for r in await all_runs(c, t)] == \
                ["queued", "cancelled", "queued", "queued"]
            return t, queued

    async def check_runs(srv, t, queued):
        async with FlexDBClient(srv.url, api_key=srv.admin_key) as c:
            for i in (0, 2, 3):
                done = await wait_for(c, t, queued[i], ("succeeded", "failed"), 20)
                assert (done["status"], done["result"]) == ("succeeded", f"r{i}")
                assert done["started_at"] is not None
            await asyncio.sleep(0.6)
            never = await get_run(c, t, queued[1])
            assert never["status"] == "cancelled" and never["started_at"] is None
            nodes = (await c.call("list_nodes", {"tenant_id": t}))["nodes"]
            assert sorted(n["data"]["name"] for n in nodes) == ["r0", "r2", "r3"]

    with migrated_database(pg_server_url) as url:
        with server_with_sandbox(url, FLEXDB_PIPELINE_QUEUE_CONCURRENCY="0") as first:
            t, queued = asyncio.run(queue_runs(first))
        with server_with_sandbox(url, FLEXDB_PIPELINE_QUEUE_CONCURRENCY="2") as second:
            asyncio.run(check_runs(second, t, queued))


def test_a_run_of_a_killed_server_is_marked_interrupted(pg_server_url):
    async def start_long_run(srv):
        async with FlexDBClient(srv.url, api_key=srv.admin_key) as c:
            t, _ = await _tenant_with_node_type(c)
            pipeline = await make_pipeline(c, t, SPIN, timeout_ms=1000)
            queued = await run(c, t, pipeline["id"], wait=False)
            await wait_for(c, t, queued["id"], "running", timeout=10)
            return t, queued["id"]

    async def check_swept(srv, t, run_id, killed_at):
        async with FlexDBClient(srv.url, api_key=srv.admin_key) as c:
            if time.monotonic() - killed_at < 9:  # not yet 10 s past its deadline: left alone
                assert (await get_run(c, t, run_id))["status"] == "running"
            final = await wait_for(c, t, run_id, ("failed", "succeeded", "timed_out"),
                                   timeout=25)
            assert final["status"] == "failed"
            assert final["error"] == {"type": "interrupted",
                                      "message": "the server running it stopped"}
            assert final["finished_at"] is not None
            fresh = await make_pipeline(c, t)  # and the new server runs pipelines
            assert (await run(c, t, fresh["id"], "after"))["result"] == "after"

    with migrated_database(pg_server_url) as url:
        with server_with_sandbox(url) as first:
            t, run_id = asyncio.run(start_long_run(first))
            first.proc.send_signal(signal.SIGKILL)
            first.proc.wait(10)
            killed_at = time.monotonic()
        rows = asyncio.run(sql(url, "SELECT status FROM pipeline_runs WHERE id = $1",
                               uuid.UUID(run_id)))
        assert rows[0]["status"] == "running"  # nobody recorded its end
        with server_with_sandbox(url) as second:
            asyncio.run(check_swept(second, t, run_id, killed_at))
