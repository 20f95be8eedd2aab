"""Refused calls are counted per interval, source, method and outcome (list_denied_calls),
never recorded one by one: a flood of them, whatever tenant ids it names, cannot grow the
audit trail, and its source is what the caller cannot vary (the key, the client address)."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

import asyncpg
import httpx
import pytest

from rpc_server.client import FlexDBClient, Forbidden, NotFound, Unauthenticated

from .test_auth import World

LOCAL = "address:127.0.0.1"  # the tests' client address


async def counted(rpc, **filters) -> list[dict]:
    result = await rpc.call("list_denied_calls", {**filters, "pagination": {"page_size": 1000}})
    return result["denied_calls"]


async def total(rpc, source: str, method: str, outcome: str) -> int:
    return sum(c["count"] for c in await counted(rpc, source=source, method=method)
               if c["outcome"] == outcome)


async def denied_rows_since(database_url: str, since: datetime) -> int:
    """Per-attempt rows of refused calls: in the audit trail or waiting to be chained."""
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval(
            "SELECT (SELECT count(*) FROM audit_events WHERE outcome = 'denied' "
            "AND created_at >= $1) + (SELECT count(*) FROM audit_pending "
            "WHERE outcome = 'denied' AND created_at >= $1)", since)
    finally:
        await conn.close()


async def test_unauthenticated_batches_at_random_tenants_add_to_one_count(
        server, rpc, database_url):
    started = datetime.now(timezone.utc)
    before = await total(rpc, LOCAL, "verify_audit_chain", "unauthenticated")
    rows_before = len(await counted(rpc, source=LOCAL, method="verify_audit_chain"))
    batch = [{"jsonrpc": "2.0", "id": i, "method": "verify_audit_chain",
              "params": {"tenant_id": str(uuid.uuid4())}} for i in range(50)]
    async with httpx.AsyncClient(timeout=30) as client:
        for authorization in ("Bearer fdb_" + "x" * 43, None):  # unknown key, no key
            headers = {"Authorization": authorization} if authorization else {}
            answers = (await client.post(server.url, json=batch, headers=headers)).json()
            assert len(answers) == 50
            assert {a["error"]["code"] for a in answers} == {-32002}
            assert {a["error"]["data"]["type"] for a in answers} == {"unauthenticated"}
    assert await total(rpc, LOCAL, "verify_audit_chain", "unauthenticated") == before + 100
    rows = await counted(rpc, source=LOCAL, method="verify_audit_chain")
    assert len(rows) - rows_before <= 2  # one row per interval (the calls may span two)
    assert await denied_rows_since(database_url, started) == 0  # nothing per attempt
    assert (await rpc.call("verify_audit_chain",
                           {"tenant_id": str(uuid.UUID(int=0))}))["ok"] is True


async def key_id(rpc, user_id: str) -> str:
    return (await rpc.call("list_api_keys", {"user_id": user_id}))["api_keys"][0]["id"]


async def test_a_keys_refusals_are_counted_by_the_key_not_the_tenant_it_names(
        server, rpc, database_url):
    started = datetime.now(timezone.utc)
    world = await World.build(rpc)
    source = f"key:{await key_id(rpc, world.users['viewer']['id'])}"
    async with FlexDBClient(server.url, api_key=world.keys["viewer"]) as viewer:
        for _ in range(5):
            with pytest.raises(Forbidden):
                await viewer.call("create_node", {"tenant_id": world.tid,
                                                  "node_type_id": world.nt["id"]})
        for _ in range(20):  # tenants that do not exist (or are not the viewer's)
            with pytest.raises(NotFound) as exc:
                await viewer.call("get_tenant", {"id": str(uuid.uuid4())})
            assert exc.value.data["kind"] == "tenant"
        with pytest.raises(Forbidden) as exc:  # the counts are for platform admins
            await viewer.call("list_denied_calls", {})
        assert exc.value.data["required_role"] == "platform_admin"
    mine = await counted(rpc, source=source)  # (a new key: counts of this test only)
    by_kind = {(c["method"], c["outcome"]): c["count"] for c in mine}
    assert by_kind == {("create_node", "forbidden"): 5, ("get_tenant", "not_found"): 20,
                       ("list_denied_calls", "forbidden"): 1}
    assert len(mine) <= 6  # at most two intervals each
    for count in mine:
        assert set(count) == {"id", "interval_start", "source", "method", "outcome", "count",
                              "last_at"}
        assert count["interval_start"] <= count["last_at"]
    assert await denied_rows_since(database_url, started) == 0


async def test_counts_page_and_filter(server, rpc):
    first = await rpc.call("list_denied_calls", {"pagination": {"page_size": 1,
                                                                "include_total": True}})
    assert len(first["denied_calls"]) == 1 and first["pagination"]["total_count"] >= 2
    second = await rpc.call("list_denied_calls", {"pagination": {
        "page_size": 1, "page_token": first["pagination"]["next_page_token"]}})
    assert second["denied_calls"][0]["id"] != first["denied_calls"][0]["id"]
    future = await counted(rpc, since="2999-01-01T00:00:00Z")
    assert future == []
    async with FlexDBClient(server.url) as anonymous:
        with pytest.raises(Unauthenticated):
            await anonymous.call("list_denied_calls", {})
