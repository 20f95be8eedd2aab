"""query_nodes on a big tenant: the results, and that the GIN index on data answers the
containment, eq and in tests (EXPLAIN on the real statement)."""
from __future__ import annotations

import asyncio
import uuid

import asyncpg
import orjson
import pytest

from rpc_server.api.params import Pagination
from rpc_server.client import FlexDBClient
from rpc_server.storage.db import _init_connection
from rpc_server.storage.node_filter import SqlArgs, compile_filter, parse_sort
from rpc_server.storage.repositories.nodes import NodeRepository

from .conftest import unique
from .query_nodes_helpers import leaf, query

# ---------------------------------------------------------------- index use

async def _explain(conn, tenant_id, flt, sort=None) -> str:
    args = SqlArgs()
    condition = compile_filter(flt, args)
    statement = NodeRepository.query_statement(
        uuid.UUID(tenant_id), None, condition, args, parse_sort(sort),
        Pagination(page_size=50, include_total=False))
    rows = await conn.fetch("EXPLAIN " + statement.sql, *statement.args)
    return "\n".join(r[0] for r in rows)


@pytest.fixture(scope="module")
def big_tenant(server) -> str:
    """A tenant with 3,000 nodes of varied data (3 create_nodes batches of 1,000)."""
    async def build():
        async with FlexDBClient(server.url, api_key=server.admin_key) as rpc:
            tid = (await rpc.call("create_tenant", {"slug": unique("big"), "name": "Big"}))[
                "tenant"]["id"]
            nt = (await rpc.call("create_node_type", {"tenant_id": tid, "name": "Item"}))[
                "node_type"]["id"]
            for start in range(0, 3000, 1000):
                await rpc.call("create_nodes", {"tenant_id": tid, "nodes": [
                    {"node_type_id": nt, "data": {
                        "sku": f"sku-{i:05d}", "bucket": i % 50, "price": (i * 37) % 1000,
                        "tags": [f"t{i % 300}", "common"], "grp": {"id": i % 1000},
                        "active": i % 2 == 0}}
                    for i in range(start, start + 1000)]})
            return tid
    return asyncio.run(build())


@pytest.fixture
async def analyzed(database_url, big_tenant):
    """A connection to the server's database (with its jsonb codec), statistics fresh.

    create_nodes' rows wait in the GIN index's pending list (fastupdate) until a vacuum
    merges them, and the planner prices scanning that list: right after the 3,000 inserts
    (52 pending pages) it priced the bitmap scan for a selective `contains` at 216 against
    142 for a seq scan, and chose the seq scan. Merge the list as autovacuum would, then
    ANALYZE: the bitmap scan costs 12 and is chosen with the planner's defaults."""
    conn = await asyncpg.connect(database_url)
    await _init_connection(conn)
    try:
        await conn.fetchval("SELECT gin_clean_pending_list('nodes_data_gin_idx'::regclass)")
        await conn.execute("ANALYZE nodes")
        yield conn
    finally:
        await conn.close()


async def explain_without_seqscan(conn, tenant_id, flt) -> str:
    async with conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        return await _explain(conn, tenant_id, flt)


CONTAINS_FILTERS = [
    leaf("data.tags", "contains", "t17"),
    leaf("data.grp", "contains", {"id": 7}),
    leaf("data", "contains", {"sku": "sku-00042"}),
    {"and": [leaf("data.tags", "contains", ["t5"]), leaf("data.price", "gt", 3)]},
]


async def test_big_tenant_results(rpc, big_tenant):
    async def count(flt):
        result = await query(rpc, big_tenant, filter=flt, pagination={"page_size": 1})
        return result["pagination"]["total_count"]

    assert await count(None) == 3000
    assert await count(leaf("data.sku", "eq", "sku-01234")) == 1
    assert await count(leaf("data.tags", "contains", "t17")) == 10
    assert await count(leaf("data.sku", "in", ["sku-00001", "sku-00002", "nope"])) == 2
    assert await count(leaf("data.grp", "contains", {"id": 7})) == 3
    assert await count({"and": [leaf("data.bucket", "eq", 3),
                                leaf("data.active", "eq", False)]}) == 60
    assert await count(leaf("data.price", "lt", 10)) == 30
    assert await count({"not": leaf("data.tags", "contains", "common")}) == 0


async def test_contains_uses_gin_index(analyzed, big_tenant):
    for flt in CONTAINS_FILTERS:
        plan = await _explain(analyzed, big_tenant, flt)
        print(f"\n--- {orjson.dumps(flt).decode()}\n{plan}")
        assert "nodes_data_gin_idx" in plan, plan
    # ... also under a data-path sort
    plan = await _explain(analyzed, big_tenant, leaf("data.tags", "contains", "t17"),
                          {"field": "data.price", "direction": "desc"})
    assert "nodes_data_gin_idx" in plan, plan


EQ_IN_FILTERS = [leaf("data.sku", "eq", "sku-01234"), leaf("data.grp.id", "eq", 7),
                 leaf("data.sku", "in", ["sku-00001", "sku-00002", "sku-00003"])]


@pytest.mark.parametrize("flt", EQ_IN_FILTERS, ids=["eq", "eq-nested", "in"])
async def test_eq_and_in_use_gin_index(analyzed, big_tenant, flt):
    plan = await _explain(analyzed, big_tenant, flt)
    print(f"\n--- {orjson.dumps(flt).decode()}\n{plan}")
    assert "nodes_data_gin_idx" in plan, plan


@pytest.mark.parametrize("flt", EQ_IN_FILTERS, ids=["eq", "eq-nested", "in"])
async def test_eq_and_in_use_gin_index_without_seqscan(analyzed, big_tenant, flt):
    plan = await explain_without_seqscan(analyzed, big_tenant, flt)
    print(f"\n--- enable_seqscan=off {orjson.dumps(flt).decode()}\n{plan}")
    assert "nodes_data_gin_idx" in plan, plan
