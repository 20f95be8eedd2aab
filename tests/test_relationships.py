"""Relationships: CRUD, list filters, tenant isolation (in the API and in the schema
itself), cascades from nodes, and the all-or-nothing bulk create_relationships."""
from __future__ import annotations

import uuid

import asyncpg
import pytest

from rpc_server.client import Conflict, InvalidParams, NotFound

from .conftest import error_fields, make_tenant, missing_id, unique

# ---------------------------------------------------------------- helpers

async def make_nodes(rpc, tenant_id, count) -> list[str]:
    """Ids of `count` new nodes (of a new schemaless node type) in the tenant."""
    nt = (await rpc.call("create_node_type", {"tenant_id": tenant_id,
                                              "name": unique("Thing")}))["node_type"]
    items = [{"node_type_id": nt["id"], "data": {"n": i}} for i in range(count)]
    created = await rpc.call("create_nodes", {"tenant_id": tenant_id, "nodes": items})
    return [n["id"] for n in created["nodes"]]


async def link(rpc, tenant_id, source, target, rel_type="knows", **extra) -> dict:
    return (await rpc.call("create_relationship", {
        "tenant_id": tenant_id, "source_node_id": source, "target_node_id": target,
        "relationship_type": rel_type, **extra}))["relationship"]


async def get_rel(rpc, tenant_id, rel_id) -> dict:
    return (await rpc.call("get_relationship", {"tenant_id": tenant_id, "id": rel_id}))[
        "relationship"]


async def listed_ids(rpc, tenant_id, **filters) -> list[str]:
    result = await rpc.call("list_relationships", {"tenant_id": tenant_id, **filters,
                                                   "pagination": {"page_size": 1000}})
    ids = [r["id"] for r in result["relationships"]]
    assert result["pagination"]["total_count"] == len(ids)
    return ids


async def count_rels(rpc, tenant_id) -> int:
    result = await rpc.call("list_relationships", {"tenant_id": tenant_id,
                                                   "pagination": {"page_size": 1}})
    return result["pagination"]["total_count"]


# ---------------------------------------------------------------- single relationships

async def test_create_get_update_delete_relationship(rpc, tenant):
    tid = tenant["id"]
    a, b = await make_nodes(rpc, tid, 2)
    rel = await link(rpc, tid, a, b, "knows", data={"since": 1833})
    assert (rel["tenant_id"], rel["source_node_id"], rel["target_node_id"]) == (tid, a, b)
    assert rel["relationship_type"] == "knows" and rel["data"] == {"since": 1833}
    assert rel["version"] == 1
    assert await get_rel(rpc, tid, rel["id"]) == rel

    updated = (await rpc.call("update_relationship", {
        "tenant_id": tid, "id": rel["id"], "relationship_type": "admires",
        "data": {"since": 1840}, "expected_version": 1}))["relationship"]
    assert updated["relationship_type"] == "admires" and updated["data"] == {"since": 1840}
    assert updated["version"] == 2
    assert (updated["source_node_id"], updated["target_node_id"]) == (a, b)
    assert await get_rel(rpc, tid, rel["id"]) == updated

    assert await rpc.call("delete_relationship", {"tenant_id": tid, "id": rel["id"]}) == \
        {"success": True}
    with pytest.raises(NotFound) as exc:
        await get_rel(rpc, tid, rel["id"])
    assert exc.value.data["kind"] == "relationship"
    with pytest.raises(NotFound):
        await rpc.call("delete_relationship", {"tenant_id": tid, "id": rel["id"]})
    # the nodes are untouched
    for node_id in (a, b):
        await rpc.call("get_node", {"tenant_id": tid, "id": node_id})


async def test_relationship_data_defaults_and_json_string(rpc, tenant):
    a, b = await make_nodes(rpc, tenant["id"], 2)
    assert (await link(rpc, tenant["id"], a, b))["data"] == {}
    assert (await link(rpc, tenant["id"], a, b, data='{"w": 2}'))["data"] == {"w": 2}


@pytest.mark.parametrize("data", ["[1]", 3, "{oops"])
async def test_relationship_data_must_be_an_object(rpc, tenant, data):
    a, b = await make_nodes(rpc, tenant["id"], 2)
    with pytest.raises(InvalidParams) as exc:
        await link(rpc, tenant["id"], a, b, data=data)
    assert error_fields(exc) == ["data"]
    assert await count_rels(rpc, tenant["id"]) == 0


@pytest.mark.parametrize("rel_type", ["", "x" * 101, " padded", "new\nline"])
async def test_bad_relationship_type_is_invalid_params(rpc, tenant, rel_type):
    a, b = await make_nodes(rpc, tenant["id"], 2)
    with pytest.raises(InvalidParams) as exc:
        await link(rpc, tenant["id"], a, b, rel_type)
    assert error_fields(exc) == ["relationship_type"]


@pytest.mark.parametrize("end", ["source_node", "target_node"])
async def test_missing_end_node_is_not_found(rpc, tenant, end):
    (a,) = await make_nodes(rpc, tenant["id"], 1)
    ends = {"source_node": a, "target_node": a, end: missing_id()}
    with pytest.raises(NotFound) as exc:
        await link(rpc, tenant["id"], ends["source_node"], ends["target_node"])
    assert exc.value.code == -32001 and exc.value.data["kind"] == end
    assert await count_rels(rpc, tenant["id"]) == 0


@pytest.mark.parametrize("end", ["source_node", "target_node"])
async def test_cross_tenant_relationship_is_not_found_and_creates_nothing(rpc, end):
    tenant_a, tenant_b = await make_tenant(rpc), await make_tenant(rpc)
    (in_a,) = await make_nodes(rpc, tenant_a["id"], 1)
    (in_b,) = await make_nodes(rpc, tenant_b["id"], 1)
    ends = {"source_node": in_a, "target_node": in_a, end: in_b}
    with pytest.raises(NotFound) as exc:
        await link(rpc, tenant_a["id"], ends["source_node"], ends["target_node"])
    assert exc.value.code == -32001 and exc.value.data["kind"] == end
    assert await count_rels(rpc, tenant_a["id"]) == 0
    assert await count_rels(rpc, tenant_b["id"]) == 0


async def test_relationship_of_another_tenant_is_not_found(rpc, tenant):
    a, b = await make_nodes(rpc, tenant["id"], 2)
    rel = await link(rpc, tenant["id"], a, b)
    other = await make_tenant(rpc)
    for method, extra in (("get_relationship", {}),
                          ("update_relationship", {"relationship_type": "stolen"}),
                          ("delete_relationship", {})):
        with pytest.raises(NotFound) as exc:
            await rpc.call(method, {"tenant_id": other["id"], "id": rel["id"], **extra})
        assert exc.value.data["kind"] == "relationship"
    assert await get_rel(rpc, tenant["id"], rel["id"]) == rel


async def test_update_relationship_type_only_and_data_only(rpc, tenant):
    tid = tenant["id"]
    a, b = await make_nodes(rpc, tid, 2)
    rel = await link(rpc, tid, a, b, "knows", data={"w": 1})
    typed = (await rpc.call("update_relationship", {"tenant_id": tid, "id": rel["id"],
                                                    "relationship_type": "likes"}))["relationship"]
    assert (typed["relationship_type"], typed["data"], typed["version"]) == ("likes", {"w": 1}, 2)
    data = (await rpc.call("update_relationship", {"tenant_id": tid, "id": rel["id"],
                                                   "data": '{"w": 2}'}))["relationship"]
    assert (data["relationship_type"], data["data"], data["version"]) == ("likes", {"w": 2}, 3)
    assert await listed_ids(rpc, tid, relationship_type="likes") == [rel["id"]]
    assert await listed_ids(rpc, tid, relationship_type="knows") == []


async def test_update_relationship_version_conflict_changes_nothing(rpc, tenant):
    tid = tenant["id"]
    a, b = await make_nodes(rpc, tid, 2)
    rel = await link(rpc, tid, a, b, data={"w": 1})
    current = (await rpc.call("update_relationship", {"tenant_id": tid, "id": rel["id"],
                                                      "data": {"w": 2}}))["relationship"]
    with pytest.raises(Conflict) as exc:
        await rpc.call("update_relationship", {"tenant_id": tid, "id": rel["id"],
                                               "relationship_type": "stale", "data": {"w": 9},
                                               "expected_version": 1})
    assert exc.value.code == -32004
    assert exc.value.data["type"] == "version_conflict"
    assert exc.value.data["kind"] == "relationship"
    assert (exc.value.data["expected_version"], exc.value.data["current_version"]) == (1, 2)
    assert await get_rel(rpc, tid, rel["id"]) == current


@pytest.mark.parametrize("extra", [{}, {"expected_version": 1}, {"data": None},
                                   {"relationship_type": None}])
async def test_update_relationship_with_nothing_to_change_is_invalid_params(rpc, tenant, extra):
    a, b = await make_nodes(rpc, tenant["id"], 2)
    rel = await link(rpc, tenant["id"], a, b)
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("update_relationship", {"tenant_id": tenant["id"], "id": rel["id"],
                                               **extra})
    assert error_fields(exc) == ["params"]
    assert await get_rel(rpc, tenant["id"], rel["id"]) == rel


async def test_update_missing_relationship_is_not_found(rpc, tenant):
    with pytest.raises(NotFound) as exc:
        await rpc.call("update_relationship", {"tenant_id": tenant["id"], "id": missing_id(),
                                               "data": {}})
    assert exc.value.data["kind"] == "relationship"


# ---------------------------------------------------------------- listing

async def test_list_relationships_filters(rpc, tenant):
    tid = tenant["id"]
    a, b, c = await make_nodes(rpc, tid, 3)
    ab_knows = (await link(rpc, tid, a, b, "knows"))["id"]
    ab_likes = (await link(rpc, tid, a, b, "likes"))["id"]
    ac_knows = (await link(rpc, tid, a, c, "knows"))["id"]
    ba_knows = (await link(rpc, tid, b, a, "knows"))["id"]
    cb_likes = (await link(rpc, tid, c, b, "likes"))["id"]

    assert await listed_ids(rpc, tid) == [ab_knows, ab_likes, ac_knows, ba_knows, cb_likes]
    assert await listed_ids(rpc, tid, source_node_id=a) == [ab_knows, ab_likes, ac_knows]
    assert await listed_ids(rpc, tid, target_node_id=b) == [ab_knows, ab_likes, cb_likes]
    assert await listed_ids(rpc, tid, relationship_type="likes") == [ab_likes, cb_likes]
    assert await listed_ids(rpc, tid, source_node_id=a, target_node_id=b) == [ab_knows, ab_likes]
    assert await listed_ids(rpc, tid, source_node_id=a,
                            relationship_type="knows") == [ab_knows, ac_knows]
    assert await listed_ids(rpc, tid, target_node_id=b,
                            relationship_type="likes") == [ab_likes, cb_likes]
    assert await listed_ids(rpc, tid, source_node_id=a, target_node_id=b,
                            relationship_type="likes") == [ab_likes]
    assert await listed_ids(rpc, tid, source_node_id=c, target_node_id=a) == []
    assert await listed_ids(rpc, tid, relationship_type="hates") == []


async def test_list_relationships_is_tenant_scoped(rpc, tenant):
    a, b = await make_nodes(rpc, tenant["id"], 2)
    mine = await link(rpc, tenant["id"], a, b)
    other = await make_tenant(rpc)
    x, y = await make_nodes(rpc, other["id"], 2)
    await link(rpc, other["id"], x, y)
    listed = await rpc.call("list_relationships", {"tenant_id": tenant["id"]})
    assert listed["relationships"] == [mine]
    assert await listed_ids(rpc, tenant["id"], source_node_id=x) == []
    with pytest.raises(NotFound) as exc:
        await rpc.call("list_relationships", {"tenant_id": missing_id()})
    assert exc.value.data["kind"] == "tenant"


async def test_list_relationships_bad_filter_is_invalid_params(rpc, tenant):
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("list_relationships", {"tenant_id": tenant["id"],
                                              "source_node_id": "not-a-uuid"})
    assert error_fields(exc) == ["source_node_id"]


# ---------------------------------------------------------------- cascades

async def test_deleting_a_node_removes_its_relationships_both_ways(rpc, tenant):
    tid = tenant["id"]
    doomed, b, c = await make_nodes(rpc, tid, 3)
    outgoing = await link(rpc, tid, doomed, b, "out")
    incoming = await link(rpc, tid, c, doomed, "in")
    loop = await link(rpc, tid, doomed, doomed, "self")
    survivor = await link(rpc, tid, b, c, "other")

    await rpc.call("delete_node", {"tenant_id": tid, "id": doomed})

    for rel in (outgoing, incoming, loop):
        with pytest.raises(NotFound):
            await get_rel(rpc, tid, rel["id"])
    assert await get_rel(rpc, tid, survivor["id"]) == survivor
    assert await listed_ids(rpc, tid) == [survivor["id"]]
    assert await listed_ids(rpc, tid, source_node_id=doomed) == []
    assert await listed_ids(rpc, tid, target_node_id=doomed) == []


# ---------------------------------------------------------------- bulk create_relationships

def chain(node_ids, count) -> list[dict]:
    return [{"source_node_id": node_ids[i % len(node_ids)],
             "target_node_id": node_ids[(i + 1) % len(node_ids)],
             "relationship_type": f"r{i % 3}", "data": {"i": i}} for i in range(count)]


async def test_bulk_create_500_relationships_in_input_order(rpc, tenant):
    tid = tenant["id"]
    nodes = await make_nodes(rpc, tid, 10)
    items = chain(nodes, 500)
    created = (await rpc.call("create_relationships", {"tenant_id": tid,
                                                       "relationships": items}))["relationships"]
    assert len(created) == 500 and len({r["id"] for r in created}) == 500
    assert [(r["source_node_id"], r["target_node_id"], r["relationship_type"], r["data"])
            for r in created] == [(i["source_node_id"], i["target_node_id"],
                                   i["relationship_type"], i["data"]) for i in items]
    assert all(r["tenant_id"] == tid and r["version"] == 1 for r in created)
    assert await listed_ids(rpc, tid) == [r["id"] for r in created]
    assert await get_rel(rpc, tid, created[250]["id"]) == created[250]


async def test_bulk_create_nothing(rpc, tenant):
    assert await rpc.call("create_relationships", {"tenant_id": tenant["id"],
                                                   "relationships": []}) == {"relationships": []}


@pytest.mark.parametrize("end", ["source_node", "target_node"])
async def test_bulk_missing_node_creates_nothing(rpc, tenant, end):
    tid = tenant["id"]
    nodes = await make_nodes(rpc, tid, 4)
    await rpc.call("create_relationships", {"tenant_id": tid, "relationships": chain(nodes, 2)})
    items = chain(nodes, 10)
    absent = missing_id()
    items[4][end + "_id"] = absent
    with pytest.raises(NotFound) as exc:
        await rpc.call("create_relationships", {"tenant_id": tid, "relationships": items})
    assert exc.value.code == -32001
    data = exc.value.data
    assert (data["index"], data["kind"], data["id"]) == (4, end, absent)
    assert await count_rels(rpc, tid) == 2


async def test_bulk_cross_tenant_node_creates_nothing(rpc, tenant):
    nodes = await make_nodes(rpc, tenant["id"], 4)
    other = await make_tenant(rpc)
    (foreign,) = await make_nodes(rpc, other["id"], 1)
    items = chain(nodes, 10)
    items[6]["target_node_id"] = foreign
    with pytest.raises(NotFound) as exc:
        await rpc.call("create_relationships", {"tenant_id": tenant["id"],
                                                "relationships": items})
    assert exc.value.data["index"] == 6 and exc.value.data["kind"] == "target_node"
    assert await count_rels(rpc, tenant["id"]) == 0
    assert await count_rels(rpc, other["id"]) == 0


async def test_bulk_more_than_1000_is_invalid_params(rpc, tenant):
    nodes = await make_nodes(rpc, tenant["id"], 5)
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("create_relationships", {"tenant_id": tenant["id"],
                                                "relationships": chain(nodes, 1001)})
    assert exc.value.code == -32602
    assert error_fields(exc) == ["relationships"]
    assert await count_rels(rpc, tenant["id"]) == 0


async def test_bulk_invalid_item_is_invalid_params_with_its_index(rpc, tenant):
    nodes = await make_nodes(rpc, tenant["id"], 3)
    items = chain(nodes, 5)
    items[2]["relationship_type"] = ""
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("create_relationships", {"tenant_id": tenant["id"],
                                                "relationships": items})
    assert error_fields(exc) == ["relationships.2.relationship_type"]
    assert exc.value.data["errors"][0]["index"] == 2
    assert await count_rels(rpc, tenant["id"]) == 0


# ---------------------------------------------------------------- the storage itself

class _Rollback(Exception):
    pass


async def insert_and_roll_back(conn, sql, *args):
    """Run an INSERT in a transaction that is always rolled back."""
    try:
        async with conn.transaction():
            await conn.execute(sql, *args)
            raise _Rollback
    except _Rollback:
        pass


@pytest.fixture
async def db(database_url):
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


REL_INSERT = ("INSERT INTO relationships (tenant_id, source_node_id, target_node_id, "
              "relationship_type) VALUES ($1, $2, $3, 'x')")
NODE_INSERT = "INSERT INTO nodes (tenant_id, node_type_id) VALUES ($1, $2)"


async def test_schema_rejects_a_cross_tenant_relationship(rpc, db):
    tenant_a, tenant_b = await make_tenant(rpc), await make_tenant(rpc)
    a1, a2 = map(uuid.UUID, await make_nodes(rpc, tenant_a["id"], 2))
    (b1,) = map(uuid.UUID, await make_nodes(rpc, tenant_b["id"], 1))
    ta, tb = uuid.UUID(tenant_a["id"]), uuid.UUID(tenant_b["id"])

    await insert_and_roll_back(db, REL_INSERT, ta, a1, a2)  # control: same tenant is fine

    with pytest.raises(asyncpg.ForeignKeyViolationError) as exc:
        await db.execute(REL_INSERT, ta, a1, b1)
    assert exc.value.constraint_name == "relationships_target_fkey"
    with pytest.raises(asyncpg.ForeignKeyViolationError) as exc:
        await db.execute(REL_INSERT, ta, b1, a1)
    assert exc.value.constraint_name == "relationships_source_fkey"
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        # both ends in B but filed under A
        await db.execute(REL_INSERT, ta, b1, b1)
    assert await db.fetchval("SELECT count(*) FROM relationships WHERE tenant_id = ANY($1)",
                             [ta, tb]) == 0


async def test_schema_rejects_a_node_with_another_tenants_node_type(rpc, db):
    tenant_a, tenant_b = await make_tenant(rpc), await make_tenant(rpc)
    ta, tb = uuid.UUID(tenant_a["id"]), uuid.UUID(tenant_b["id"])
    type_a = (await rpc.call("create_node_type", {"tenant_id": tenant_a["id"],
                                                  "name": "A"}))["node_type"]
    type_b = (await rpc.call("create_node_type", {"tenant_id": tenant_b["id"],
                                                  "name": "B"}))["node_type"]

    await insert_and_roll_back(db, NODE_INSERT, ta, uuid.UUID(type_a["id"]))  # control

    with pytest.raises(asyncpg.ForeignKeyViolationError) as exc:
        await db.execute(NODE_INSERT, ta, uuid.UUID(type_b["id"]))
    assert exc.value.constraint_name == "nodes_node_type_fkey"
    assert await db.fetchval("SELECT count(*) FROM nodes WHERE tenant_id = ANY($1)",
                             [ta, tb]) == 0


@pytest.mark.parametrize("bulk", [False, True], ids=["single", "bulk"])
async def test_nul_character_in_relationship_data_is_invalid_params(rpc, tenant, bulk):
    a, b = await make_nodes(rpc, tenant["id"], 2)
    item = {"source_node_id": a, "target_node_id": b, "relationship_type": "x",
            "data": {"note": "a\x00b"}}
    with pytest.raises(InvalidParams) as exc:
        if bulk:
            await rpc.call("create_relationships", {"tenant_id": tenant["id"],
                                                    "relationships": [item]})
        else:
            await rpc.call("create_relationship", {"tenant_id": tenant["id"], **item})
    assert "data" in error_fields(exc)[0]
    assert await count_rels(rpc, tenant["id"]) == 0
