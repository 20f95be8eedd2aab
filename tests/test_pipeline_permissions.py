"""Who may manage and run pipelines (viewer, member, admin, owner, a non-member), and that a
member's run writes as the member."""
from __future__ import annotations

import pytest

from rpc_server.client import Conflict, FlexDBClient, Forbidden, NotFound

from .auth_helpers import World, new_user
from .pipeline_helpers import ECHO, all_runs, audit_events, get_run, make_pipeline, run

# ---------------------------------------------------------------- permissions

async def test_who_may_manage_and_run_pipelines(server, rpc):
    world = await World.build(rpc)
    t = world.tid
    clients = {role: FlexDBClient(server.url, api_key=key) for role, key in world.keys.items()}
    _, outsider_key = await new_user(rpc)
    clients["outsider"] = FlexDBClient(server.url, api_key=outsider_key)
    try:
        pipeline = await make_pipeline(clients["admin"], t)
        for role in ("viewer", "member"):
            with pytest.raises(Forbidden) as exc:
                await make_pipeline(clients[role], t)
            assert exc.value.code == -32003 and exc.value.data["required_role"] == "admin"
            for method, params in (("update_pipeline", {"id": pipeline["id"], "name": "x"}),
                                   ("delete_pipeline", {"id": pipeline["id"]})):
                with pytest.raises(Forbidden):
                    await clients[role].call(method, {"tenant_id": t, **params})
        updated = await clients["admin"].call("update_pipeline", {
            "tenant_id": t, "id": pipeline["id"], "description": "by admin"})
        assert updated["pipeline"]["version"] == 2

        with pytest.raises(Forbidden) as exc:
            await run(clients["viewer"], t, pipeline["id"], 1)
        assert exc.value.code == -32003 and exc.value.data["required_role"] == "member"
        with pytest.raises(Forbidden):
            await run(clients["viewer"], t, pipeline["id"], 1, wait=False)
        runs = {}
        for role in ("member", "admin", "owner"):
            runs[role] = await run(clients[role], t, pipeline["id"], role)
            assert (runs[role]["status"], runs[role]["result"]) == ("succeeded", role)
            assert runs[role]["actor_user_id"] == world.users[role]["id"]
        viewer = clients["viewer"]
        assert (await viewer.call("get_pipeline", {"tenant_id": t, "id": pipeline["id"]}))[
            "pipeline"]["code"] == ECHO
        assert len((await viewer.call("list_pipelines", {"tenant_id": t}))["pipelines"]) == 1
        assert (await get_run(viewer, t, runs["member"]["id"]))["result"] == "member"
        assert len(await all_runs(viewer, t)) == 3
        with pytest.raises(Forbidden):
            await viewer.call("cancel_pipeline_run", {"tenant_id": t, "id": runs["member"]["id"]})
        with pytest.raises(Conflict):  # a member may cancel (this one has finished)
            await clients["member"].call("cancel_pipeline_run", {"tenant_id": t,
                                                                  "id": runs["admin"]["id"]})
        outsider = clients["outsider"]
        for method, params in (("get_pipeline", {"id": pipeline["id"]}),
                               ("list_pipelines", {}),
                               ("update_pipeline", {"id": pipeline["id"], "name": "x"}),
                               ("delete_pipeline", {"id": pipeline["id"]}),
                               ("create_pipeline", {"name": "x", "code": ECHO}),
                               ("run_pipeline", {"pipeline_id": pipeline["id"]}),
                               ("get_pipeline_run", {"id": runs["member"]["id"]}),
                               ("list_pipeline_runs", {}),
                               ("cancel_pipeline_run", {"id": runs["member"]["id"]})):
            with pytest.raises(NotFound) as exc:
                await outsider.call(method, {"tenant_id": t, **params})
            assert exc.value.code == -32001 and exc.value.data["kind"] == "tenant", method
        assert len(await all_runs(rpc, t)) == 3  # the refused calls ran nothing
        await clients["admin"].call("delete_pipeline", {"tenant_id": t, "id": pipeline["id"]})
    finally:
        for client in clients.values():
            await client.aclose()


async def test_a_members_run_writes_as_the_member(server, rpc):
    world = await World.build(rpc)
    t = world.tid
    code = ("def run(input, db):\n"
            "    return db.create_node(input, {'who': 'member'})['node']['id']\n")
    pipeline = await make_pipeline(rpc, t, code)
    async with FlexDBClient(server.url, api_key=world.keys["member"]) as m:
        node_id = (await run(m, t, pipeline["id"], world.nt["id"]))["result"]
    node = (await rpc.call("get_node", {"tenant_id": t, "id": node_id}))["node"]
    assert node["data"] == {"who": "member"}
    events = await audit_events(rpc, t, target_id=node_id)
    assert [(e["method"], e["actor_user_id"]) for e in events] == \
        [("create_node", world.users["member"]["id"])]
