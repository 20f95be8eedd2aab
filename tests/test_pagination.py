"""Keyset pagination: complete walks, walks during inserts, token validation, totals."""
from __future__ import annotations

import asyncio

import pytest

from rpc_server.client import InvalidParams, NotFound


async def make_nodes(rpc, tenant, node_type, count, prefix="n"):
    created = []
    for start in range(0, count, 1000):
        batch = [{"node_type_id": node_type["id"], "data": {"name": f"{prefix}{i}"}}
                 for i in range(start, min(start + 1000, count))]
        answer = await rpc.call("create_nodes", {"tenant_id": tenant["id"], "nodes": batch})
        created += answer["nodes"]
    return created


async def walk(rpc, method, params, key, page_size):
    seen, token, pages = [], "", 0
    while True:
        result = await rpc.call(method, {**params, "pagination": {"page_size": page_size,
                                                                  "page_token": token}})
        seen += [item["id"] for item in result[key]]
        pages += 1
        token = result["pagination"]["next_page_token"]
        assert isinstance(token, str)
        if token == "":
            return seen, pages, result


async def test_walk_to_the_end_without_duplicates_or_gaps(rpc, tenant, node_type):
    created = await make_nodes(rpc, tenant, node_type, 2345)
    seen, pages, last = await walk(rpc, "list_nodes", {"tenant_id": tenant["id"]}, "nodes", 100)
    assert seen == [n["id"] for n in created]  # oldest first, same order as inserted
    assert pages == 24
    assert last["pagination"]["total_count"] == 2345


async def test_walk_while_rows_are_inserted(rpc, tenant, node_type):
    before = await make_nodes(rpc, tenant, node_type, 600, prefix="before")
    stop = asyncio.Event()

    async def writer():
        i = 0
        while not stop.is_set():
            await rpc.call("create_node", {"tenant_id": tenant["id"],
                                           "node_type_id": node_type["id"],
                                           "data": {"name": f"during{i}"}})
            i += 1

    task = asyncio.create_task(writer())
    try:
        seen, _, _ = await walk(rpc, "list_nodes", {"tenant_id": tenant["id"]}, "nodes", 7)
    finally:
        stop.set()
        await task
    assert len(seen) == len(set(seen)), "a row was returned twice"
    missing = {n["id"] for n in before} - set(seen)
    assert not missing, f"{len(missing)} pre-existing rows were skipped"


async def test_filtered_walk(rpc, tenant, node_type):
    created = await rpc.call("create_node_type", {"tenant_id": tenant["id"], "name": "Other"})
    other = created["node_type"]
    await make_nodes(rpc, tenant, node_type, 30)
    wanted = await make_nodes(rpc, tenant, other, 25)
    seen, _, last = await walk(rpc, "list_nodes", {"tenant_id": tenant["id"],
                                                   "node_type_id": other["id"]}, "nodes", 10)
    assert seen == [n["id"] for n in wanted]
    assert last["pagination"]["total_count"] == 25


async def test_include_total_false_skips_the_count(rpc, tenant, node_type):
    await make_nodes(rpc, tenant, node_type, 3)
    result = await rpc.call("list_nodes", {"tenant_id": tenant["id"],
                                           "pagination": {"page_size": 2, "include_total": False}})
    assert "total_count" not in result["pagination"]
    assert len(result["nodes"]) == 2 and result["pagination"]["next_page_token"]


async def test_default_page_size_is_10(rpc, tenant, node_type):
    await make_nodes(rpc, tenant, node_type, 12)
    result = await rpc.call("list_nodes", {"tenant_id": tenant["id"]})
    assert len(result["nodes"]) == 10 and result["pagination"]["total_count"] == 12
    # flex-db clients send page_size 0 (the proto3 default) to mean the default.
    result = await rpc.call("list_nodes", {"tenant_id": tenant["id"],
                                           "pagination": {"page_size": 0, "page_token": ""}})
    assert len(result["nodes"]) == 10


@pytest.mark.parametrize("size", [1001, -1, True, 2.5, "10", 0.0, False])
async def test_page_size_bounds(rpc, tenant, size):
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("list_nodes", {"tenant_id": tenant["id"], "pagination": {"page_size": size}})
    assert exc.value.data["errors"][0]["field"] == "pagination.page_size"


@pytest.mark.parametrize("token", ["garbage", "eyJ4IjoxfQ", "!!!!", "a" * 2000,
                                   "WyJub2RlcyIsIm5vdCBhIGRhdGUiLCJ4Il0"])
async def test_invalid_page_tokens_are_rejected(rpc, tenant, token):
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("list_nodes",
                       {"tenant_id": tenant["id"], "pagination": {"page_token": token}})
    assert exc.value.data["errors"][0]["field"] == "pagination.page_token"


async def test_token_from_another_list_is_rejected(rpc, tenant, node_type):
    await make_nodes(rpc, tenant, node_type, 3)
    page = await rpc.call("list_nodes", {"tenant_id": tenant["id"], "pagination": {"page_size": 1}})
    token = page["pagination"]["next_page_token"]
    with pytest.raises(InvalidParams):
        await rpc.call("list_tenants", {"pagination": {"page_token": token}})


async def test_list_of_missing_tenant_is_not_found(rpc):
    with pytest.raises(NotFound):
        await rpc.call("list_nodes", {"tenant_id": "00000000-0000-0000-0000-000000000000"})


async def test_relationship_walk_by_source(rpc, tenant, node_type):
    hub, *others = await make_nodes(rpc, tenant, node_type, 41)
    rels = [{"source_node_id": hub["id"], "target_node_id": o["id"], "relationship_type": "knows"}
            for o in others]
    created = (await rpc.call("create_relationships", {"tenant_id": tenant["id"],
                                                       "relationships": rels}))["relationships"]
    seen, _, last = await walk(rpc, "list_relationships",
                               {"tenant_id": tenant["id"], "source_node_id": hub["id"]},
                               "relationships", 6)
    assert seen == [r["id"] for r in created]
    assert last["pagination"]["total_count"] == 40


async def test_empty_string_filters_mean_no_filter(rpc, tenant, node_type):
    await make_nodes(rpc, tenant, node_type, 3)
    result = await rpc.call("list_nodes", {"tenant_id": tenant["id"], "node_type_id": ""})
    assert result["pagination"]["total_count"] == 3
    result = await rpc.call("list_relationships", {"tenant_id": tenant["id"], "source_node_id": "",
                                                   "target_node_id": "", "relationship_type": ""})
    assert result["relationships"] == []


async def totals(rpc, tenant_id, node_type_id="") -> tuple[int, int]:
    """(list_nodes' total_count, the number of nodes a full walk finds)."""
    params = {"tenant_id": tenant_id, "node_type_id": node_type_id}
    seen, _, last = await walk(rpc, "list_nodes", params, "nodes", 1000)
    first = await rpc.call("list_nodes", {**params, "pagination": {"page_size": 1}})
    return first["pagination"]["total_count"], len(seen)


async def test_total_count_follows_every_kind_of_write(rpc, tenant, node_type):
    """The total is a maintained count (not a count of rows): it must agree with the rows
    after single, bulk, concurrent, failed and cascading writes."""
    tid = tenant["id"]
    other = (await rpc.call("create_node_type", {"tenant_id": tid, "name": "other"}))["node_type"]
    await make_nodes(rpc, tenant, node_type, 1500)
    singles = await asyncio.gather(*(rpc.call("create_node", {
        "tenant_id": tid, "node_type_id": other["id"], "data": {"i": i}}) for i in range(40)))
    assert await totals(rpc, tid) == (1540, 1540)
    assert await totals(rpc, tid, other["id"]) == (40, 40)

    # A bulk create that fails (one item breaks the schema) changes nothing.
    with pytest.raises(InvalidParams):
        await rpc.call("create_nodes", {"tenant_id": tid, "nodes": [
            {"node_type_id": node_type["id"], "data": {"name": "ok"}},
            {"node_type_id": node_type["id"], "data": {"name": 5}}]})
    await asyncio.gather(*(rpc.call("delete_node", {"tenant_id": tid, "id": n["node"]["id"]})
                           for n in singles[:15]))
    assert await totals(rpc, tid) == (1525, 1525)
    assert await totals(rpc, tid, other["id"]) == (25, 25)

    await rpc.call("delete_node_type", {"tenant_id": tid, "id": node_type["id"]})  # cascades
    assert await totals(rpc, tid) == (25, 25)
    assert await totals(rpc, tid, node_type["id"]) == (0, 0)
    await rpc.call("delete_node_type", {"tenant_id": tid, "id": other["id"]})
    assert await totals(rpc, tid) == (0, 0)
