"""Stored pipelines: create_pipeline, get_pipeline, list_pipelines, update_pipeline and
delete_pipeline (CRUD, the checks on fields and code, limits, expected_version, names per
tenant, deleting a pipeline deletes its runs). What code is refused when saved, in detail,
is in test_pipeline_save_checks.py; runs in test_pipeline_runs.py, the queue in
test_pipeline_queue.py, cancel_pipeline_run in test_pipeline_cancel.py, execution tokens in
test_pipeline_tokens.py, who may do what in test_pipeline_permissions.py."""
from __future__ import annotations

import uuid

import pytest

from rpc_server.client import Conflict, FlexDBClient, InvalidParams, NotFound

from .conftest import missing_id, unique
from .pipeline_helpers import ECHO, all_runs, get_run, make_pipeline, run, sql

PIPELINE_KEYS = {"id", "tenant_id", "name", "description", "code", "timeout_ms", "memory_mb",
                 "created_at", "updated_at", "version"}


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
