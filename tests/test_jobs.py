"""Migration jobs (migrate_nodes, get_job, list_jobs, cancel_job) through the public API, a
real server and a sandbox worker: a stored pipeline applied to each node of a node type in
batches (one map-mode run each, through the fair pipeline queue), each batch applied in one
transaction with one audit event; nodes that fail are left unchanged and listed with why;
jobs can be cancelled, are capped per tenant, are only for tenant admins, and resume after
the server running them is killed, applying each batch once."""
from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from rpc_server.client import (
    Conflict,
    FlexDBClient,
    Forbidden,
    InvalidParams,
    NotFound,
    RateLimited,
)

from .auth_helpers import new_user
from .conftest import (
    ROOT,
    TEST_SANDBOX_SECRET,
    TEST_SECRET,
    ServerProcess,
    admin_key,
    free_port,
    make_node,
    make_node_type,
    make_tenant,
    migrated_database,
    running_sandbox,
    server_with_sandbox,
)
from .pipeline_helpers import audit_events, make_pipeline, sql

JOBS = {"FLEXDB_MIGRATION_BATCH_NODES": "10", "FLEXDB_JOBS_TENANT_ACTIVE": "2",
        "FLEXDB_JOB_LEASE_S": "3"}
V1 = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
V2 = {"type": "object", "properties": {"name": {"type": "string"},
                                       "label": {"type": "string", "minLength": 1}},
      "required": ["name", "label"]}
ADD_LABEL = ("def run(input, db):\n"
             "    out = dict(input)\n"
             "    out['label'] = input['name'].upper()\n"
             "    return out\n")
# Per node, by its name: raise, return a list, return invalid data, keep it, or fix it.
MIXED = ("def run(input, db):\n"
         "    name = input['name']\n"
         "    if name.startswith('boom'):\n"
         "        raise ValueError('cannot migrate ' + name)\n"
         "    if name.startswith('list'):\n"
         "        return [name]\n"
         "    if name.startswith('bad'):\n"
         "        return {'name': name, 'label': ''}\n"
         "    if 'label' in input:\n"
         "        return input\n"
         "    return {'name': name, 'label': name.upper()}\n")
# About a quarter of a second of CPU per node.
SLOW = ("def run(input, db):\n"
        "    n = 0\n"
        "    while n < 1500000:\n"
        "        n += 1\n"
        "    out = dict(input)\n"
        "    out['label'] = input['name'].upper()\n"
        "    return out\n")


@pytest.fixture(scope="module")
def job_server(pg_server_url):
    with migrated_database(pg_server_url) as url, server_with_sandbox(url, **JOBS) as srv:
        srv.database_url = url
        yield srv


@pytest.fixture
async def rpc(job_server):
    async with FlexDBClient(job_server.url, api_key=job_server.admin_key) as client:
        yield client


async def tighten(rpc, t: str, nt: str, schema: dict) -> int:
    """A new schema version, accepted with the nodes that fail it left at their old version
    (update_node_type with mode allow_invalid); its number."""
    done = await rpc.call("update_node_type", {"tenant_id": t, "id": nt, "schema": schema,
                                               "mode": "allow_invalid"})
    return done["node_type"]["schema_version"]


async def typed_nodes(rpc, t: str, names: list[str], schema=V1) -> tuple[dict, list[dict]]:
    nt = await make_node_type(rpc, t, schema=schema)
    nodes = [await make_node(rpc, t, nt["id"], {"name": name}) for name in names]
    return nt, nodes


async def get_job(rpc, t: str, job_id: str) -> dict:
    return (await rpc.call("get_job", {"tenant_id": t, "id": job_id}))["job"]


async def wait_job(rpc, t: str, job_id: str, check, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = await get_job(rpc, t, job_id)
        if check(job):
            return job
        assert time.monotonic() < deadline, str(job)
        await asyncio.sleep(0.1)


def ended(job: dict) -> bool:
    return job["status"] in ("succeeded", "failed", "cancelled")


async def migrate(rpc, t: str, nt: str, pipeline: str, to_version: int, **extra) -> dict:
    return (await rpc.call("migrate_nodes", {"tenant_id": t, "node_type_id": nt,
                                             "pipeline_id": pipeline,
                                             "to_version": to_version, **extra}))["job"]


async def all_nodes(rpc, t: str, nt: str) -> dict[str, dict]:
    page = await rpc.call("list_nodes", {"tenant_id": t, "node_type_id": nt,
                                         "pagination": {"page_size": 1000}})
    return {n["id"]: n for n in page["nodes"]}


async def test_a_migration_fixes_every_node_in_batches(rpc, job_server):
    t = (await make_tenant(rpc))["id"]
    nt, nodes = await typed_nodes(rpc, t, [f"n{i}" for i in range(25)])
    version = await tighten(rpc, t, nt["id"], V2)
    assert version == 2
    dry = (await rpc.call("check_node_type_schema", {"tenant_id": t, "id": nt["id"],
                                                     "schema": V2}))["report"]
    assert (dry["nodes_checked"], dry["nodes_failing"]) == (25, 25)
    before = await all_nodes(rpc, t, nt["id"])
    assert {n["schema_version"] for n in before.values()} == {1}
    pipeline = await make_pipeline(rpc, t, ADD_LABEL)

    with pytest.raises(InvalidParams) as wrong:
        await migrate(rpc, t, nt["id"], pipeline["id"], 1)
    assert wrong.value.data["errors"][0]["field"] == "to_version"
    assert "current schema version, 2" in wrong.value.data["errors"][0]["message"]

    job = await migrate(rpc, t, nt["id"], pipeline["id"], 2)
    assert job["kind"] == "migrate_nodes" and job["status"] in ("queued", "running")
    assert job["total"] == 25 and job["current_schema_version"] == 2
    assert job["params"] == {"node_type_id": nt["id"], "pipeline_id": pipeline["id"],
                             "to_version": 2, "only_outdated": False}
    done = await wait_job(rpc, t, job["id"], ended)
    assert done["status"] == "succeeded", done
    assert (done["total"], done["processed"], done["changed"], done["failed"],
            done["batches"]) == (25, 25, 25, 0, 3)
    assert done["failures"] == [] and done["error"] is None and done["run_id"] is None
    assert done["started_at"] and done["finished_at"] >= done["started_at"]

    after = await all_nodes(rpc, t, nt["id"])
    for node_id, node in after.items():
        name = before[node_id]["data"]["name"]
        assert node["data"] == {"name": name, "label": name.upper()}
        assert node["schema_version"] == 2 and node["version"] == 2
    # every node now validates (the dry run finds none failing), and writes go through
    dry = (await rpc.call("check_node_type_schema", {"tenant_id": t, "id": nt["id"],
                                                     "schema": V2}))["report"]
    assert (dry["nodes_checked"], dry["nodes_failing"]) == (25, 0)
    some = nodes[0]["id"]
    await rpc.call("update_node", {"tenant_id": t, "id": some, "data": after[some]["data"]})

    # one audit event per batch (and the call's and the end's), each naming its run
    events = [e for e in await audit_events(rpc, t) if e["target_id"] == job["id"]]
    batches = [e for e in events if "batch" in (e.get("summary") or {})]
    assert len(batches) == 3 and all(e["method"] == "migrate_nodes" for e in events)
    assert sorted(e["summary"]["batch"] for e in batches) == [1, 2, 3]
    assert sum(e["summary"]["changed"] for e in batches) == 25

    listed = await rpc.call("list_jobs", {"tenant_id": t, "status": "succeeded"})
    assert [j["id"] for j in listed["jobs"]] == [job["id"]]
    runs = await rpc.call("list_pipeline_runs", {"tenant_id": t, "pipeline_id": pipeline["id"]})
    assert len(runs["runs"]) == 3 and {r["status"] for r in runs["runs"]} == {"succeeded"}


async def test_a_batch_holds_at_most_256_kib_of_documents_as_text(rpc, job_server):
    """Batches are cut by their documents' size as text, counted before they are read:
    six nodes of 100 KB each (which compress to about a kilobyte as stored) take three
    batches of two, not one of six; the first node of a batch is taken whatever its size."""
    t = (await make_tenant(rpc))["id"]
    nt = await make_node_type(rpc, t, schema=V1)
    for i in range(6):
        await make_node(rpc, t, nt["id"], {"name": f"n{i}", "blob": "x" * 100_000})
    await make_node(rpc, t, nt["id"], {"name": "big", "blob": "y" * 300_000})
    version = await tighten(rpc, t, nt["id"], V2)
    pipeline = await make_pipeline(rpc, t, ADD_LABEL)
    done = await wait_job(rpc, t, (await migrate(rpc, t, nt["id"], pipeline["id"],
                                                 version))["id"], ended)
    assert done["status"] == "succeeded", done
    assert (done["processed"], done["changed"], done["batches"]) == (7, 7, 4)
    after = await all_nodes(rpc, t, nt["id"])
    assert sorted(n["data"]["label"] for n in after.values()) == sorted(
        [f"N{i}" for i in range(6)] + ["BIG"])


async def test_nodes_that_fail_are_left_unchanged_and_listed_with_why(rpc, job_server):
    t = (await make_tenant(rpc))["id"]
    names = ["ok1", "boom1", "list1", "bad1", "ok2", "keep1"]
    nt, nodes = await typed_nodes(rpc, t, names)
    keep = nodes[-1]
    await rpc.call("update_node", {"tenant_id": t, "id": keep["id"],
                                   "data": {"name": "keep1", "label": "already"}})
    await tighten(rpc, t, nt["id"], V2)
    before = await all_nodes(rpc, t, nt["id"])
    pipeline = await make_pipeline(rpc, t, MIXED)
    job = await migrate(rpc, t, nt["id"], pipeline["id"], 2)
    done = await wait_job(rpc, t, job["id"], ended)
    assert done["status"] == "succeeded", done
    assert (done["processed"], done["changed"], done["failed"]) == (6, 2, 3)
    by_node = {f["node_id"]: f for f in done["failures"]}
    by_name = {n["data"]["name"]: n["id"] for n in nodes}
    assert by_node[by_name["boom1"]]["reason"] == "pipeline_error"
    assert "ValueError: cannot migrate boom1" in by_node[by_name["boom1"]]["message"]
    assert by_node[by_name["list1"]]["reason"] == "not_an_object"
    invalid = by_node[by_name["bad1"]]
    assert invalid["reason"] == "invalid" and invalid["errors"][0]["field"] == "data.label"
    assert set(by_node) == {by_name["boom1"], by_name["list1"], by_name["bad1"]}

    after = await all_nodes(rpc, t, nt["id"])
    for name in ("boom1", "list1", "bad1"):  # unchanged, still at the old version
        assert after[by_name[name]] == before[by_name[name]]
    for name in ("ok1", "ok2"):
        node = after[by_name[name]]
        assert node["data"]["label"] == name.upper()
        assert (node["version"], node["schema_version"]) == (2, 2)
    # a node whose data stays as it is only records the new version
    kept = after[keep["id"]]
    assert kept["data"] == before[keep["id"]]["data"]
    assert kept["version"] == before[keep["id"]]["version"] and kept["schema_version"] == 2

    # only_outdated takes the ones left behind
    fixed = await make_pipeline(rpc, t, ADD_LABEL)
    again = await migrate(rpc, t, nt["id"], fixed["id"], 2, only_outdated=True)
    assert again["total"] == 3
    done = await wait_job(rpc, t, again["id"], ended)
    assert (done["status"], done["processed"], done["changed"], done["failed"]) == \
        ("succeeded", 3, 3, 0)
    assert {n["schema_version"] for n in (await all_nodes(rpc, t, nt["id"])).values()} == {2}


async def test_a_cancelled_job_stops_and_keeps_what_it_applied(rpc, job_server):
    t = (await make_tenant(rpc))["id"]
    nt, _ = await typed_nodes(rpc, t, [f"s{i}" for i in range(40)])
    await tighten(rpc, t, nt["id"], V2)
    pipeline = await make_pipeline(rpc, t, SLOW, timeout_ms=30_000)
    job = await migrate(rpc, t, nt["id"], pipeline["id"], 2)
    running = await wait_job(rpc, t, job["id"], lambda j: j["processed"] >= 10)
    assert running["status"] == "running"
    with pytest.raises(Conflict):  # one migration of a node type at a time
        await migrate(rpc, t, nt["id"], pipeline["id"], 2)
    cancelled = (await rpc.call("cancel_job", {"tenant_id": t, "id": job["id"]}))["job"]
    assert cancelled["status"] == "cancelled" and cancelled["error"]["type"] == "cancelled"
    with pytest.raises(Conflict) as again:
        await rpc.call("cancel_job", {"tenant_id": t, "id": job["id"]})
    assert again.value.data["status"] == "cancelled"
    await asyncio.sleep(2)
    final = await get_job(rpc, t, job["id"])
    assert final["status"] == "cancelled" and final["processed"] < 40
    nodes = (await all_nodes(rpc, t, nt["id"])).values()
    migrated = [n for n in nodes if n["schema_version"] == 2]
    assert len(migrated) == final["changed"] == final["processed"]
    assert all(n["version"] == 2 for n in migrated)
    assert all(n["version"] == 1 for n in nodes if n["schema_version"] == 1)


async def test_a_schema_change_while_it_runs_fails_the_job(rpc, job_server):
    t = (await make_tenant(rpc))["id"]
    nt, _ = await typed_nodes(rpc, t, [f"c{i}" for i in range(30)])
    await tighten(rpc, t, nt["id"], V2)
    pipeline = await make_pipeline(rpc, t, SLOW, timeout_ms=30_000)
    job = await migrate(rpc, t, nt["id"], pipeline["id"], 2)
    await wait_job(rpc, t, job["id"], lambda j: j["processed"] >= 10)
    await tighten(rpc, t, nt["id"], {**V2, "maxProperties": 5})
    done = await wait_job(rpc, t, job["id"], ended)
    assert done["status"] == "failed" and done["error"]["type"] == "schema_changed"
    assert done["error"]["current_version"] == 3 and "version 3" in done["error"]["message"]
    assert done["current_schema_version"] == 3
    nodes = (await all_nodes(rpc, t, nt["id"])).values()
    # the nodes migrated stay migrated (the schema change found them valid: now at 3)
    migrated = [n for n in nodes if "label" in n["data"]]
    assert len(migrated) == done["changed"] >= 10
    assert all(n["version"] == 2 and n["schema_version"] >= 2 for n in migrated)
    assert all(n["schema_version"] == 1 for n in nodes if "label" not in n["data"])


async def test_jobs_are_capped_per_tenant_and_only_for_admins(rpc, job_server):
    t = (await make_tenant(rpc))["id"]
    pipeline = await make_pipeline(rpc, t, SLOW, timeout_ms=30_000)
    started = []
    for _ in range(2):
        nt, _ = await typed_nodes(rpc, t, [f"x{i}" for i in range(20)])
        started.append(await migrate(rpc, t, nt["id"], pipeline["id"], 1))
    third, _ = await typed_nodes(rpc, t, ["y"])
    with pytest.raises(RateLimited) as capped:
        await migrate(rpc, t, third["id"], pipeline["id"], 1)
    assert capped.value.data["type"] == "busy"
    assert capped.value.data["setting"] == "FLEXDB_JOBS_TENANT_ACTIVE"
    assert "FLEXDB_JOBS_TENANT_ACTIVE" in capped.value.message

    member, key = await new_user(rpc)
    await rpc.call("add_user_to_tenant", {"tenant_id": t, "user_id": member["id"],
                                          "role": "member"})
    async with FlexDBClient(job_server.url, api_key=key) as as_member:
        with pytest.raises(Forbidden):
            await migrate(as_member, t, third["id"], pipeline["id"], 1)
        with pytest.raises(Forbidden):
            await get_job(as_member, t, started[0]["id"])
        with pytest.raises(Forbidden):
            await as_member.call("cancel_job", {"tenant_id": t, "id": started[0]["id"]})

    # another tenant's admin: the job is not found (no existence oracle)
    other = (await make_tenant(rpc))["id"]
    outsider, outsider_key = await new_user(rpc)
    await rpc.call("add_user_to_tenant", {"tenant_id": other, "user_id": outsider["id"],
                                          "role": "admin"})
    async with FlexDBClient(job_server.url, api_key=outsider_key) as stranger:
        for method in ("get_job", "cancel_job"):
            with pytest.raises(NotFound):
                await stranger.call(method, {"tenant_id": other, "id": started[0]["id"]})
    assert (await get_job(rpc, t, started[0]["id"]))["status"] in ("queued", "running")

    for job in started:
        await rpc.call("cancel_job", {"tenant_id": t, "id": job["id"]})
    listed = await rpc.call("list_jobs", {"tenant_id": t, "pagination": {"page_size": 1,
                                                                         "include_total": True}})
    assert listed["pagination"]["total_count"] == 2 and listed["pagination"]["next_page_token"]
    await migrate(rpc, t, third["id"], pipeline["id"], 1)  # room again


async def test_a_job_stops_when_its_creator_is_no_longer_an_admin(rpc, job_server):
    t = (await make_tenant(rpc))["id"]
    nt, _ = await typed_nodes(rpc, t, [f"d{i}" for i in range(30)])
    await tighten(rpc, t, nt["id"], V2)
    pipeline = await make_pipeline(rpc, t, SLOW, timeout_ms=30_000)
    admin, key = await new_user(rpc)
    await rpc.call("add_user_to_tenant", {"tenant_id": t, "user_id": admin["id"],
                                          "role": "admin"})
    async with FlexDBClient(job_server.url, api_key=key) as as_admin:
        job = await migrate(as_admin, t, nt["id"], pipeline["id"], 2)
    assert job["created_by_user_id"] == admin["id"]
    await wait_job(rpc, t, job["id"], lambda j: j["processed"] >= 10)
    await rpc.call("update_tenant_user_role", {"tenant_id": t, "user_id": admin["id"],
                                               "role": "member"})
    done = await wait_job(rpc, t, job["id"], ended)
    assert done["status"] == "failed" and done["error"]["type"] == "creator_unauthorized"
    assert "now a member" in done["error"]["message"]
    assert 10 <= done["processed"] < 30


@pytest.fixture
def own_database(pg_server_url):
    with migrated_database(pg_server_url) as url:
        yield url


async def test_a_migration_interrupted_by_kill_9_resumes_and_applies_each_batch_once(
        own_database):
    url = own_database
    port, sandbox_port = free_port(), free_port()
    env = {"FLEXDB_DATABASE_URL": url, **JOBS,
           "FLEXDB_SANDBOX_URL": f"http://127.0.0.1:{sandbox_port}",
           "FLEXDB_SANDBOX_SECRET": TEST_SANDBOX_SECRET}
    with running_sandbox(f"http://127.0.0.1:{port}/jsonrpc", sandbox_port):
        server = ServerProcess(env, ROOT, port=port)
        try:
            await asyncio.get_running_loop().run_in_executor(None, server.wait_ready)
            key = admin_key(url, TEST_SECRET, None)
            async with FlexDBClient(server.url, api_key=key, timeout=10) as rpc:
                t = (await make_tenant(rpc))["id"]
                nt, _ = await typed_nodes(rpc, t, [f"k{i}" for i in range(60)])
                await tighten(rpc, t, nt["id"], V2)
                pipeline = await make_pipeline(rpc, t, SLOW, timeout_ms=5000)
                job = await migrate(rpc, t, nt["id"], pipeline["id"], 2)
                await wait_job(rpc, t, job["id"], lambda j: j["processed"] >= 10)
            os.kill(server.proc.pid, signal.SIGKILL)
            server.proc.wait()
            killed_at = await sql(url, "SELECT processed, run_id FROM jobs WHERE id = $1",
                                  job["id"])
            assert killed_at[0]["processed"] < 60
            server = ServerProcess(env, ROOT, port=port)
            await asyncio.get_running_loop().run_in_executor(None, server.wait_ready)
            async with FlexDBClient(server.url, api_key=key, timeout=10) as rpc:
                done = await wait_job(rpc, t, job["id"], ended, timeout=120)
                assert done["status"] == "succeeded", done
                assert (done["processed"], done["changed"], done["failed"],
                        done["batches"]) == (60, 60, 0, 6)
                nodes = (await all_nodes(rpc, t, nt["id"])).values()
                # each node migrated exactly once: created at 1, one write by the job
                assert [n["version"] for n in nodes] == [2] * 60
                assert {n["schema_version"] for n in nodes} == {2}
                assert all(n["data"]["label"] == n["data"]["name"].upper() for n in nodes)
                events = [e for e in await audit_events(rpc, t)
                          if e["target_id"] == job["id"]
                          and "batch" in (e.get("summary") or {})]
                assert sorted(e["summary"]["batch"] for e in events) == [1, 2, 3, 4, 5, 6]
                runs = (await rpc.call("list_pipeline_runs", {
                    "tenant_id": t, "pipeline_id": pipeline["id"]}))["runs"]
                # six applied; a batch cut short by the kill (if any) was run again
                assert [r["status"] for r in runs].count("succeeded") == 6
                assert all(r["error"]["type"] == "interrupted" for r in runs
                           if r["status"] != "succeeded")
        finally:
            server.stop()
