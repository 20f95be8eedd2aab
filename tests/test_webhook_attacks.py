"""Attacks on webhooks and triggers found in a security review (issue 21), through the public
API, each refused for the right reason: URLs whose Unicode digits disguise a private address
(at save and at delivery), and retried trigger runs whose writes would fire triggers again."""
from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

import asyncpg
import pytest
from aiohttp import web

from rpc_server.client import InvalidParams

from .conftest import free_port, make_node, make_node_type, make_tenant

# U+1FBF0 SEGMENTED DIGIT ZERO: Python's IDNA 2003 codec (urlsplit, getaddrinfo) keeps it a
# name (xn--…, which does not resolve: "checked again at delivery"), but yarl's UTS 46 mapping,
# which aiohttp connects with, makes "127.0.0.1\U0001fbf0" the address 127.0.0.10, and
# "169.254.169.25\U0001fbf4" the metadata service, connected to without any resolver.
LOOPBACK_HOST = "127.0.0.10"
DISGUISED = "127.0.0.1\U0001fbf0"


@asynccontextmanager
async def loopback_receiver():
    got: list[bytes] = []

    async def handle(request: web.Request) -> web.Response:
        got.append(await request.read())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, LOOPBACK_HOST, port).start()
    try:
        yield port, got
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("url, why", [
    (f"http://{DISGUISED}:{{port}}/hook", "a loopback address (127.0.0.10)"),
    ("http://169.254.169.25\U0001fbf4/latest/meta-data/", "cloud metadata service"),
])
async def test_unicode_digits_do_not_disguise_a_private_address_when_saved(rpc, url, why):
    t = (await make_tenant(rpc))["id"]
    async with loopback_receiver() as (port, got):
        url = url.format(port=port)
        with pytest.raises(InvalidParams) as err:
            created = await rpc.call("create_webhook", {"tenant_id": t, "url": url})
            # (before the fix: accepted, and the events go to the loopback receiver)
            node_type = await make_node_type(rpc, t)
            await make_node(rpc, t, node_type["id"], {"name": "leak"})
            await asyncio.sleep(3)
            pytest.fail(f"accepted {created['webhook']['url']!r}; the receiver got {len(got)}")
        assert err.value.data["errors"][0]["field"] == "url"
        assert why in err.value.message, err.value.message
        hook = (await rpc.call("create_webhook", {"tenant_id": t,
                                                  "url": "https://webhook.invalid/"}))["webhook"]
        with pytest.raises(InvalidParams) as err:
            await rpc.call("update_webhook", {"tenant_id": t, "id": hook["id"], "url": url})
        assert why in err.value.message, err.value.message
        assert got == []


async def test_unicode_digits_do_not_disguise_a_private_address_when_delivering(rpc,
                                                                                database_url):
    """A URL saved before the check knew better (here: written into the table as an older
    server took it) is refused at delivery, naming the address, and nothing is sent."""
    t = (await make_tenant(rpc))["id"]
    async with loopback_receiver() as (port, got):
        hook = (await rpc.call("create_webhook", {"tenant_id": t,
                                                  "url": "https://webhook.invalid/"}))["webhook"]
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute("UPDATE webhooks SET url = $3 WHERE tenant_id = $1 AND id = $2",
                               hook["tenant_id"], hook["id"],
                               f"http://{DISGUISED}:{port}/hook")
        finally:
            await conn.close()
        node_type = await make_node_type(rpc, t)
        await make_node(rpc, t, node_type["id"], {"name": "leak"})
        for _ in range(150):
            got_hook = (await rpc.call("get_webhook", {"tenant_id": t, "id": hook["id"]}))
            if got_hook["webhook"]["last_error"] or got:
                break
            await asyncio.sleep(0.1)
        assert got == [], "the event was POSTed to a loopback address"
        error = got_hook["webhook"]["last_error"]
        assert error and "refused" in error and "loopback" in error, error


# ------------------------------------------------------------ triggers

WRITE_THEN_FAIL = ("def run(input, db):\n"
                   "    db.create_node('{log}', {{'saw': input['id']}})\n"
                   "    raise ValueError('after writing')\n")
ECHO = "def run(input, db):\n    return input\n"


@pytest.fixture(scope="module")
def trigger_server(pg_server_url):
    from .conftest import migrated_database, server_with_sandbox
    from .test_triggers import FAST
    with migrated_database(pg_server_url) as url, server_with_sandbox(url, **FAST) as srv:
        yield srv


async def test_the_writes_of_a_trigger_s_retried_runs_fire_no_trigger(trigger_server):
    """A trigger watching every node whose run writes a node and fails: each retry is a new
    run, whose id replaced the previous one on the delivery record, which was all that
    told the feed that a run was a trigger's. Once the trigger succeeds, the writes of its
    earlier (failed) runs fired it again: a trigger that loops on its own writes."""
    from rpc_server.client import FlexDBClient

    from .pipeline_helpers import all_runs, make_pipeline
    from .test_triggers import trigger, wait_hook
    async with FlexDBClient(trigger_server.url, api_key=trigger_server.admin_key) as rpc:
        t = (await make_tenant(rpc))["id"]
        watched = await make_node_type(rpc, t)
        log = await make_node_type(rpc, t, "log")
        pipeline = await make_pipeline(rpc, t, WRITE_THEN_FAIL.format(log=log["id"]))
        hook = await trigger(rpc, t, pipeline["id"], filter={"kinds": ["node"]})
        node = await make_node(rpc, t, watched["id"])
        await wait_hook(rpc, t, hook["id"], lambda h: h["status"] == "paused")
        failed = await all_runs(rpc, t, pipeline_id=pipeline["id"])
        assert len(failed) == 3 and all(r["status"] == "failed" for r in failed)
        await rpc.call("update_pipeline", {"tenant_id": t, "id": pipeline["id"], "code": ECHO})
        await rpc.call("update_webhook", {"tenant_id": t, "id": hook["id"], "status": "active"})
        head = (await rpc.call("list_changes", {"tenant_id": t, "limit": 1}))["head"]
        await wait_hook(rpc, t, hook["id"], lambda h: h["run_id"] is None
                        and h["delivered_position"] >= head)
        await asyncio.sleep(1.0)
        runs = await all_runs(rpc, t, pipeline_id=pipeline["id"])
        inputs = [r["input"]["id"] for r in runs if r["status"] == "succeeded"]
        assert inputs == [node["id"]], "the trigger ran for its own runs' writes: " + str(
            [(r["input"]["kind"], r["input"]["node_type_id"] == log["id"]) for r in runs
             if r["status"] == "succeeded"])
