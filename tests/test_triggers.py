"""Triggers (webhooks that name a pipeline instead of a URL) through the public API, a real
server and a sandbox worker: each matching change runs the pipeline once, with the event as
list_changes has it as input, one run at a time in position order, as queued runs of the
tenant (its caps apply); a failing pipeline is retried and the trigger then pauses; a trigger
runs as its creator, checked again before each run; only tenant admins set triggers up."""
from __future__ import annotations

import asyncio
import time

import pytest

from rpc_server.client import FlexDBClient, Forbidden, InvalidParams, NotFound

from .auth_helpers import WEBHOOK_URL, new_user
from .conftest import (
    TEST_SANDBOX_SECRET,
    make_node,
    make_node_type,
    make_tenant,
    migrated_database,
    own_user_id,
    running_server,
    server_with_sandbox,
)
from .pipeline_helpers import all_runs, make_pipeline, run, wait_for

FAST = {"FLEXDB_WEBHOOK_RETRY_BASE_S": "0.05", "FLEXDB_WEBHOOK_RETRY_MAX_S": "0.2",
        "FLEXDB_WEBHOOK_PAUSE_AFTER_FAILURES": "3", "FLEXDB_WEBHOOK_CONNECT_TIMEOUT_S": "1",
        "FLEXDB_WEBHOOK_TIMEOUT_S": "2", "FLEXDB_WEBHOOK_LEASE_S": "5",
        # one run of a tenant at a time, two queued at most: the caps test fills them
        "FLEXDB_PIPELINE_TENANT_RUNNING": "1", "FLEXDB_PIPELINE_TENANT_QUEUED": "2"}
# Logs the event's position as a node of the node type `log`: the trigger's filter watches
# another node type, so the pipeline's own writes do not trigger it again.
LOGGER = ("def run(input, db):\n"
          "    db.create_node('{log}', {{'position': input['position']}})\n"
          "    return input['position']\n")
ECHO = "def run(input, db):\n    return input\n"
FAILING = "def run(input, db):\n    raise ValueError('no thanks')\n"
SPIN = "def run(input, db):\n    n = 0\n    while True:\n        n += 1\n"


@pytest.fixture(scope="module")
def trigger_server(pg_server_url):
    with migrated_database(pg_server_url) as url, server_with_sandbox(url, **FAST) as srv:
        srv.database_url = url
        yield srv


@pytest.fixture
async def rpc(trigger_server):
    async with FlexDBClient(trigger_server.url, api_key=trigger_server.admin_key) as client:
        yield client


async def trigger(rpc, t, pipeline_id, **extra) -> dict:
    created = await rpc.call("create_webhook", {"tenant_id": t, "pipeline_id": pipeline_id,
                                                **extra})
    assert created["secret"] is None
    return created["webhook"]


async def get_hook(rpc, t, hook_id) -> dict:
    return (await rpc.call("get_webhook", {"tenant_id": t, "id": hook_id}))["webhook"]


async def wait_hook(rpc, t, hook_id, check, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        hook = await get_hook(rpc, t, hook_id)
        if check(hook):
            return hook
        assert time.monotonic() < deadline, str(hook)
        await asyncio.sleep(0.05)


async def deliveries(rpc, t, hook_id) -> list[dict]:
    return (await rpc.call("list_webhook_deliveries", {
        "tenant_id": t, "webhook_id": hook_id, "pagination": {"page_size": 100}}))["deliveries"]


async def changes_after(rpc, t, after) -> list[dict]:
    return (await rpc.call("list_changes", {"tenant_id": t, "after": after,
                                            "limit": 1000}))["changes"]


def by_creation(runs: list[dict]) -> list[dict]:
    return sorted(runs, key=lambda r: (r["created_at"], r["id"]))


async def test_a_trigger_runs_its_pipeline_once_per_matching_change_in_order(rpc):
    t = (await make_tenant(rpc))["id"]
    watched = await make_node_type(rpc, t)
    log = await make_node_type(rpc, t, "log")
    other = await make_node_type(rpc, t)
    pipeline = await make_pipeline(rpc, t, LOGGER.format(log=log["id"]))
    hook = await trigger(rpc, t, pipeline["id"], filter={"node_type_id": watched["id"]})
    assert hook["url"] is None and hook["secret_hint"] is None
    assert hook["pipeline_id"] == pipeline["id"] and hook["status"] == "active"
    start = hook["delivered_position"]

    nodes = []
    for i in range(4):
        nodes.append(await make_node(rpc, t, watched["id"], {"n": i}))
        await make_node(rpc, t, other["id"], {"n": i})  # not matched by the filter
    await rpc.call("update_node", {"tenant_id": t, "id": nodes[0]["id"], "data": {"n": 9}})
    await rpc.call("delete_node", {"tenant_id": t, "id": nodes[1]["id"]})
    expected = [e for e in await changes_after(rpc, t, start)
                if e["node_type_id"] == watched["id"]]
    assert [e["operation"] for e in expected] == ["create"] * 4 + ["update", "delete"]

    done = await wait_hook(rpc, t, hook["id"], lambda h: h["delivered_position"]
                           >= expected[-1]["position"] and h["run_id"] is None)
    assert done["status"] == "active" and done["failures"] == 0
    runs = by_creation(await all_runs(rpc, t, pipeline_id=pipeline["id"]))
    # once per matching event, in position order, the event (as list_changes has it) as input
    assert [r["input"] for r in runs] == expected
    assert [r["status"] for r in runs] == ["succeeded"] * len(expected)
    assert [r["result"] for r in runs] == [e["position"] for e in expected]
    for before, after in zip(runs, runs[1:]):  # one run in flight per trigger
        assert after["created_at"] >= before["finished_at"]
    # run as the trigger's creator (the platform admin here), through the run's db
    me = await own_user_id(rpc)
    assert hook["created_by_user_id"] == me
    assert {(r["actor_user_id"], r["actor_key_id"]) for r in runs} == {
        (me, hook["created_by_key_id"])}
    logs = [e for e in await changes_after(rpc, t, start) if e["kind"] == "node"
            and e["node_type_id"] == log["id"]]
    assert [e["object"]["data"]["position"] for e in logs] == [e["position"] for e in expected]
    assert {e["actor"]["key_id"] for e in logs} == {hook["created_by_key_id"]}
    assert [e["actor"]["run_id"] for e in logs] == [r["id"] for r in runs]

    # one delivery record per event, naming its run
    records = await deliveries(rpc, t, hook["id"])
    assert [(d["position"], d["status"], d["attempts"], d["run_id"]) for d in records] == [
        (e["position"], "delivered", 1, r["id"]) for e, r in zip(expected, runs)]
    # the runs are in the audit trail, made by the creator
    trail = (await rpc.call("list_audit_events", {
        "tenant_id": t, "method": "run_pipeline",
        "pagination": {"page_size": 100}}))["audit_events"]
    assert sorted(e["target_id"] for e in trail) == sorted(r["id"] for r in runs)


async def test_changes_made_by_a_trigger_s_runs_fire_no_trigger(rpc):
    """A trigger that watches every node, whose pipeline writes nodes: without the rule it
    would run again for each of its own writes, without end (and a second trigger would
    answer the first's writes, and so on)."""
    t = (await make_tenant(rpc))["id"]
    nodes_type = await make_node_type(rpc, t)
    log = await make_node_type(rpc, t, "log")
    pipeline = await make_pipeline(rpc, t, LOGGER.format(log=log["id"]))
    first = await trigger(rpc, t, pipeline["id"], filter={"kinds": ["node"]})
    second = await trigger(rpc, t, pipeline["id"], filter={"kinds": ["node"]})
    made = [await make_node(rpc, t, nodes_type["id"], {"n": i}) for i in range(2)]
    head = (await rpc.call("list_changes", {"tenant_id": t, "limit": 1}))["head"]
    for hook in (first, second):
        await wait_hook(rpc, t, hook["id"], lambda h: h["run_id"] is None
                        and h["delivered_position"] >= head)
    await asyncio.sleep(1.0)  # time to run again, were the runs' own writes to fire them
    runs = await all_runs(rpc, t, pipeline_id=pipeline["id"])
    assert len(runs) == 4  # each trigger, once for each of the two nodes made by hand
    assert sorted(r["input"]["id"] for r in runs) == sorted([n["id"] for n in made] * 2)
    logs = [e for e in await changes_after(rpc, t, 0) if e["node_type_id"] == log["id"]]
    assert len(logs) == 4 and all(e["actor"]["run_id"] for e in logs)
    # the feed itself, streams and URL webhooks still see the runs' writes
    for hook in (first, second):
        assert (await rpc.call("get_webhook", {"tenant_id": t, "id": hook["id"]}))[
            "webhook"]["status"] == "active"


async def test_a_failing_pipeline_is_retried_then_the_trigger_pauses(rpc):
    t = (await make_tenant(rpc))["id"]
    nt = await make_node_type(rpc, t)
    pipeline = await make_pipeline(rpc, t, FAILING)
    hook = await trigger(rpc, t, pipeline["id"])
    node = await make_node(rpc, t, nt["id"])
    paused = await wait_hook(rpc, t, hook["id"], lambda h: h["status"] == "paused")
    assert paused["paused_reason"] == "failing" and paused["failures"] == 3
    assert "no thanks" in paused["last_error"] and paused["run_id"] is None
    runs = by_creation(await all_runs(rpc, t, pipeline_id=pipeline["id"]))
    assert [r["status"] for r in runs] == ["failed"] * 3
    event = runs[0]["input"]
    assert event["id"] == node["id"] and all(r["input"] == event for r in runs)
    [record] = await deliveries(rpc, t, hook["id"])
    assert record["status"] == "failed" and record["attempts"] == 3
    assert record["run_id"] == runs[-1]["id"] and runs[-1]["id"] in record["last_error"]
    assert record["position"] == event["position"]

    # fixed and resumed: the same event runs again, and succeeds
    await rpc.call("update_pipeline", {"tenant_id": t, "id": pipeline["id"], "code": ECHO})
    await rpc.call("update_webhook", {"tenant_id": t, "id": hook["id"], "status": "active"})
    done = await wait_hook(rpc, t, hook["id"],  # (update_pipeline's own event runs too)
                           lambda h: h["delivered_position"] >= event["position"]
                           and h["run_id"] is None)
    assert done["status"] == "active" and done["failures"] == 0
    runs = by_creation(await all_runs(rpc, t, pipeline_id=pipeline["id"]))
    assert [r["status"] for r in runs[:4]] == ["failed"] * 3 + ["succeeded"]
    assert runs[3]["result"] == event


async def test_the_runs_are_queued_runs_of_the_tenant_counted_against_its_caps(rpc):
    t = (await make_tenant(rpc))["id"]
    nt = await make_node_type(rpc, t)
    spin = await make_pipeline(rpc, t, SPIN, timeout_ms=1000)
    echo = await make_pipeline(rpc, t, ECHO)
    hook = await trigger(rpc, t, echo["id"])
    # the tenant's one running slot and both queued slots taken
    spins = [await run(rpc, t, spin["id"], wait=False) for _ in range(3)]
    await wait_for(rpc, t, spins[0]["id"], "running")
    await make_node(rpc, t, nt["id"])
    await asyncio.sleep(0.5)
    waiting = await get_hook(rpc, t, hook["id"])  # queue full: waiting, not failing
    assert waiting["run_id"] is None and waiting["failures"] == 0
    assert waiting["status"] == "active"
    assert await all_runs(rpc, t, pipeline_id=echo["id"]) == []
    done = await wait_hook(rpc, t, hook["id"], lambda h: h["run_id"] is None
                           and h["delivered_position"] > hook["delivered_position"], timeout=20)
    assert done["failures"] == 0 and done["status"] == "active"
    [ran] = await all_runs(rpc, t, pipeline_id=echo["id"])
    assert ran["status"] == "succeeded"
    # it waited its turn behind the tenant's queued runs (one running at a time)
    spun = [await wait_for(rpc, t, s["id"], ("timed_out", "failed")) for s in spins]
    assert ran["started_at"] >= max(s["finished_at"] for s in spun[:2])


async def test_a_trigger_runs_as_its_creator_checked_before_each_run(rpc, trigger_server):
    t = (await make_tenant(rpc))["id"]
    nt = await make_node_type(rpc, t)
    echo = await make_pipeline(rpc, t, ECHO)
    user, key = await new_user(rpc)
    await rpc.call("add_user_to_tenant", {"tenant_id": t, "user_id": user["id"],
                                          "role": "admin"})
    async with FlexDBClient(trigger_server.url, api_key=key) as theirs:
        hook = await trigger(theirs, t, echo["id"], filter={"kinds": ["node"]})
    assert hook["created_by_user_id"] == user["id"]
    await make_node(rpc, t, nt["id"])
    await wait_hook(rpc, t, hook["id"], lambda h: h["run_id"] is None
                    and h["delivered_position"] > hook["delivered_position"])
    [first] = await all_runs(rpc, t, pipeline_id=echo["id"])
    assert first["actor_user_id"] == user["id"] and first["actor_key_id"] == \
        hook["created_by_key_id"]

    # demoted below what running a pipeline needs: paused, nothing runs
    await rpc.call("update_tenant_user_role", {"tenant_id": t, "user_id": user["id"],
                                               "role": "viewer"})
    await make_node(rpc, t, nt["id"])
    paused = await wait_hook(rpc, t, hook["id"], lambda h: h["status"] == "paused")
    assert paused["paused_reason"] == "creator_unauthorized"
    assert "viewer" in paused["last_error"]
    assert len(await all_runs(rpc, t, pipeline_id=echo["id"])) == 1
    await rpc.call("remove_user_from_tenant", {"tenant_id": t, "user_id": user["id"]})

    # resumed by an admin: it now runs as them
    resumed = await rpc.call("update_webhook", {"tenant_id": t, "id": hook["id"],
                                                "status": "active"})
    assert resumed["webhook"]["created_by_user_id"] != user["id"]
    done = await wait_hook(rpc, t, hook["id"], lambda h: h["run_id"] is None
                           and h["delivered_position"] > paused["delivered_position"])
    assert done["status"] == "active"
    runs = by_creation(await all_runs(rpc, t, pipeline_id=echo["id"]))
    assert len(runs) == 2 and runs[1]["actor_user_id"] == resumed["webhook"]["created_by_user_id"]


async def test_a_revoked_creator_key_pauses_the_trigger(rpc, trigger_server):
    t = (await make_tenant(rpc))["id"]
    nt = await make_node_type(rpc, t)
    echo = await make_pipeline(rpc, t, ECHO)
    user, key = await new_user(rpc)
    await rpc.call("add_user_to_tenant", {"tenant_id": t, "user_id": user["id"],
                                          "role": "admin"})
    async with FlexDBClient(trigger_server.url, api_key=key) as theirs:
        hook = await trigger(theirs, t, echo["id"])
    await rpc.call("revoke_api_key", {"id": hook["created_by_key_id"]})
    await make_node(rpc, t, nt["id"])
    paused = await wait_hook(rpc, t, hook["id"], lambda h: h["status"] == "paused")
    assert paused["paused_reason"] == "creator_unauthorized"
    assert "revoked" in paused["last_error"]
    assert await all_runs(rpc, t, pipeline_id=echo["id"]) == []


async def test_create_update_and_redeliver_refuse_what_a_trigger_cannot_be(rpc, trigger_server):
    t = (await make_tenant(rpc))["id"]
    echo = await make_pipeline(rpc, t, ECHO)
    for params in ({"url": WEBHOOK_URL, "pipeline_id": echo["id"]}, {},
                   {"pipeline_id": echo["id"], "secret": "whsec_" + "A" * 32}):
        with pytest.raises(InvalidParams):
            await rpc.call("create_webhook", {"tenant_id": t, **params})
    other = (await make_tenant(rpc))["id"]
    foreign = await make_pipeline(rpc, other, ECHO)
    with pytest.raises(NotFound):  # another tenant's pipeline answers as a missing one
        await rpc.call("create_webhook", {"tenant_id": t, "pipeline_id": foreign["id"]})
    for role in ("viewer", "member"):
        user, key = await new_user(rpc)
        await rpc.call("add_user_to_tenant", {"tenant_id": t, "user_id": user["id"],
                                              "role": role})
        async with FlexDBClient(trigger_server.url, api_key=key) as theirs:
            with pytest.raises(Forbidden) as err:
                await theirs.call("create_webhook", {"tenant_id": t, "pipeline_id": echo["id"]})
            assert err.value.code == -32003

    hook = await trigger(rpc, t, echo["id"])
    with pytest.raises(InvalidParams):  # a trigger has no URL
        await rpc.call("update_webhook", {"tenant_id": t, "id": hook["id"], "url": WEBHOOK_URL})
    url_hook = (await rpc.call("create_webhook", {"tenant_id": t, "url": WEBHOOK_URL}))
    assert url_hook["secret"].startswith("whsec_") and url_hook["webhook"]["pipeline_id"] is None
    with pytest.raises(InvalidParams):  # a URL webhook runs no pipeline
        await rpc.call("update_webhook", {"tenant_id": t, "id": url_hook["webhook"]["id"],
                                          "pipeline_id": echo["id"]})
    with pytest.raises(InvalidParams):
        await rpc.call("redeliver", {"tenant_id": t, "webhook_id": hook["id"], "position": 1})
    with pytest.raises(NotFound):
        await rpc.call("update_webhook", {"tenant_id": t, "id": hook["id"],
                                          "pipeline_id": foreign["id"]})
    # deleting the pipeline deletes its triggers
    await rpc.call("delete_pipeline", {"tenant_id": t, "id": echo["id"]})
    with pytest.raises(NotFound):
        await get_hook(rpc, t, hook["id"])


async def test_two_servers_run_each_event_once_in_order(rpc, trigger_server, events: int = 12):
    t = (await make_tenant(rpc))["id"]
    nt = await make_node_type(rpc, t)
    echo = await make_pipeline(rpc, t, ECHO)
    hooks = [await trigger(rpc, t, echo["id"], filter={"kinds": ["node"]}) for _ in range(2)]
    start = hooks[0]["delivered_position"]
    # a second server on the same database (and sandbox worker) shares the triggers' work
    with running_server({"FLEXDB_DATABASE_URL": trigger_server.database_url,
                         "FLEXDB_SANDBOX_URL": trigger_server.sandbox.base,
                         "FLEXDB_SANDBOX_SECRET": TEST_SANDBOX_SECRET, **FAST}) as two:
        async with FlexDBClient(two.url, api_key=trigger_server.admin_key) as other:
            await asyncio.gather(*(make_node(client, t, nt["id"], {"i": i})
                                   for i in range(events) for client in [(rpc, other)[i % 2]]))
            expected = [e["position"] for e in await changes_after(rpc, t, start)
                        if e["kind"] == "node"]
            assert len(expected) == events
            for hook in hooks:
                await wait_hook(rpc, t, hook["id"], lambda h: h["run_id"] is None
                                and h["delivered_position"] >= expected[-1], timeout=40)
    runs = await all_runs(rpc, t, pipeline_id=echo["id"])
    assert len(runs) == 2 * events and {r["status"] for r in runs} == {"succeeded"}
    for hook in hooks:
        mine = by_creation([r for r in runs if r["id"] in {
            d["run_id"] for d in await deliveries(rpc, t, hook["id"])}])
        assert [r["input"]["position"] for r in mine] == expected  # once each, in order
        for before, after in zip(mine, mine[1:]):
            assert after["created_at"] >= before["finished_at"]
