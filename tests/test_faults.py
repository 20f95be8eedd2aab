"""Failures inside the server: an unexpected error is a -32603 carrying the request id, its
detail goes only to the log; a statement timeout is a clear error; the process keeps serving."""
from __future__ import annotations

import asyncio

import asyncpg
import pytest

from rpc_server.client import FlexDBClient, InternalError

from .conftest import migrated_database, running_server, unique


@pytest.fixture(scope="module")
def damaged(pg_server_url):
    """A server on its own database, whose `node_types` table is then renamed away."""
    with migrated_database(pg_server_url) as url, \
            running_server({"FLEXDB_DATABASE_URL": url}) as srv:
        async def damage():
            conn = await asyncpg.connect(url)
            try:
                await conn.execute("ALTER TABLE node_types RENAME TO node_types_gone")
            finally:
                await conn.close()
        asyncio.run(damage())
        yield srv


async def test_unexpected_error_is_internal_with_request_id_and_no_detail(damaged):
    async with FlexDBClient(damaged.url, api_key=damaged.admin_key) as rpc:
        tenant = (await rpc.call("create_tenant", {"slug": unique("hurt"), "name": "H"}))["tenant"]
        response = await rpc.post({"jsonrpc": "2.0", "method": "list_node_types", "id": 7,
                                   "params": {"tenant_id": tenant["id"]}},
                                  headers={"X-Request-ID": "fault-probe-1",
                                           "Authorization": f"Bearer {damaged.admin_key}"})
        assert response.status_code == 200
        body = response.json()
        assert body["id"] == 7
        error = body["error"]
        assert error == {"code": -32603, "message": "Internal error",
                         "data": {"type": "internal", "request_id": "fault-probe-1"}}
        # The cause is in the log, next to the request id, and nowhere in the answer.
        log = damaged.output()
        assert "fault-probe-1" in log and "node_types" in log and "Traceback" in log
        # Other methods keep working.
        tenant = await rpc.call("create_tenant", {"slug": unique("alive"), "name": "Alive"})
        assert tenant["tenant"]["name"] == "Alive"


async def test_unexpected_error_in_a_batch_spares_the_other_members(damaged):
    async with FlexDBClient(damaged.url, api_key=damaged.admin_key) as rpc:
        tenant = (await rpc.call("create_tenant", {"slug": unique("hurt"), "name": "H"}))["tenant"]
        results = await rpc.batch([("list_node_types", {"tenant_id": tenant["id"]}),
                                   ("list_tenants", {})])
        assert isinstance(results[0], InternalError)
        assert "tenants" in results[1]


@pytest.fixture(scope="module")
def impatient(database_url):
    with running_server({"FLEXDB_DATABASE_URL": database_url,
                         "FLEXDB_STATEMENT_TIMEOUT_MS": "1"}) as srv:
        yield srv


async def test_statement_timeout_is_a_clear_error(impatient, rpc, tenant, node_type):
    nodes = [{"node_type_id": node_type["id"], "data": {"name": "x" * 200, "age": i}}
             for i in range(1000)]
    await rpc.call("create_nodes", {"tenant_id": tenant["id"], "nodes": nodes})
    async with FlexDBClient(impatient.url, api_key=impatient.admin_key) as slow:
        # Reading and counting 1,000 documents takes well over the 1 ms allowed.
        with pytest.raises(InternalError) as exc:
            for _ in range(10):
                await slow.call("list_nodes", {"tenant_id": tenant["id"],
                                               "pagination": {"page_size": 1000}})
        assert exc.value.type == "timeout"
        assert "took too long" in exc.value.message
