"""run_pipeline and its run record: runs that read and write the graph through `db`, errors
from `db` calls, what a run records (result, output, timings, db operations, errors and
tracebacks), input and result round trips, timeouts, and get_pipeline_run /
list_pipeline_runs with filters and pagination. Escapes and resource abuse live in
test_sandbox_escapes.py."""
from __future__ import annotations

import time
import uuid

import asyncpg
import pytest
from aiohttp import web

from rpc_server.client import (
    FlexDBClient,
    InvalidParams,
    NotFound,
    PipelineFailed,
    QueryRejected,
)

from .auth_helpers import World
from .conftest import (
    TEST_SANDBOX_SECRET,
    free_port,
    missing_id,
    running_server,
    server_with_sandbox,
    unique,
)
from .pipeline_helpers import (
    FAILING,
    RUN_KEYS,
    SPIN,
    all_runs,
    audit_events,
    failed_run,
    get_run,
    make_pipeline,
    run,
)

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


async def test_a_run_over_its_timeout_is_timed_out(rpc, tenant):
    t = tenant["id"]
    pipeline = await make_pipeline(rpc, t, SPIN, timeout_ms=300)
    started = time.monotonic()
    failed = await failed_run(rpc, t, pipeline["id"])
    assert time.monotonic() - started < 5
    assert failed["status"] == "timed_out"
    assert failed["error"]["type"] in ("timeout", "cpu_limit")
    assert await all_runs(rpc, t, status="timed_out") != []


async def test_a_run_the_sandbox_refuses_fails_as_refused_not_unavailable(database_url):
    """A sandbox worker that refuses the run itself (HTTP 4xx, as for a body past its limit)
    fails it for that reason: it is not 'sandbox_unavailable', which jobs retry (forever,
    since the same run is refused again)."""
    refused: list[str] = []

    async def runs(request: web.Request) -> web.Response:
        refused.append(request.path)
        return web.Response(status=413, text="too large")

    app = web.Application()
    app.router.add_post("/runs", runs)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        with running_server({"FLEXDB_DATABASE_URL": database_url,
                             "FLEXDB_SANDBOX_URL": f"http://127.0.0.1:{port}",
                             "FLEXDB_SANDBOX_SECRET": TEST_SANDBOX_SECRET}) as srv:
            async with FlexDBClient(srv.url, api_key=srv.admin_key) as rpc:
                t = (await rpc.call("create_tenant", {"slug": unique("t"),
                                                      "name": "T"}))["tenant"]["id"]
                pipeline = await make_pipeline(rpc, t)
                with pytest.raises(PipelineFailed) as failed:
                    await rpc.call("run_pipeline", {"tenant_id": t, "pipeline_id": pipeline["id"],
                                                    "input": {"x": 1}, "wait": True})
                error = failed.value.data["run"]["error"]
                assert error["type"] == "sandbox_refused" and "HTTP 413" in error["message"]
                assert refused == ["/runs"]
    finally:
        await runner.cleanup()


async def test_a_run_whose_answer_passes_the_response_budget_says_which_run(database_url):
    """A run that waited for its outcome has happened whatever its answer's size: past the
    response's budget (here 256 KiB) the call answers response_too_large naming the run and
    how it ended, so a caller does not take it for a run that never took place."""
    with server_with_sandbox(database_url, FLEXDB_MAX_BODY_BYTES="131072",
                             FLEXDB_MAX_RESPONSE_BYTES="262144") as srv:
        async with FlexDBClient(srv.url, api_key=srv.admin_key) as rpc:
            t = (await rpc.call("create_tenant", {"slug": unique("t"),
                                                  "name": "T"}))["tenant"]["id"]
            pipeline = await make_pipeline(rpc, t, "def run(input, db):\n"
                                                   "    return 'r' * 200000\n")
            answered = await rpc.call("run_pipeline", {"tenant_id": t, "wait": True,
                                                       "pipeline_id": pipeline["id"]})
            assert len(answered["run"]["result"]) == 200_000  # (within 256 KiB)
            big = await make_pipeline(rpc, t, "def run(input, db):\n"
                                              "    return 'r' * 300000\n")
            with pytest.raises(QueryRejected) as refused:
                await rpc.call("run_pipeline", {"tenant_id": t, "pipeline_id": big["id"],
                                                "wait": True})
            data = refused.value.data
            assert data["type"] == "response_too_large" and data["status"] == "succeeded"
            assert "get_pipeline_run" in refused.value.message
    conn = await asyncpg.connect(database_url)  # (no answer can hold it: read it here)
    try:
        runs = await conn.fetch("SELECT id::text, status FROM pipeline_runs "
                                "WHERE pipeline_id = $1", uuid.UUID(big["id"]))
    finally:
        await conn.close()
    assert [tuple(r) for r in runs] == [(data["run_id"], "succeeded")]  # it happened, once
