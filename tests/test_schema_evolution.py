"""Schema evolution: every schema change is a new version, checked against the existing
nodes (refused in mode validate when any fails, accepted in allow_invalid with the count),
the dry run (check_node_type_schema), the versions (list_node_type_versions, get_node_type
{version}), the version each node records, query_nodes on it, and a schema change racing
concurrent writers."""
from __future__ import annotations

import asyncio
import random
import uuid
from contextlib import AsyncExitStack

import asyncpg
import pytest

from rpc_server.client import (
    Conflict,
    FlexDBClient,
    Forbidden,
    InvalidParams,
    NotFound,
    QueryRejected,
    RateLimited,
)

from .auth_helpers import new_user
from .conftest import get_node, list_all, make_node_type, make_tenant, missing_id

LOOSE = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
TIGHT = {"type": "object", "properties": {"n": {"type": "integer", "maximum": 9}},
         "required": ["n"]}


@pytest.fixture
async def make_member_rpc(rpc, server):
    """make(tenant_id, role): a client of a new user with that role in the tenant."""
    async with AsyncExitStack() as stack:
        async def make(tenant_id, role):
            user, key = await new_user(rpc)
            await rpc.call("add_user_to_tenant", {"tenant_id": tenant_id,
                                                  "user_id": user["id"], "role": role})
            return await stack.enter_async_context(FlexDBClient(server.url, api_key=key))
        yield make


async def make_nodes(rpc, tenant_id, node_type_id, values) -> list[dict]:
    made = []
    for start in range(0, len(values), 1000):
        made += (await rpc.call("create_nodes", {"tenant_id": tenant_id, "nodes": [
            {"node_type_id": node_type_id, "data": {"n": n}}
            for n in values[start:start + 1000]]}))["nodes"]
    return made


async def all_nodes(rpc, tenant_id, node_type_id) -> list[dict]:
    return await list_all(rpc, "list_nodes", "nodes", {"tenant_id": tenant_id,
                                                       "node_type_id": node_type_id})


async def typed(rpc, values, schema=LOOSE):
    tenant = await make_tenant(rpc)
    nt = await make_node_type(rpc, tenant["id"], schema=schema)
    nodes = await make_nodes(rpc, tenant["id"], nt["id"], values)
    return tenant["id"], nt, nodes


async def test_versions_start_at_one_and_nodes_record_theirs(rpc):
    tenant_id, nt, nodes = await typed(rpc, [1, 2])
    assert nt["schema_version"] == 1
    assert {n["schema_version"] for n in nodes} == {1}
    single = (await rpc.call("create_node", {"tenant_id": tenant_id, "node_type_id": nt["id"],
                                             "data": {"n": 3}}))["node"]
    assert single["schema_version"] == 1
    renamed = (await rpc.call("update_node_type", {"tenant_id": tenant_id, "id": nt["id"],
                                                   "name": "Renamed"}))
    # a change that is not of the schema makes no version and no report
    assert renamed["node_type"]["schema_version"] == 1 and "report" not in renamed
    assert renamed["node_type"]["version"] == 2


async def test_schema_change_makes_a_version_and_stamps_the_valid_nodes(rpc):
    tenant_id, nt, nodes = await typed(rpc, [1, 2, 3])
    changed = await rpc.call("update_node_type", {"tenant_id": tenant_id, "id": nt["id"],
                                                  "schema": TIGHT})
    assert changed["node_type"]["schema_version"] == 2
    assert changed["node_type"]["schema"] == TIGHT
    report = changed["report"]
    assert (report["schema_version"], report["nodes_checked"], report["nodes_failing"],
            report["failures"]) == (2, 3, 0, [])
    for node in nodes:
        got = await get_node(rpc, tenant_id, node["id"])
        # validated against version 2, and the stamp is no change of the node's own
        assert (got["schema_version"], got["version"], got["updated_at"]) == \
            (2, node["version"], node["updated_at"])
    versions = (await rpc.call("list_node_type_versions",
                               {"tenant_id": tenant_id, "id": nt["id"]}))["versions"]
    assert [(v["version"], v["schema"], v["mode"], v["nodes_checked"], v["nodes_invalid"])
            for v in versions] == [(1, LOOSE, "create", 0, 0), (2, TIGHT, "validate", 3, 0)]
    old = await rpc.call("get_node_type", {"tenant_id": tenant_id, "id": nt["id"],
                                           "version": 1})
    assert (old["node_type"]["schema"], old["node_type"]["schema_version"]) == (LOOSE, 1)
    now = await rpc.call("get_node_type", {"tenant_id": tenant_id, "id": nt["id"]})
    assert (now["node_type"]["schema"], now["node_type"]["schema_version"]) == (TIGHT, 2)
    with pytest.raises(NotFound) as exc:
        await rpc.call("get_node_type", {"tenant_id": tenant_id, "id": nt["id"], "version": 3})
    assert exc.value.data["kind"] == "node_type_version"


async def test_the_same_schema_again_makes_no_version(rpc):
    tenant_id, nt, _ = await typed(rpc, [1])
    again = await rpc.call("update_node_type", {"tenant_id": tenant_id, "id": nt["id"],
                                                "schema": LOOSE})
    assert again["node_type"]["schema_version"] == 1 and "report" not in again


async def test_tightening_with_invalid_nodes_is_refused_with_the_report(rpc):
    values = [1, 50, 2, 70, 3]
    tenant_id, nt, nodes = await typed(rpc, values)
    with pytest.raises(Conflict) as exc:
        await rpc.call("update_node_type", {"tenant_id": tenant_id, "id": nt["id"],
                                            "schema": TIGHT})
    assert exc.value.code == -32004 and exc.value.type == "nodes_invalid"
    report = exc.value.data["report"]
    assert (report["nodes_checked"], report["nodes_failing"]) == (5, 2)
    bad = {nodes[1]["id"], nodes[3]["id"]}
    assert {f["node_id"] for f in report["failures"]} == bad
    assert {f["path"] for f in report["failures"]} == {"data.n"}
    assert all("maximum" in f["message"] or "greater" in f["message"]
               for f in report["failures"])
    # nothing changed: the schema, its version, the nodes' versions
    now = (await rpc.call("get_node_type", {"tenant_id": tenant_id, "id": nt["id"]}))
    assert (now["node_type"]["schema"], now["node_type"]["schema_version"]) == (LOOSE, 1)
    assert {n["schema_version"] for n in await all_nodes(rpc, tenant_id, nt["id"])} == {1}
    versions = (await rpc.call("list_node_type_versions",
                               {"tenant_id": tenant_id, "id": nt["id"]}))["versions"]
    assert len(versions) == 1


async def test_allow_invalid_accepts_and_counts_and_query_finds_the_outdated(rpc):
    values = [1, 50, 2, 70, 3, 99]
    tenant_id, nt, nodes = await typed(rpc, values)
    changed = await rpc.call("update_node_type", {"tenant_id": tenant_id, "id": nt["id"],
                                                  "schema": TIGHT, "mode": "allow_invalid"})
    report = changed["report"]
    assert (report["nodes_checked"], report["nodes_failing"]) == (6, 3)
    assert changed["node_type"]["schema_version"] == 2
    by_id = {n["id"]: n["schema_version"] for n in await all_nodes(rpc, tenant_id, nt["id"])}
    bad = {n["id"] for n, v in zip(nodes, values) if v > 9}
    assert {i for i, v in by_id.items() if v == 1} == bad
    assert {i for i, v in by_id.items() if v == 2} == set(by_id) - bad
    outdated = await rpc.call("query_nodes", {
        "tenant_id": tenant_id, "node_type_id": nt["id"],
        "filter": {"field": "schema_version", "op": "lt", "value": "current"}})
    assert {n["id"] for n in outdated["nodes"]} == bad
    by_number = await rpc.call("query_nodes", {
        "tenant_id": tenant_id, "filter": {"field": "schema_version", "op": "eq", "value": 2}})
    assert {n["id"] for n in by_number["nodes"]} == set(by_id) - bad
    versions = (await rpc.call("list_node_type_versions",
                               {"tenant_id": tenant_id, "id": nt["id"]}))["versions"]
    assert (versions[-1]["mode"], versions[-1]["nodes_checked"],
            versions[-1]["nodes_invalid"]) == ("allow_invalid", 6, 3)
    # an invalid node written again is validated against the current version
    with pytest.raises(InvalidParams):
        await rpc.call("update_node", {"tenant_id": tenant_id, "id": sorted(bad)[0],
                                       "data": {"n": 10}})
    fixed = (await rpc.call("update_node", {"tenant_id": tenant_id, "id": sorted(bad)[0],
                                            "data": {"n": 5}}))["node"]
    assert fixed["schema_version"] == 2


async def test_query_on_schema_version_refuses_other_values(rpc):
    tenant_id, nt, _ = await typed(rpc, [1])
    for value in ["newest", 1.5, None, True]:
        with pytest.raises(InvalidParams) as exc:
            await rpc.call("query_nodes", {"tenant_id": tenant_id, "filter": {
                "field": "schema_version", "op": "lt", "value": value}})
        assert "current" in exc.value.data["errors"][0]["message"]


async def test_dry_run_reports_and_changes_nothing(rpc):
    values = [i % 20 for i in range(250)]
    tenant_id, nt, nodes = await typed(rpc, values)
    dry = (await rpc.call("check_node_type_schema", {"tenant_id": tenant_id, "id": nt["id"],
                                                     "schema": TIGHT, "max_failures": 7}))
    report = dry["report"]
    failing = sum(1 for v in values if v > 9)
    assert (report["nodes_checked"], report["nodes_failing"]) == (250, failing)
    assert len(report["failures"]) == 7 and report["failures_truncated"] is True
    assert report["schema_version"] is None and report["current_schema_version"] == 1
    expected_bad = {n["id"] for n, v in zip(nodes, values) if v > 9}
    assert {f["node_id"] for f in report["failures"]} <= expected_bad
    now = (await rpc.call("get_node_type", {"tenant_id": tenant_id, "id": nt["id"]}))
    assert (now["node_type"]["schema"], now["node_type"]["schema_version"]) == (LOOSE, 1)
    assert {n["schema_version"] for n in await all_nodes(rpc, tenant_id, nt["id"])} == {1}
    # a schema every node satisfies, and no schema at all
    for schema in [LOOSE, None, True]:
        ok = (await rpc.call("check_node_type_schema", {"tenant_id": tenant_id,
                                                        "id": nt["id"], "schema": schema}))
        assert (ok["report"]["nodes_checked"], ok["report"]["nodes_failing"]) == (250, 0)
    nothing = (await rpc.call("check_node_type_schema", {"tenant_id": tenant_id,
                                                         "id": nt["id"], "schema": False}))
    assert nothing["report"]["nodes_failing"] == 250


async def test_dry_run_of_an_invalid_schema_or_missing_type_is_refused(rpc):
    tenant_id, nt, _ = await typed(rpc, [1])
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("check_node_type_schema", {"tenant_id": tenant_id, "id": nt["id"],
                                                  "schema": {"type": "nope"}})
    assert exc.value.data["errors"][0]["field"] == "schema"
    with pytest.raises(NotFound):
        await rpc.call("check_node_type_schema", {"tenant_id": tenant_id, "id": missing_id(),
                                                  "schema": TIGHT})
    for bad in [{"max_failures": 101}, {"timeout_ms": 0}, {"timeout_ms": 600_001}]:
        with pytest.raises(InvalidParams):
            await rpc.call("check_node_type_schema", {"tenant_id": tenant_id, "id": nt["id"],
                                                      "schema": TIGHT, **bad})


async def test_dry_run_past_its_time_limit_is_stopped(rpc):
    tenant_id, nt, _ = await typed(rpc, list(range(3000)))
    with pytest.raises(QueryRejected) as exc:
        await rpc.call("check_node_type_schema", {"tenant_id": tenant_id, "id": nt["id"],
                                                  "schema": TIGHT, "timeout_ms": 1})
    assert exc.value.code == -32006 and exc.value.data["type"] == "timeout"
    with pytest.raises(QueryRejected) as exc:
        await rpc.call("update_node_type", {"tenant_id": tenant_id, "id": nt["id"],
                                            "schema": TIGHT, "mode": "allow_invalid",
                                            "timeout_ms": 1})
    assert exc.value.data["type"] == "timeout"
    now = (await rpc.call("get_node_type", {"tenant_id": tenant_id, "id": nt["id"]}))
    assert now["node_type"]["schema_version"] == 1  # the stopped change left nothing


async def test_a_member_may_not_check_or_change_a_schema(rpc, make_member_rpc):
    tenant_id, nt, _ = await typed(rpc, [1])
    member = await make_member_rpc(tenant_id, "member")
    for method, params in [("check_node_type_schema", {"schema": TIGHT}),
                           ("update_node_type", {"schema": TIGHT})]:
        with pytest.raises(Forbidden):
            await member.call(method, {"tenant_id": tenant_id, "id": nt["id"], **params})
    # a viewer reads the versions
    viewer = await make_member_rpc(tenant_id, "viewer")
    listed = await viewer.call("list_node_type_versions", {"tenant_id": tenant_id,
                                                           "id": nt["id"]})
    assert [v["version"] for v in listed["versions"]] == [1]


async def test_another_tenants_node_type_is_not_found(rpc, make_member_rpc):
    tenant_id, nt, _ = await typed(rpc, [1])
    other = await make_tenant(rpc)
    for method, params in [("check_node_type_schema", {"schema": TIGHT}),
                           ("list_node_type_versions", {}),
                           ("get_node_type", {"version": 1}),
                           ("update_node_type", {"schema": TIGHT})]:
        with pytest.raises(NotFound):
            await rpc.call(method, {"tenant_id": other["id"], "id": nt["id"], **params})
    # ... and to an admin of another tenant, the tenant itself is not found
    stranger = await make_member_rpc(other["id"], "admin")
    with pytest.raises(NotFound) as exc:
        await stranger.call("check_node_type_schema", {"tenant_id": tenant_id, "id": nt["id"],
                                                       "schema": TIGHT})
    assert exc.value.data["kind"] == "tenant"


async def test_versions_page_and_the_oldest_are_kept_within_the_setting(rpc):
    tenant_id, nt, _ = await typed(rpc, [1])
    for maximum in range(20, 25):
        schema = {"type": "object", "properties": {"n": {"type": "integer",
                                                         "maximum": maximum}}}
        await rpc.call("update_node_type", {"tenant_id": tenant_id, "id": nt["id"],
                                            "schema": schema})
    first = await rpc.call("list_node_type_versions", {
        "tenant_id": tenant_id, "id": nt["id"],
        "pagination": {"page_size": 4, "include_total": True}})
    assert [v["version"] for v in first["versions"]] == [1, 2, 3, 4]
    assert first["pagination"]["total_count"] == 6
    rest = await rpc.call("list_node_type_versions", {
        "tenant_id": tenant_id, "id": nt["id"],
        "pagination": {"page_size": 4, "page_token": first["pagination"]["next_page_token"]}})
    assert [v["version"] for v in rest["versions"]] == [5, 6]
    assert rest["pagination"]["next_page_token"] == ""
    with pytest.raises(InvalidParams):
        await rpc.call("list_node_type_versions", {
            "tenant_id": tenant_id, "id": nt["id"], "pagination": {"page_token": "bm9wZQ"}})


async def test_schema_change_racing_writers_never_leaves_a_node_checked_against_an_old_version(
        rpc):
    """Writers update and create nodes with values valid under the old schema (half of them
    not under the new) while the schema is tightened: afterwards every node that records
    the new version satisfies it."""
    tenant_id, nt, nodes = await typed(rpc, [random.randrange(10) for _ in range(2000)])
    ids = [n["id"] for n in nodes]
    stop = asyncio.Event()
    written = {"updates": 0, "refused": 0}

    async def writer():
        while not stop.is_set():
            try:
                await rpc.call("update_node", {"tenant_id": tenant_id, "id": random.choice(ids),
                                               "data": {"n": random.randrange(20)}})
                written["updates"] += 1
            except (InvalidParams, Conflict):
                written["refused"] += 1

    async def creator():
        while not stop.is_set():
            try:
                await rpc.call("create_node", {"tenant_id": tenant_id, "node_type_id": nt["id"],
                                               "data": {"n": random.randrange(20)}})
            except InvalidParams:
                pass

    tasks = [asyncio.ensure_future(w()) for w in (writer, writer, writer, creator)]
    await asyncio.sleep(0.3)
    changed = await rpc.call("update_node_type", {"tenant_id": tenant_id, "id": nt["id"],
                                                  "schema": TIGHT, "mode": "allow_invalid"})
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.gather(*tasks)
    assert changed["node_type"]["schema_version"] == 2 and written["updates"] > 10
    final = await all_nodes(rpc, tenant_id, nt["id"])
    wrong = [n for n in final if n["schema_version"] == 2 and n["data"]["n"] > 9]
    assert wrong == []
    assert {n["schema_version"] for n in final} <= {1, 2}
    assert any(n["schema_version"] == 2 for n in final)


async def test_schema_change_in_validate_mode_with_racing_valid_writes_stamps_every_node(rpc):
    tenant_id, nt, nodes = await typed(rpc, [random.randrange(10) for _ in range(2000)])
    ids = [n["id"] for n in nodes]
    stop = asyncio.Event()

    async def writer():
        while not stop.is_set():
            await rpc.call("update_node", {"tenant_id": tenant_id, "id": random.choice(ids),
                                           "data": {"n": random.randrange(10)}})

    tasks = [asyncio.ensure_future(writer()) for _ in range(3)]
    await asyncio.sleep(0.2)
    changed = await rpc.call("update_node_type", {"tenant_id": tenant_id, "id": nt["id"],
                                                  "schema": TIGHT})
    stop.set()
    await asyncio.gather(*tasks)
    assert changed["report"]["nodes_failing"] == 0
    final = await all_nodes(rpc, tenant_id, nt["id"])
    assert {n["schema_version"] for n in final} == {2} and len(final) == 2000


async def test_a_schema_change_undone_by_a_deadlock_answers_busy_and_changes_nothing(
        rpc, database_url):
    """A schema change waits on a node another transaction holds, which then waits on the
    node type: PostgreSQL breaks the deadlock by undoing the schema change, which answers
    -32005 busy (retry), not an internal error, and leaves the node type as it was."""
    tenant_id, nt, nodes = await typed(rpc, [1, 2, 3])
    other = await asyncpg.connect(database_url)
    try:
        await other.execute("SET deadlock_timeout = '10s'")  # the schema change detects it
        holding = other.transaction()
        await holding.start()
        await other.execute("UPDATE nodes SET updated_at = now() WHERE tenant_id = $1 "
                            "AND id = $2", uuid.UUID(tenant_id), uuid.UUID(nodes[-1]["id"]))
        change = asyncio.ensure_future(rpc.call("update_node_type", {
            "tenant_id": tenant_id, "id": nt["id"], "schema": TIGHT}))
        await asyncio.sleep(0.5)  # it has locked the node type and waits for that node
        locking = asyncio.ensure_future(other.execute(
            "SELECT 1 FROM node_types WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
            uuid.UUID(tenant_id), uuid.UUID(nt["id"])))
        with pytest.raises(RateLimited) as exc:
            await change
        assert exc.value.code == -32005 and exc.value.data["reason"] == "deadlock"
        await locking
        await holding.rollback()
    finally:
        await other.close()
    now = (await rpc.call("get_node_type", {"tenant_id": tenant_id, "id": nt["id"]}))
    assert now["node_type"]["schema_version"] == 1
    assert {n["schema_version"] for n in await all_nodes(rpc, tenant_id, nt["id"])} == {1}
