"""Helpers of the execute_query tests (test_query_sql.py, test_query_catalog.py): a world of
two tenants, calls through the API, and the database layer run directly without the gate."""
from __future__ import annotations

import uuid

import pytest

from rpc_server.client import QueryRejected
from rpc_server.storage.repositories.tenant_sql import TenantSqlRepository

from .conftest import unique

SECRET = "SECRET-OF-TENANT-B"


async def make_world(rpc) -> dict:
    """Tenant A with five nodes and two relationships; tenant B with secret data."""
    world = {}
    for name in ("a", "b"):
        tenant = (await rpc.call("create_tenant", {"slug": unique(name), "name": name}))["tenant"]
        nt = (await rpc.call("create_node_type", {"tenant_id": tenant["id"],
                                                  "name": "Doc"}))["node_type"]
        if name == "a":
            items = [{"node_type_id": nt["id"],
                      "data": {"n": i, "kind": "even" if i % 2 == 0 else "odd",
                               "delete": i == 3, "updated_at": f"2024-01-0{i + 1}",
                               "note": "DROP TABLE nodes; -- just text"}} for i in range(5)]
        else:
            items = [{"node_type_id": nt["id"], "data": {"secret": SECRET, "n": i}}
                     for i in range(3)]
        nodes = (await rpc.call("create_nodes", {"tenant_id": tenant["id"],
                                                 "nodes": items}))["nodes"]
        for source, target in ((0, 1), (1, 2)):
            await rpc.call("create_relationship", {
                "tenant_id": tenant["id"], "source_node_id": nodes[source]["id"],
                "target_node_id": nodes[target]["id"], "relationship_type": "next"})
        world[name] = {"tenant": tenant["id"], "nodes": [n["id"] for n in nodes],
                       "node_type": nt["id"]}
    return world


async def query(rpc, tenant_id, sql, *params, **options) -> dict:
    return await rpc.call("execute_query", {"tenant_id": tenant_id, "sql": sql,
                                            "params": list(params), **options})


async def rejected(rpc, tenant_id, sql, *params, **options) -> QueryRejected:
    with pytest.raises(QueryRejected) as exc:
        await query(rpc, tenant_id, sql, *params, **options)
    return exc.value


async def run_direct(pool, tenant_id, sql, *params, timeout_ms=5000, max_rows=100):
    """The database layer without the gate: what runs after a gate has been fooled."""
    async with pool.acquire() as conn:
        return await TenantSqlRepository(conn, limit_temp_files=True).run(
            uuid.UUID(tenant_id), sql, list(params), max_rows, timeout_ms, 1_000_000)
