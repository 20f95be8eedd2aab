"""The pipeline group end to end: stored pipelines (CRUD, checked code, limits), runs that
read and write the graph through `db`, the run record (result, output, timings, db
operations, errors), the queue (wait: false, cancel, restarts, interrupted runs), execution
tokens, and who may do what. Escapes and resource abuse live in test_sandbox_escapes.py."""
from __future__ import annotations

import asyncio
import base64
import json
import signal
import time
import uuid
from datetime import datetime, timedelta, timezone
from functools import partial

import asyncpg
import httpx
import pytest

import rpc_server.methods  # noqa: F401  (registers every method)
from rpc_server.api.registry import REGISTRY, run_db_methods
from rpc_server.client import (
    Conflict,
    FlexDBClient,
    Forbidden,
    InvalidParams,
    NotFound,
    PipelineFailed,
    Unauthenticated,
)
from rpc_server.pipelines.runner import PipelineRunner
from rpc_server.security.execution_tokens import (
    ExecutionClaims,
    mint,
    run_token,
    token_role,
    verify,
)

from .auth_helpers import World, new_user
from .conftest import (
    TEST_SECRET,
    fresh_database,
    missing_id,
    own_user_id,
    server_with_sandbox,
    unique,
)
from .pipeline_helpers import ECHO, make_pipeline, run

SPIN = "def run(input, db):\n    n = 0\n    while True:\n        n += 1\n"
RUN_KEYS = {"id", "tenant_id", "pipeline_id", "status", "input", "result", "error", "output",
            "debug_level", "timeout_ms", "memory_mb", "actor_user_id", "actor_key_id",
            "duration_ms", "cpu_ms", "peak_memory_kb", "db_operations", "created_at",
            "started_at", "finished_at", "updated_at"}
PIPELINE_KEYS = {"id", "tenant_id", "name", "description", "code", "timeout_ms", "memory_mb",
                 "created_at", "updated_at", "version"}


# ---------------------------------------------------------------- helpers

async def failed_run(client, tenant_id: str, pipeline_id: str, input=None, **extra) -> dict:
    """A wait: true run that does not succeed: -32007 with the run record in data.run."""
    with pytest.raises(PipelineFailed) as exc:
        await run(client, tenant_id, pipeline_id, input, **extra)
    assert exc.value.code == -32007 and exc.value.type == "pipeline_failed"
    return exc.value.data["run"]


async def get_run(client, tenant_id: str, run_id: str) -> dict:
    return (await client.call("get_pipeline_run", {"tenant_id": tenant_id, "id": run_id}))["run"]


async def wait_for(client, tenant_id: str, run_id: str, statuses, timeout: float = 15) -> dict:
    statuses = {statuses} if isinstance(statuses, str) else set(statuses)
    deadline = time.monotonic() + timeout
    while True:
        current = await get_run(client, tenant_id, run_id)
        if current["status"] in statuses:
            return current
        assert time.monotonic() < deadline, f"run still {current['status']}, wanted {statuses}"
        await asyncio.sleep(0.05)


async def all_runs(client, tenant_id: str, page_size: int = 100, **filters) -> list[dict]:
    runs, token = [], ""
    while True:
        page = await client.call("list_pipeline_runs", {
            "tenant_id": tenant_id, **filters,
            "pagination": {"page_size": page_size, "page_token": token}})
        runs += page["runs"]
        token = page["pagination"]["next_page_token"]
        if not token:
            return runs


async def audit_events(client, tenant_id: str, **filters) -> list[dict]:
    return (await client.call("list_audit_events", {"tenant_id": tenant_id, **filters,
                                                    "pagination": {"page_size": 1000}}))[
        "audit_events"]


async def sql(url: str, statement: str, *args):
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(statement, *args)
    finally:
        await conn.close()


async def sandbox_running(worker) -> int:
    async with httpx.AsyncClient() as http:
        return (await http.get(worker.base + "/health", timeout=5)).json()["running"]


@pytest.fixture(scope="module")
def idle(pg_server_url):
    """A server pair whose queue takes no runs (concurrency 0): wait: false runs stay queued.
    On a database of its own, so that no other server's queue takes them either."""
    with fresh_database(pg_server_url) as url:
        with server_with_sandbox(url, FLEXDB_PIPELINE_QUEUE_CONCURRENCY="0") as srv:
            srv.database_url = url
            yield srv


# ---------------------------------------------------------------- CRUD

async def test_create_get_update_list_delete(rpc, tenant):
    t = tenant["id"]
    created = (await rpc.call("create_pipeline", {
        "tenant_id": t, "name": "nightly", "code": ECHO, "description": "échos ✓",
        "timeout_ms": 2500, "memory_mb": 64}))["pipeline"]
    assert set(created) == PIPELINE_KEYS
    assert (created["name"], created["description"], created["code"], created["timeout_ms"],
            created["memory_mb"], created["version"], created["tenant_id"]) == \
        ("nightly", "échos ✓", ECHO, 2500, 64, 1, t)
    defaults = await make_pipeline(rpc, t)
    assert (defaults["timeout_ms"], defaults["memory_mb"], defaults["description"]) == \
        (10_000, 128, "")
    zeros = await make_pipeline(rpc, t, timeout_ms=0, memory_mb=0)  # proto3 "not set"
    assert (zeros["timeout_ms"], zeros["memory_mb"]) == (10_000, 128)

    got = (await rpc.call("get_pipeline", {"tenant_id": t, "id": created["id"]}))["pipeline"]
    assert got == created

    new_code = "def run(input, db):\n    return [input, input]\n"
    updated = (await rpc.call("update_pipeline", {
        "tenant_id": t, "id": created["id"], "name": "nightly-2", "description": "",
        "code": new_code, "timeout_ms": 3000, "memory_mb": 32}))["pipeline"]
    assert (updated["name"], updated["description"], updated["code"], updated["timeout_ms"],
            updated["memory_mb"], updated["version"]) == ("nightly-2", "", new_code, 3000, 32, 2)
    assert updated["updated_at"] >= created["updated_at"]
    assert (await run(rpc, t, created["id"], {"x": 1}))["result"] == [{"x": 1}, {"x": 1}]
    with pytest.raises(InvalidParams):  # nothing to change
        await rpc.call("update_pipeline", {"tenant_id": t, "id": created["id"]})

    listed = await rpc.call("list_pipelines", {"tenant_id": t, "pagination": {"page_size": 2}})
    assert listed["pagination"]["total_count"] == 3 and len(listed["pipelines"]) == 2
    rest = await rpc.call("list_pipelines", {"tenant_id": t, "pagination": {
        "page_size": 2, "page_token": listed["pagination"]["next_page_token"]}})
    assert not rest["pagination"]["next_page_token"]
    ids = [p["id"] for p in listed["pipelines"] + rest["pipelines"]]
    assert ids == [created["id"], defaults["id"], zeros["id"]]
    assert set(listed["pipelines"][0]) == PIPELINE_KEYS

    assert await rpc.call("delete_pipeline", {"tenant_id": t, "id": created["id"]}) == \
        {"success": True}
    for method in ("get_pipeline", "delete_pipeline"):
        with pytest.raises(NotFound) as exc:
            await rpc.call(method, {"tenant_id": t, "id": created["id"]})
        assert exc.value.data["kind"] == "pipeline"
    with pytest.raises(NotFound) as exc:
        await rpc.call("update_pipeline", {"tenant_id": t, "id": missing_id(), "name": "x"})
    assert exc.value.data["kind"] == "pipeline"
    with pytest.raises(NotFound) as exc:
        await run(rpc, t, created["id"])
    assert exc.value.data["kind"] == "pipeline"
    listed = await rpc.call("list_pipelines", {"tenant_id": t})
    assert [p["id"] for p in listed["pipelines"]] == [defaults["id"], zeros["id"]]
    with pytest.raises(NotFound) as exc:
        await rpc.call("list_pipelines", {"tenant_id": missing_id()})
    assert exc.value.data["kind"] == "tenant"


async def test_a_pipeline_of_another_tenant_is_not_found(rpc, tenant):
    other = (await rpc.call("create_tenant", {"slug": unique("o"), "name": "O"}))["tenant"]
    pipeline = await make_pipeline(rpc, other["id"])
    done = await run(rpc, other["id"], pipeline["id"])
    for method, params in (("get_pipeline", {"id": pipeline["id"]}),
                           ("update_pipeline", {"id": pipeline["id"], "name": "x"}),
                           ("delete_pipeline", {"id": pipeline["id"]}),
                           ("run_pipeline", {"pipeline_id": pipeline["id"]}),
                           ("get_pipeline_run", {"id": done["id"]}),
                           ("cancel_pipeline_run", {"id": done["id"]})):
        with pytest.raises(NotFound) as exc:
            await rpc.call(method, {"tenant_id": tenant["id"], **params})
        assert exc.value.data["kind"] in ("pipeline", "pipeline_run"), method
    assert await all_runs(rpc, tenant["id"], pipeline_id=pipeline["id"]) == []


async def test_names_are_unique_per_tenant(rpc, tenant):
    t = tenant["id"]
    first = await make_pipeline(rpc, t)
    with pytest.raises(Conflict) as exc:
        await rpc.call("create_pipeline", {"tenant_id": t, "name": first["name"], "code": ECHO})
    assert exc.value.code == -32004
    second = await make_pipeline(rpc, t)
    with pytest.raises(Conflict):
        await rpc.call("update_pipeline", {"tenant_id": t, "id": second["id"],
                                           "name": first["name"]})
    unchanged = (await rpc.call("get_pipeline", {"tenant_id": t, "id": second["id"]}))["pipeline"]
    assert unchanged == second
    other = (await rpc.call("create_tenant", {"slug": unique("o"), "name": "O"}))["tenant"]
    same_name = (await rpc.call("create_pipeline", {"tenant_id": other["id"],
                                                    "name": first["name"], "code": ECHO}))
    assert same_name["pipeline"]["name"] == first["name"]


async def test_name_conflict_names_the_field(rpc, tenant):
    first = await make_pipeline(rpc, tenant["id"])
    with pytest.raises(Conflict) as exc:
        await rpc.call("create_pipeline", {"tenant_id": tenant["id"], "name": first["name"],
                                           "code": ECHO})
    assert exc.value.data.get("field") == "name"
    assert "pipeline" in exc.value.message


BAD_CODE = {
    "syntax": ("def run(input, db):\n    return (1 +\n", 2, None, None),
    "underscore_name": ("def run(input, db):\n    return input.__class__\n", 2, 12, "_"),
    "underscore_variable": ("def run(input, db):\n    _hidden = 1\n    return _hidden\n", 2,
                            5, "_hidden"),
    "class_special_method": ("class Thing:\n    def __del__(self):\n        pass\n\n"
                             "def run(input, db):\n    return 1\n", 2, 5,
                             "special method '__del__' is not allowed"),
    "async_function": ("async def run(input, db):\n    return 1\n", 1, 1, "async"),
}


@pytest.mark.parametrize("case", sorted(BAD_CODE))
async def test_code_is_checked_when_saved_and_updated(rpc, tenant, case):
    code, line, column, words = BAD_CODE[case]
    t = tenant["id"]
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("create_pipeline", {"tenant_id": t, "name": unique("bad"), "code": code})
    first = exc.value.data["errors"][0]
    assert first["field"] == "code" and first["line"] == line
    assert isinstance(first["column"], int) and first["column"] >= 1
    if column is not None:
        assert first["column"] == column
    if words:
        assert words in first["message"]
    good = await make_pipeline(rpc, t)
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("update_pipeline", {"tenant_id": t, "id": good["id"], "code": code,
                                           "name": "renamed"})
    assert exc.value.data["errors"][0]["field"] == "code"
    assert exc.value.data["errors"][0]["line"] == line
    unchanged = (await rpc.call("get_pipeline", {"tenant_id": t, "id": good["id"]}))["pipeline"]
    assert unchanged == good  # neither the code nor the name changed
    listed = await rpc.call("list_pipelines", {"tenant_id": t})
    assert [p["id"] for p in listed["pipelines"]] == [good["id"]]


async def test_syntax_error_has_line_and_column(rpc, tenant):
    code = "def run(input, db):\n    x = 1\n    return x x\n"
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("create_pipeline", {"tenant_id": tenant["id"], "name": unique("s"),
                                           "code": code})
    first = exc.value.data["errors"][0]
    with pytest.raises(SyntaxError) as python:
        compile(code, "<pipeline>", "exec")
    assert (first["field"], first["line"], first["column"]) == \
        ("code", 3, python.value.offset)
    assert first["column"] in (12, 14)  # the first or the second x, by Python version


@pytest.mark.parametrize("code", [
    "def walk(input, db):\n    return 1\n",
    "x = 1\n",
    "def run_all(input, db):\n    return 1\n",
    "if True:\n    def run(input, db):\n        return 1\n",
])
async def test_code_without_a_top_level_run_is_refused(rpc, tenant, code):
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("create_pipeline", {"tenant_id": tenant["id"], "name": unique("m"),
                                           "code": code})
    first = exc.value.data["errors"][0]
    assert first["field"] == "code" and "run(input, db)" in first["message"]


async def test_run_defined_only_inside_a_string_is_refused(rpc, tenant):
    code = 'NOTE = """\ndef run(input, db):\n"""\n\ndef main(input, db):\n    return 1\n'
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("create_pipeline", {"tenant_id": tenant["id"], "name": unique("m"),
                                           "code": code})
    assert exc.value.data["errors"][0]["field"] == "code"


@pytest.mark.parametrize("field,value", [
    ("timeout_ms", 99), ("timeout_ms", 60_001), ("timeout_ms", -1), ("timeout_ms", "1000"),
    ("timeout_ms", 1000.0), ("timeout_ms", True), ("timeout_ms", None),
    ("memory_mb", 15), ("memory_mb", 513), ("memory_mb", 10_000), ("memory_mb", "64"),
    ("memory_mb", False),
    ("code", ""), ("code", "x" * 100_001), ("code", "def run(input, db):\n    return '\x00'\n"),
    ("name", ""), ("description", 5),
])
async def test_bad_fields_are_invalid_params(rpc, tenant, field, value):
    t = tenant["id"]
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("create_pipeline", {"tenant_id": t, "name": unique("l"), "code": ECHO,
                                           field: value})
    assert exc.value.code == -32602
    assert exc.value.data["errors"][0]["field"] == field
    if field in ("timeout_ms", "memory_mb") and value is not None:
        pipeline = await make_pipeline(rpc, t)
        with pytest.raises(InvalidParams) as exc:
            await rpc.call("update_pipeline", {"tenant_id": t, "id": pipeline["id"],
                                               field: value})
        assert exc.value.data["errors"][0]["field"] == field
    listed = await rpc.call("list_pipelines", {"tenant_id": t})
    assert all(p["name"].startswith("p-") for p in listed["pipelines"])


async def test_limits_at_the_server_maxima(rpc, tenant):
    t = tenant["id"]
    low = await make_pipeline(rpc, t, timeout_ms=100, memory_mb=16)
    high = await make_pipeline(rpc, t, timeout_ms=60_000, memory_mb=512)
    assert (low["timeout_ms"], low["memory_mb"], high["timeout_ms"], high["memory_mb"]) == \
        (100, 16, 60_000, 512)
    moved = (await rpc.call("update_pipeline", {"tenant_id": t, "id": low["id"],
                                                "timeout_ms": 60_000, "memory_mb": 512}))
    assert (moved["pipeline"]["timeout_ms"], moved["pipeline"]["memory_mb"]) == (60_000, 512)
    # The run takes the limits of the pipeline at the time it starts.
    done = await run(rpc, t, high["id"], 5)
    assert (done["timeout_ms"], done["memory_mb"], done["result"]) == (60_000, 512, 5)


async def test_expected_version(rpc, tenant):
    t = tenant["id"]
    pipeline = await make_pipeline(rpc, t)
    updated = (await rpc.call("update_pipeline", {"tenant_id": t, "id": pipeline["id"],
                                                  "description": "v2",
                                                  "expected_version": 1}))["pipeline"]
    assert updated["version"] == 2
    with pytest.raises(Conflict) as exc:
        await rpc.call("update_pipeline", {"tenant_id": t, "id": pipeline["id"],
                                           "description": "stale", "expected_version": 1})
    assert exc.value.code == -32004 and exc.value.type == "version_conflict"
    assert (exc.value.data["expected_version"], exc.value.data["current_version"]) == (1, 2)
    current = (await rpc.call("get_pipeline", {"tenant_id": t, "id": pipeline["id"]}))["pipeline"]
    assert (current["description"], current["version"]) == ("v2", 2)
    for bad in (0, -1, "2", 2.0):
        with pytest.raises(InvalidParams):
            await rpc.call("update_pipeline", {"tenant_id": t, "id": pipeline["id"],
                                               "description": "x", "expected_version": bad})


async def test_delete_cascades_runs(rpc, tenant, database_url):
    t = tenant["id"]
    doomed, kept = await make_pipeline(rpc, t), await make_pipeline(rpc, t)
    runs = [await run(rpc, t, doomed["id"], i) for i in range(3)]
    kept_run = await run(rpc, t, kept["id"], "kept")
    await rpc.call("delete_pipeline", {"tenant_id": t, "id": doomed["id"]})
    for r in runs:
        with pytest.raises(NotFound) as exc:
            await get_run(rpc, t, r["id"])
        assert exc.value.data["kind"] == "pipeline_run"
    assert await all_runs(rpc, t, pipeline_id=doomed["id"]) == []
    assert [r["id"] for r in await all_runs(rpc, t)] == [kept_run["id"]]
    left = await sql(database_url, "SELECT count(*) AS n FROM pipeline_runs WHERE pipeline_id = $1",
                     uuid.UUID(doomed["id"]))
    assert left[0]["n"] == 0


async def test_a_run_keeps_the_code_it_started_with(idle):
    async with FlexDBClient(idle.url, api_key=idle.admin_key) as c:
        t = (await c.call("create_tenant", {"slug": unique("k"), "name": "K"}))["tenant"]["id"]
        pipeline = await make_pipeline(c, t, "def run(input, db):\n    return 'old'\n")
        queued = await run(c, t, pipeline["id"], wait=False)
        await c.call("update_pipeline", {"tenant_id": t, "id": pipeline["id"],
                                         "code": "def run(input, db):\n    return 'new'\n"})
        assert (await run(c, t, pipeline["id"]))["result"] == "new"
        rows = await sql(idle.database_url, "SELECT code FROM pipeline_runs WHERE id = $1",
                         uuid.UUID(queued["id"]))
        assert "'old'" in rows[0]["code"]
        await c.call("cancel_pipeline_run", {"tenant_id": t, "id": queued["id"]})


# ---------------------------------------------------------------- runs that read and write

GRAPH_PIPELINE = '''
def run(input, db):
    nt = input["node_type_id"]
    people = {}
    for name, age in input["people"]:
        people[name] = db.create_node(nt, {"name": name, "age": age})["node"]
    knows = db.create_relationship(people["ann"]["id"], people["bob"]["id"], "knows",
                                   {"since": 2020})["relationship"]
    db.create_relationship(people["bob"]["id"], people["cat"]["id"], "knows", {})
    older = db.query_nodes({"field": "data.age", "op": "gte", "value": 40})["nodes"]
    counted = db.execute_query(
        "SELECT count(*) FROM nodes WHERE data->>'name' IN ($1, $2, $3, $4)",
        ["ann", "bob", "cat", "nobody"])
    reached = db.traverse(people["ann"]["id"], max_depth=2)["nodes"]
    db.update_node(people["bob"]["id"], {"name": "bob", "age": 41})
    db.update_relationship(knows["id"], data={"since": 2019})
    db.delete_node(people["cat"]["id"])
    fetched = db.get_node(people["bob"]["id"])["node"]
    rels = db.list_relationships()["relationships"]
    path = db.shortest_path(people["ann"]["id"], people["bob"]["id"])["path"]
    print("created", len(people), "people")
    print("older:", sorted(n["data"]["name"] for n in older))
    return {
        "ids": {name: node["id"] for name, node in people.items()},
        "knows": knows["id"],
        "older": sorted(n["data"]["name"] for n in older),
        "count": counted["rows"][0][0],
        "reached": sorted([r["node"]["data"]["name"], r["depth"]] for r in reached),
        "bob": fetched["data"],
        "relationships": len(rels),
        "path_length": len(path["relationship_ids"]),
    }
'''
GRAPH_CALLS = ["create_node"] * 3 + ["create_relationship"] * 2 + [
    "query_nodes", "execute_query", "traverse", "update_node", "update_relationship",
    "delete_node", "get_node", "list_relationships", "shortest_path"]


async def test_a_pipeline_reads_and_writes_the_graph(server, rpc):
    world = await World.build(rpc)
    t = world.tid
    pipeline = await make_pipeline(rpc, t, GRAPH_PIPELINE)
    member = world.users["member"]
    async with FlexDBClient(server.url, api_key=world.keys["member"],
                            headers={"X-Request-ID": "pipeline-e2e-7"}) as m:
        started = time.monotonic()
        done = await run(m, t, pipeline["id"], {
            "node_type_id": world.nt["id"], "people": [["ann", 30], ["bob", 40], ["cat", 50]]})
        elapsed_ms = (time.monotonic() - started) * 1000
    assert set(done) == RUN_KEYS
    result = done["result"]
    assert done["status"] == "succeeded" and done["error"] is None
    assert result["older"] == ["bob", "cat"]
    assert result["count"] == 3
    assert result["reached"] == [["bob", 1], ["cat", 2]]
    assert result["bob"] == {"name": "bob", "age": 41}
    assert result["relationships"] == 1  # cat's went with cat
    assert result["path_length"] == 1
    assert done["output"] == "created 3 people\nolder: ['bob', 'cat']\n"
    assert (done["pipeline_id"], done["tenant_id"], done["debug_level"]) == \
        (pipeline["id"], t, "basic")
    assert (done["actor_user_id"], done["timeout_ms"], done["memory_mb"]) == \
        (member["id"], 10_000, 128)
    assert done["actor_key_id"]
    assert 0 < done["duration_ms"] <= elapsed_ms + 1
    assert done["cpu_ms"] >= 0 and done["peak_memory_kb"] > 1000
    assert done["started_at"] <= done["finished_at"]
    operations = done["db_operations"]
    assert [op["method"] for op in operations] == GRAPH_CALLS
    for op in operations:
        assert op["ok"] is True and "error" not in op and op["duration_ms"] >= 0
    assert sum(op["duration_ms"] for op in operations) <= done["duration_ms"]
    assert await get_run(rpc, t, done["id"]) == done

    # The effects are there for everyone to see.
    ids = result["ids"]
    bob = (await rpc.call("get_node", {"tenant_id": t, "id": ids["bob"]}))["node"]
    assert bob["data"] == {"name": "bob", "age": 41} and bob["version"] == 2
    ann = (await rpc.call("get_node", {"tenant_id": t, "id": ids["ann"]}))["node"]
    assert ann["data"] == {"name": "ann", "age": 30}
    with pytest.raises(NotFound):
        await rpc.call("get_node", {"tenant_id": t, "id": ids["cat"]})
    knows = (await rpc.call("get_relationship", {"tenant_id": t, "id": result["knows"]}))[
        "relationship"]
    assert (knows["source_node_id"], knows["target_node_id"], knows["relationship_type"],
            knows["data"]) == (ids["ann"], ids["bob"], "knows", {"since": 2019})

    # Audit: the run and each write of its db object, with the caller as actor.
    events = await audit_events(rpc, t, actor=member["id"])
    assert [e["method"] for e in events] == ["run_pipeline"] + [  # writes, and tenant SQL
        m for m in GRAPH_CALLS
        if m.split("_")[0] in ("create", "update", "delete") or m == "execute_query"]
    started_event = events[0]
    assert (started_event["target_kind"], started_event["target_id"]) == \
        ("pipeline_run", done["id"])
    assert started_event["summary"]["pipeline_id"] == pipeline["id"]
    assert started_event["request_id"] == "pipeline-e2e-7"
    for event in events:
        assert event["outcome"] == "ok" and event["actor_user_id"] == member["id"]
        assert event["actor_key_id"] == done["actor_key_id"]
        assert event["request_id"] == "pipeline-e2e-7"
    created = [e["target_id"] for e in events if e["method"] == "create_node"]
    assert sorted(created) == sorted(ids.values())
    assert (await rpc.call("verify_audit_chain", {"tenant_id": t}))["ok"] is True


DB_ERRORS_PIPELINE = '''
def run(input, db):
    seen = []
    try:
        db.get_node(input["missing"])
    except DbError as e:
        seen.append(["missing", e.code, e.kind, "node not found" in str(e)])
    try:
        db.create_node(input["node_type_id"], {"age": -3})
    except DbError as e:
        seen.append(["invalid", e.code, e.kind])
    try:
        db.execute_query("DELETE FROM nodes")
    except DbError as e:
        seen.append(["rejected", e.code, e.kind])
    try:
        db.create_relationship(input["missing"], input["missing"], "r")
    except DbError as e:
        seen.append(["dangling", e.code, e.kind])
    try:
        db.get_node(1, 2)
    except TypeError as e:
        seen.append(["positional", str(e)])
    node = db.create_node(input["node_type_id"], {"name": "ok"})["node"]
    return {"seen": seen, "node": node["id"]}
'''


async def test_refused_db_calls_raise_db_error_the_code_can_catch(rpc, tenant, node_type):
    t = tenant["id"]
    pipeline = await make_pipeline(rpc, t, DB_ERRORS_PIPELINE)
    missing = missing_id()
    done = await run(rpc, t, pipeline["id"], {"missing": missing, "node_type_id": node_type["id"]})
    assert done["status"] == "succeeded"
    seen = done["result"]["seen"]
    assert seen[0] == ["missing", -32001, "not_found", True]
    assert seen[1] == ["invalid", -32602, "invalid_params"]
    assert seen[2][:2] == ["rejected", -32006]
    assert seen[3][:2] == ["dangling", -32001]
    assert seen[4][0] == "positional" and "positional" in seen[4][1]
    operations = done["db_operations"]
    assert [(op["method"], op["ok"]) for op in operations] == [
        ("get_node", False), ("create_node", False), ("execute_query", False),
        ("create_relationship", False), ("create_node", True)]
    assert "node not found" in operations[0]["error"]
    assert all(op["error"] for op in operations[:4]) and "error" not in operations[4]
    node = (await rpc.call("get_node", {"tenant_id": t, "id": done["result"]["node"]}))["node"]
    assert node["data"] == {"name": "ok"}
    nodes = await rpc.call("list_nodes", {"tenant_id": t})
    assert [n["id"] for n in nodes["nodes"]] == [node["id"]]  # the refused writes left nothing


async def test_an_uncaught_db_error_fails_the_run_and_keeps_earlier_writes(rpc, tenant,
                                                                           node_type):
    t = tenant["id"]
    code = ("def run(input, db):\n"
            "    db.create_node(input, {'name': 'first'})\n"
            "    db.create_node(input, {'name': 7})\n"
            "    return 'unreachable'\n")
    pipeline = await make_pipeline(rpc, t, code)
    failed = await failed_run(rpc, t, pipeline["id"], node_type["id"])
    assert failed["status"] == "failed" and failed["result"] is None
    assert failed["error"]["type"] == "exception"
    assert failed["error"]["message"].startswith("DbError: ")
    assert failed["error"]["traceback"].splitlines()[1:-1] == ["  line 3, in run"]
    assert "/" not in failed["error"]["traceback"]
    assert [(op["method"], op["ok"]) for op in failed["db_operations"]] == [
        ("create_node", True), ("create_node", False)]
    nodes = (await rpc.call("list_nodes", {"tenant_id": t}))["nodes"]
    assert [n["data"] for n in nodes] == [{"name": "first"}]  # no transaction around a run


# ---------------------------------------------------------------- the run record

FAILING = '''def helper(x):
    return 10 / x


def run(input, db):
    print("dividing by", input)
    return helper(input)
'''


async def test_a_failing_run_reports_only_pipeline_lines(rpc, tenant):
    t = tenant["id"]
    pipeline = await make_pipeline(rpc, t, FAILING)
    assert (await run(rpc, t, pipeline["id"], 5))["result"] == 2.0
    failed = await failed_run(rpc, t, pipeline["id"], 0)
    assert set(failed) == RUN_KEYS
    assert failed["status"] == "failed" and failed["result"] is None
    error = failed["error"]
    assert error["type"] == "exception"
    assert error["message"] == "ZeroDivisionError: division by zero"
    traceback = error["traceback"]
    assert traceback.splitlines() == ["Traceback (pipeline code):", "  line 7, in run",
                                      "  line 2, in helper",
                                      "ZeroDivisionError: division by zero"]
    for leak in ("/", "sandbox_worker", "child.py", ".py", "File ", "site-packages"):
        assert leak not in traceback
    assert failed["output"] == "dividing by 0\n"
    assert failed["duration_ms"] > 0 and failed["cpu_ms"] is not None
    assert await get_run(rpc, t, failed["id"]) == failed

    verbose = await failed_run(rpc, t, pipeline["id"], 0, debug_level="verbose")
    assert "line 2, in helper" in verbose["error"]["traceback"]
    quiet = await failed_run(rpc, t, pipeline["id"], 0, debug_level="none")
    assert quiet["debug_level"] == "none"
    assert "traceback" not in quiet["error"]
    assert quiet["error"]["message"] == "ZeroDivisionError: division by zero"
    assert "traceback" not in (await get_run(rpc, t, quiet["id"]))["error"]
    with pytest.raises(InvalidParams):
        await run(rpc, t, pipeline["id"], 1, debug_level="everything")


async def test_an_exception_raised_from_a_nested_call_in_a_loop(rpc, tenant):
    code = ("import json\n"
            "\n"
            "def parse(text):\n"
            "    return json.loads(text)\n"
            "\n"
            "def run(input, db):\n"
            "    return [parse(item) for item in input]\n")
    pipeline = await make_pipeline(rpc, tenant["id"], code)
    assert (await run(rpc, tenant["id"], pipeline["id"], ["1", "[2]"]))["result"] == [1, [2]]
    failed = await failed_run(rpc, tenant["id"], pipeline["id"], ["1", "{"])
    lines = failed["error"]["traceback"].splitlines()
    assert lines[1:3] == ["  line 7, in run", "  line 7, in <listcomp>"] or \
        lines[1] == "  line 7, in run"
    assert "  line 4, in parse" in lines
    assert lines[-1].startswith("JSONDecodeError: ")
    assert "/" not in failed["error"]["traceback"]


UNICODE_INPUT = {
    "text": "Grüße, 世界 🌍 — \"quotes\" \\ back\\slash \u2028 \t tab",
    "nested": {"a": [1, 2.5, -0.125, None, True, False, {"deep": [[[]]]}], "b": {}, "c": []},
    "big": 2 ** 53, "neg": -(2 ** 40), "exp": 1.5e300,
    "emoji_key_🔑": "value", "": "empty key",
}


@pytest.mark.parametrize("value", [UNICODE_INPUT, "just a string ✓", 42, 3.25, True, [None],
                                   []])
async def test_input_and_result_round_trip(rpc, tenant, value):
    code = ("def run(input, db):\n"
            "    return {'echo': input}\n")
    pipeline = await make_pipeline(rpc, tenant["id"], code)
    done = await run(rpc, tenant["id"], pipeline["id"], value)
    assert done["input"] == value
    assert done["result"]["echo"] == value
    stored = await get_run(rpc, tenant["id"], done["id"])
    assert stored["input"] == value and stored["result"] == done["result"]


async def test_no_input_is_null_and_nul_is_refused(rpc, tenant):
    t = tenant["id"]
    pipeline = await make_pipeline(rpc, t, "def run(input, db):\n    return [input]\n")
    done = (await rpc.call("run_pipeline", {"tenant_id": t, "pipeline_id": pipeline["id"]}))[
        "run"]
    assert (done["input"], done["result"]) == (None, [None])
    for bad in ("a\x00b", {"k": ["\x00"]}, {"\x00": 1}):
        with pytest.raises(InvalidParams) as exc:
            await run(rpc, t, pipeline["id"], bad)
        assert exc.value.data["errors"][0]["field"].startswith("input")
    for bad in ({"wait": "yes"}, {"wait": 1}, {"debug_level": None}, {"extra": 1}):
        with pytest.raises(InvalidParams):
            await rpc.call("run_pipeline", {"tenant_id": t, "pipeline_id": pipeline["id"],
                                            **bad})
    assert len(await all_runs(rpc, t)) == 1


async def test_results_that_are_not_json_fail_the_run(rpc, tenant):
    t = tenant["id"]
    for body, words in (("return {1, 2}", "not JSON serializable"),
                        ("return float('nan')", "not JSON compliant"),
                        ("return len", "not JSON serializable")):
        pipeline = await make_pipeline(rpc, t, f"def run(input, db):\n    {body}\n")
        failed = await failed_run(rpc, t, pipeline["id"])
        assert failed["status"] == "failed" and failed["result"] is None
        assert failed["error"]["type"] == "exception"
        assert words.lower() in failed["error"]["message"].lower()
    pipeline = await make_pipeline(rpc, t, "def run(input, db):\n    return {'t': (1, 2)}\n")
    assert (await run(rpc, t, pipeline["id"]))["result"] == {"t": [1, 2]}


NUL_IN_OUTCOME = {
    "result": "return 'a\\x00b'",
    "result_key": "return {'k\\x00': 1}",
    "output": "print('a\\x00b')\n    return 1",
    "error_message": "raise ValueError('x\\x00y')",
}


@pytest.mark.parametrize("case", sorted(NUL_IN_OUTCOME))
async def test_a_nul_in_what_a_run_produces_is_recorded(rpc, tenant, case):
    t = tenant["id"]
    pipeline = await make_pipeline(rpc, t, f"def run(input, db):\n    {NUL_IN_OUTCOME[case]}\n",
                                   timeout_ms=1000)
    try:
        answered = await run(rpc, t, pipeline["id"])
    except PipelineFailed as exc:  # failing the run is fine; not recording it is not
        answered = exc.data["run"]
    stored = await get_run(rpc, t, answered["id"])
    assert stored["status"] in ("succeeded", "failed")
    assert stored["finished_at"] is not None and stored["duration_ms"] is not None


WORKER_UNSENDABLE = {
    "int_beyond_64_bits": "return 2 ** 64",
    "lone_surrogate_result": "return '\\ud800'",
    "lone_surrogate_output": "print('\\ud800')\n    return 1",
}


@pytest.mark.parametrize("case", sorted(WORKER_UNSENDABLE))
async def test_a_result_the_worker_cannot_encode_is_the_runs_own_failure(rpc, tenant, case):
    t = tenant["id"]
    pipeline = await make_pipeline(rpc, t,
                                   f"def run(input, db):\n    {WORKER_UNSENDABLE[case]}\n")
    try:
        answered = await run(rpc, t, pipeline["id"])
    except PipelineFailed as exc:
        answered = exc.data["run"]
    assert answered["status"] in ("succeeded", "failed")
    if answered["status"] == "failed":
        assert answered["error"]["type"] not in ("sandbox_unavailable", "crashed")
    assert answered["duration_ms"] is not None and answered["cpu_ms"] is not None


async def test_get_and_list_runs_with_filters_and_pagination(rpc, tenant):
    t = tenant["id"]
    first = await make_pipeline(rpc, t, FAILING)
    second = await make_pipeline(rpc, t)
    made = [await run(rpc, t, first["id"], 1),
            await failed_run(rpc, t, first["id"], 0),
            await run(rpc, t, second["id"], "x"),
            await run(rpc, t, first["id"], 2),
            await failed_run(rpc, t, first["id"], 0)]
    ids = [r["id"] for r in made]
    listed = await all_runs(rpc, t)
    assert [r["id"] for r in listed] == ids  # oldest first
    assert set(listed[0]) == RUN_KEYS
    assert listed[0] == await get_run(rpc, t, ids[0])
    assert [r["id"] for r in await all_runs(rpc, t, page_size=2)] == ids
    page = await rpc.call("list_pipeline_runs", {"tenant_id": t, "pagination": {"page_size": 2}})
    assert page["pagination"]["total_count"] == 5 and len(page["runs"]) == 2
    assert page["pagination"]["next_page_token"]
    by_pipeline = await all_runs(rpc, t, page_size=1, pipeline_id=first["id"])
    assert [r["id"] for r in by_pipeline] == [ids[0], ids[1], ids[3], ids[4]]
    failed = await all_runs(rpc, t, status="failed")
    assert [r["id"] for r in failed] == [ids[1], ids[4]]
    page = await rpc.call("list_pipeline_runs", {"tenant_id": t, "status": "succeeded",
                                                  "pipeline_id": first["id"]})
    assert [r["id"] for r in page["runs"]] == [ids[0], ids[3]]
    assert page["pagination"]["total_count"] == 2
    assert await all_runs(rpc, t, status="failed", pipeline_id=second["id"]) == []
    assert await all_runs(rpc, t, status="queued") == []
    assert await all_runs(rpc, t, pipeline_id=missing_id()) == []
    for bad in ({"status": "done"}, {"status": ""}, {"pipeline_id": "nope"},
                {"pagination": {"page_size": 0.5}}, {"pagination": {"page_token": "garbage"}}):
        with pytest.raises(InvalidParams):
            await rpc.call("list_pipeline_runs", {"tenant_id": t, **bad})
    with pytest.raises(NotFound) as exc:
        await get_run(rpc, t, missing_id())
    assert exc.value.data["kind"] == "pipeline_run"
    with pytest.raises(NotFound) as exc:
        await rpc.call("list_pipeline_runs", {"tenant_id": missing_id()})
    assert exc.value.data["kind"] == "tenant"


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

    with fresh_database(pg_server_url) as url:
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


async def test_a_run_over_its_timeout_is_timed_out(rpc, tenant):
    t = tenant["id"]
    pipeline = await make_pipeline(rpc, t, SPIN, timeout_ms=300)
    started = time.monotonic()
    failed = await failed_run(rpc, t, pipeline["id"])
    assert time.monotonic() - started < 5
    assert failed["status"] == "timed_out"
    assert failed["error"]["type"] in ("timeout", "cpu_limit")
    assert await all_runs(rpc, t, status="timed_out") != []


# ---------------------------------------------------------------- restarts
# Sync tests: starting and stopping servers blocks, and fresh_database runs its own loop.

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

    with fresh_database(pg_server_url) as url:
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

    with fresh_database(pg_server_url) as url:
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


# ---------------------------------------------------------------- execution tokens

def _claims(tenant_id, run_id, user_id=None, role="member", expires_in=60.0, key_id=None):
    return ExecutionClaims(uuid.UUID(tenant_id), uuid.UUID(user_id) if user_id else None,
                           uuid.UUID(key_id) if key_id else None, uuid.UUID(run_id), role,
                           time.time() + expires_in)


def token_for(claims: ExecutionClaims, secret: str = TEST_SECRET) -> str:
    return mint(secret.encode(), claims)


class Scene:
    """On the idle server: tenants A and B with a node each, and a queued run of A marked
    'running' in SQL (so that its token is accepted)."""


@pytest.fixture(scope="module")
def scene(idle):
    return asyncio.run(_build_scene(idle))


async def _build_scene(idle) -> Scene:
    s = Scene()
    s.server = idle
    async with FlexDBClient(idle.url, api_key=idle.admin_key) as c:
        s.user_id = await own_user_id(c)
        s.a = (await c.call("create_tenant", {"slug": unique("a"), "name": "A"}))["tenant"]["id"]
        s.b = (await c.call("create_tenant", {"slug": unique("b"), "name": "B"}))["tenant"]["id"]
        s.nt = {}
        s.node = {}
        for t in (s.a, s.b):
            s.nt[t] = (await c.call("create_node_type", {"tenant_id": t, "name": "N"}))[
                "node_type"]["id"]
            s.node[t] = (await c.call("create_node", {"tenant_id": t, "node_type_id": s.nt[t],
                                                      "data": {"t": t}}))["node"]["id"]
        s.pipeline = await make_pipeline(c, s.a)
        s.run = (await run(c, s.a, s.pipeline["id"], wait=False))["id"]
        s.queued = (await run(c, s.a, s.pipeline["id"], wait=False))["id"]
        s.finished = (await run(c, s.a, s.pipeline["id"], "done"))["id"]
        pipeline_b = await make_pipeline(c, s.b)
        s.run_b = (await run(c, s.b, pipeline_b["id"], wait=False))["id"]
    await sql(idle.database_url,
              "UPDATE pipeline_runs SET status = 'running', started_at = now(), "
              "deadline = now() + interval '10 minutes' WHERE id = ANY($1::uuid[])",
              [uuid.UUID(s.run), uuid.UUID(s.run_b)])
    return s


async def token_call(scene, token: str, method: str, params: dict):
    async with FlexDBClient(scene.server.url, api_key=token) as c:
        return await c.call(method, params)


async def test_a_running_runs_token_reads_and_writes_its_tenant(scene):
    token = token_for(_claims(scene.a, scene.run, scene.user_id))
    node = await token_call(scene, token, "get_node", {"tenant_id": scene.a,
                                                       "id": scene.node[scene.a]})
    assert node["node"]["data"] == {"t": scene.a}
    created = await token_call(scene, token, "create_node", {
        "tenant_id": scene.a, "node_type_id": scene.nt[scene.a], "data": {"by": "token"}})
    listed = await token_call(scene, token, "execute_query", {
        "tenant_id": scene.a, "sql": "SELECT count(*) FROM nodes"})
    assert listed["rows"][0][0] >= 2
    await token_call(scene, token, "delete_node", {"tenant_id": scene.a,
                                                   "id": created["node"]["id"]})
    async with FlexDBClient(scene.server.url, api_key=scene.server.admin_key) as c:
        events = await audit_events(c, scene.a, target_id=created["node"]["id"])
    assert [(e["method"], e["actor_user_id"]) for e in events] == [
        ("create_node", scene.user_id), ("delete_node", scene.user_id)]


async def test_a_token_is_confined_to_its_tenant(scene):
    token = token_for(_claims(scene.a, scene.run, scene.user_id))
    for method, params in (("get_node", {"id": scene.node[scene.b]}),
                           ("list_nodes", {}),
                           ("create_node", {"node_type_id": scene.nt[scene.b]}),
                           ("execute_query", {"sql": "SELECT 1"})):
        with pytest.raises(NotFound) as exc:
            await token_call(scene, token, method, {"tenant_id": scene.b, **params})
        assert exc.value.code == -32001 and exc.value.data["kind"] == "tenant", method
    with pytest.raises(NotFound) as exc:  # B's node asked for in A: no such node in A
        await token_call(scene, token, "get_node", {"tenant_id": scene.a,
                                                    "id": scene.node[scene.b]})
    assert exc.value.data["kind"] == "node"
    # A token naming tenant B with a run of tenant A: no such running run in B.
    with pytest.raises(Unauthenticated):
        await token_call(scene, token_for(_claims(scene.b, scene.run, scene.user_id)),
                         "get_node", {"tenant_id": scene.b, "id": scene.node[scene.b]})
    token_b = token_for(_claims(scene.b, scene.run_b, scene.user_id))
    assert (await token_call(scene, token_b, "get_node", {
        "tenant_id": scene.b, "id": scene.node[scene.b]}))["node"]["data"] == {"t": scene.b}
    with pytest.raises(NotFound) as exc:
        await token_call(scene, token_b, "get_node", {"tenant_id": scene.a,
                                                      "id": scene.node[scene.a]})
    assert exc.value.data["kind"] == "tenant"


def another_tenants_params(s: Scene) -> dict[str, dict]:
    """Valid params for every db method, each naming tenant B's objects."""
    node, missing = s.node[s.b], missing_id()
    return {
        "get_node": {"id": node}, "list_nodes": {},
        "create_node": {"node_type_id": s.nt[s.b], "data": {"by": "a's run"}},
        "create_nodes": {"nodes": [{"node_type_id": s.nt[s.b], "data": {"by": "a's run"}}]},
        "update_node": {"id": node, "data": {"t": "overwritten"}}, "delete_node": {"id": node},
        "get_relationship": {"id": missing}, "list_relationships": {},
        "create_relationship": {"source_node_id": node, "target_node_id": node,
                                "relationship_type": "knows", "data": {}},
        "update_relationship": {"id": missing, "data": {}},
        "delete_relationship": {"id": missing},
        "query_nodes": {"filter": {"field": "data.t", "op": "eq", "value": s.b}},
        "traverse": {"start_node_id": node},
        "shortest_path": {"source_node_id": node, "target_node_id": node},
        "execute_query": {"sql": "SELECT count(*) FROM nodes"},
    }


async def test_every_db_method_refuses_another_tenant_at_the_server(scene):
    """What the sandbox worker refuses (a db call naming another tenant, see
    test_sandbox_escapes.py) the server refuses too, for each method a run's token may call:
    the token is bound to its tenant, whatever the params say."""
    token = token_for(_claims(scene.a, scene.run, scene.user_id))
    calls = another_tenants_params(scene)
    assert set(calls) == set(run_db_methods())
    for method, params in calls.items():
        with pytest.raises(NotFound) as exc:
            await token_call(scene, token, method, {"tenant_id": scene.b, **params})
        assert exc.value.code == -32001 and exc.value.data["kind"] == "tenant", method
    async with FlexDBClient(scene.server.url, api_key=scene.server.admin_key) as c:
        nodes = (await c.call("list_nodes", {"tenant_id": scene.b}))["nodes"]
    assert [(n["id"], n["data"], n["version"]) for n in nodes] == \
        [(scene.node[scene.b], {"t": scene.b}, 1)]


OUTSIDE_METHODS = [
    ("create_api_key", lambda s: {"name": "stolen"}),
    ("create_tenant", lambda s: {"slug": unique("x"), "name": "X"}),
    ("delete_tenant", lambda s: {"id": s.a}),
    ("update_tenant", lambda s: {"id": s.a, "name": "taken"}),
    ("create_node_type", lambda s: {"tenant_id": s.a, "name": unique("T")}),
    ("add_user_to_tenant", lambda s: {"tenant_id": s.a, "user_id": s.user_id,
                                      "role": "viewer"}),
    ("run_pipeline", lambda s: {"tenant_id": s.a, "pipeline_id": s.pipeline["id"]}),
    ("create_pipeline", lambda s: {"tenant_id": s.a, "name": unique("p"), "code": ECHO}),
    ("get_pipeline", lambda s: {"tenant_id": s.a, "id": s.pipeline["id"]}),
    ("get_pipeline_run", lambda s: {"tenant_id": s.a, "id": s.run}),
    ("cancel_pipeline_run", lambda s: {"tenant_id": s.a, "id": s.queued}),
    ("list_audit_events", lambda s: {"tenant_id": s.a}),
    ("list_tenants", lambda s: {}),
    ("list_users", lambda s: {}),
    ("get_user", lambda s: {"id": s.user_id}),
    ("list_api_keys", lambda s: {}),
    ("create_relationships", lambda s: {"tenant_id": s.a, "relationships": []}),
]


@pytest.mark.parametrize("role", ["member", "owner"])
async def test_a_token_calls_only_the_db_methods(scene, role):
    token = token_for(_claims(scene.a, scene.run, scene.user_id, role=role))
    for method, params in OUTSIDE_METHODS:
        assert REGISTRY[method].run_db is None
        with pytest.raises(Forbidden) as exc:
            await token_call(scene, token, method, params(scene))
        assert exc.value.code == -32003, method
        assert exc.value.data["required_role"] == "api_key", method
    async with FlexDBClient(scene.server.url, api_key=scene.server.admin_key) as c:
        assert (await c.call("get_tenant", {"id": scene.a}))["tenant"]["name"] == "A"
        assert (await get_run(c, scene.a, scene.queued))["status"] == "queued"


async def test_a_token_calls_exactly_the_methods_registered_for_it(idle):
    """Walks the registry with a running run's token: every method registered without
    run_db is refused for that reason (forbidden, required_role api_key, before any role or
    tenant check), and every method registered with it is let through."""
    async with FlexDBClient(idle.url, api_key=idle.admin_key) as admin:
        world = await World.build(admin)
        pipeline = await make_pipeline(admin, world.tid)
        run_id = (await run(admin, world.tid, pipeline["id"], wait=False))["id"]
        await sql(idle.database_url, "UPDATE pipeline_runs SET status = 'running', started_at "
                  "= now(), deadline = now() + interval '10 minutes' WHERE id = $1",
                  uuid.UUID(run_id))
        token = token_for(_claims(world.tid, run_id, await own_user_id(admin)))
        refused, failures = [], []
        async with FlexDBClient(idle.url, api_key=token) as c:
            for method, spec in sorted(REGISTRY.items()):
                params = await world.params(method, None)
                try:
                    await c.call(method, params)
                    if spec.run_db is None:
                        failures.append(f"{method}: answered a token")
                except Forbidden as exc:
                    if spec.run_db is not None:
                        failures.append(f"{method}: refused ({exc.message})")
                    elif exc.code != -32003 or exc.data.get("required_role") != "api_key" \
                            or exc.message != f"A pipeline run's db object cannot call {method}":
                        failures.append(f"{method}: refused for another reason: {exc.data}")
                    else:
                        refused.append(method)
    assert not failures, "\n".join(failures)
    assert set(refused) == {n for n, s in REGISTRY.items() if s.run_db is None}


DB_SURFACE = """
def run(input, db):
    offered = {}
    for name in input:
        if hasattr(db, name):
            try:
                getattr(db, name)(1, 2, 3, 4, 5, 6, 7, 8, 9)
            except TypeError as e:
                offered[name] = str(e)
    return offered
"""


async def test_the_sandbox_db_offers_exactly_the_registry_token_methods(rpc, tenant):
    """What a run's `db` object has (methods, and how many params each takes by position)
    is what the registry declares token-callable: the sandbox worker keeps no list."""
    pipeline = await make_pipeline(rpc, tenant["id"], DB_SURFACE)
    asked = sorted(REGISTRY) + ["call", "channel", "send", "rpc.discover"]
    done = await run(rpc, tenant["id"], pipeline["id"], asked)
    assert done["status"] == "succeeded" and done["db_operations"] == []
    assert done["result"] == {
        name: f"{name}() takes at most {len(positional)} positional arguments"
        for name, positional in run_db_methods().items()}


async def test_a_tokens_role_is_enforced(scene):
    viewer = token_for(_claims(scene.a, scene.run, scene.user_id, role="viewer"))
    await token_call(scene, viewer, "get_node", {"tenant_id": scene.a, "id": scene.node[scene.a]})
    with pytest.raises(Forbidden) as exc:
        await token_call(scene, viewer, "create_node", {"tenant_id": scene.a,
                                                        "node_type_id": scene.nt[scene.a]})
    assert exc.value.data["role"] == "viewer"


def test_the_runner_caps_the_tokens_role_at_member():
    assert [token_role(r) for r in ("viewer", "member", "admin", "owner")] == \
        ["viewer", "member", "member", "member"]
    tenant_id, run_id, user_id, key_id = (uuid.uuid4() for _ in range(4))
    deadline = datetime.now(timezone.utc) + timedelta(seconds=30)
    record = {"id": run_id, "tenant_id": tenant_id, "actor_user_id": user_id,
              "actor_key_id": key_id, "actor_role": "owner", "deadline": deadline,
              "code": ECHO, "input": {"a": 1}, "timeout_ms": 30_000, "memory_mb": 64,
              "request_id": "r-1", "debug_level": "basic"}
    job = PipelineRunner(None, None, partial(run_token, TEST_SECRET.encode()), 0, 1,
                         db_methods=run_db_methods()).job(record)
    assert job["db_methods"] == run_db_methods()
    claims = verify(TEST_SECRET.encode(), job["token"])
    assert claims == ExecutionClaims(tenant_id, user_id, key_id, run_id, "member",
                                     claims.expires_at)
    assert abs(claims.expires_at - (deadline.timestamp() + 2.0)) < 0.01
    assert (job["run_id"], job["tenant_id"], job["input"], job["timeout_ms"]) == \
        (str(run_id), str(tenant_id), {"a": 1}, 30_000)
    with pytest.raises(ValueError):
        verify(b"another secret", job["token"])


async def test_refused_tokens(scene, idle):
    good = _claims(scene.a, scene.run, scene.user_id)
    params = {"tenant_id": scene.a, "id": scene.node[scene.a]}
    header, payload = token_for(good).split(".")

    def tampered_role() -> str:  # the claims say owner, the signature is the member's
        encoded = header[len("fdbx_"):]
        body = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
        body["role"] = "owner"
        raw = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
        return f"fdbx_{raw}.{payload}"

    cases = {
        "finished run": (token_for(_claims(scene.a, scene.finished, scene.user_id)),
                         "not running"),
        "queued run": (token_for(_claims(scene.a, scene.queued, scene.user_id)), "not running"),
        "unknown run": (token_for(_claims(scene.a, missing_id(), scene.user_id)), "not running"),
        "other secret": (token_for(good, secret="another-secret-of-the-same-length-0123456789"),
                         "signature"),
        "expired": (token_for(_claims(scene.a, scene.run, scene.user_id, expires_in=-1)),
                    "expired"),
        "tampered": (tampered_role(), "signature"),
        "truncated": (token_for(good)[:-4], "signature"),
        "malformed": ("fdbx_not-a-token", "malformed"),
        "too long": ("fdbx_" + "a" * 2000, "not an execution token"),
    }
    for name, (token, words) in cases.items():
        with pytest.raises(Unauthenticated) as exc:
            await token_call(scene, token, "get_node", params)
        assert exc.value.code == -32002, name
        assert words in exc.value.message, (name, exc.value.message)
    await token_call(scene, token_for(good), "get_node", params)  # the good one still works


async def test_a_token_dies_with_its_run(idle, scene):
    async with FlexDBClient(idle.url, api_key=idle.admin_key) as c:
        queued = (await run(c, scene.a, scene.pipeline["id"], wait=False))["id"]
    await sql(idle.database_url, "UPDATE pipeline_runs SET status = 'running', "
              "started_at = now(), deadline = now() + interval '1 minute' WHERE id = $1",
              uuid.UUID(queued))
    token = token_for(_claims(scene.a, queued, scene.user_id))
    params = {"tenant_id": scene.a, "id": scene.node[scene.a]}
    await token_call(scene, token, "get_node", params)
    async with FlexDBClient(idle.url, api_key=idle.admin_key) as c:
        await c.call("cancel_pipeline_run", {"tenant_id": scene.a, "id": queued})
    with pytest.raises(Unauthenticated) as exc:
        await token_call(scene, token, "get_node", params)
    assert "not running" in exc.value.message


async def test_a_real_finished_runs_token_is_refused(server, rpc, tenant):
    pipeline = await make_pipeline(rpc, tenant["id"])
    done = await run(rpc, tenant["id"], pipeline["id"], 1)
    user_id = await own_user_id(rpc)
    token = token_for(_claims(tenant["id"], done["id"], user_id))
    async with FlexDBClient(server.url, api_key=token) as c:
        with pytest.raises(Unauthenticated) as exc:
            await c.call("list_nodes", {"tenant_id": tenant["id"]})
    assert exc.value.code == -32002


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


