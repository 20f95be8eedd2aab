"""Refused calls are counted per interval, source, method and outcome (list_denied_calls),
never recorded one by one: a flood of them, whatever tenant ids it names, cannot grow the
audit trail, and its source is what the caller cannot vary (the key, the client address)."""
from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from datetime import datetime, timedelta, timezone

import asyncpg
import httpx
import pytest

from rpc_server.audit.denied_calls import PRUNE_BATCH
from rpc_server.client import FlexDBClient, Forbidden, NotFound, Unauthenticated

from .auth_helpers import World
from .conftest import migrated_database, running_server

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


async def refused_from(url: str, calls: int, forwarded_for: str | None = None) -> None:
    """`calls` calls without credentials (one batch), claiming to be from `forwarded_for`."""
    batch = [{"jsonrpc": "2.0", "id": i, "method": "verify_audit_chain",
              "params": {"tenant_id": str(uuid.uuid4())}} for i in range(calls)]
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    async with httpx.AsyncClient(timeout=30) as client:
        answers = (await client.post(url, json=batch, headers=headers)).json()
    assert {a["error"]["data"]["type"] for a in answers} == {"unauthenticated"}


async def test_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(server, rpc):
    forged = "198.51.100.77"  # the session's server trusts no proxy
    before = await total(rpc, LOCAL, "verify_audit_chain", "unauthenticated")
    await refused_from(server.url, 3, forwarded_for=forged)
    assert await counted(rpc, source=f"address:{forged}") == []
    assert await total(rpc, LOCAL, "verify_audit_chain", "unauthenticated") == before + 3


MAX_SOURCES = 5
PROXIED = {"FLEXDB_TRUSTED_PROXIES": "127.0.0.1, ::1",
           "FLEXDB_DENIED_CALLS_MAX_SOURCES": str(MAX_SOURCES),
           "FLEXDB_DENIED_CALLS_RETENTION_DAYS": "7"}


@pytest.fixture(scope="module")
def proxied_db(pg_server_url):
    """A database of its own (so the cap and the retention see only these tests' counts)
    and a server on it behind a trusted proxy (this test, at 127.0.0.1)."""
    with migrated_database(pg_server_url) as url, \
            running_server({"FLEXDB_DATABASE_URL": url, **PROXIED}) as srv:
        yield url, srv


def admin_of(srv) -> FlexDBClient:
    return FlexDBClient(srv.url, api_key=srv.admin_key)


async def test_a_trusted_proxy_forwards_the_client_address(proxied_db):
    _, srv = proxied_db
    # Hops left of the nearest untrusted one could be written by the client: not used.
    await refused_from(srv.url, 2, forwarded_for="203.0.113.9, 198.51.100.8")
    await refused_from(srv.url, 1, forwarded_for="2001:db8:1:2:3::9")
    async with admin_of(srv) as admin:
        assert await total(admin, "address:198.51.100.8", "verify_audit_chain",
                           "unauthenticated") == 2
        assert await counted(admin, source="address:203.0.113.9") == []
        assert await counted(admin, source=LOCAL) == []  # the proxy itself is not the source
        assert await total(admin, "address:2001:db8:1:2::/64", "verify_audit_chain",
                           "unauthenticated") == 1


async def test_sources_without_credentials_past_the_cap_count_as_others_across_servers(
        proxied_db):
    url, first = proxied_db
    addresses = [f"192.0.2.{i}" for i in range(1, 13)]  # more than MAX_SOURCES
    with running_server({"FLEXDB_DATABASE_URL": url, **PROXIED}) as second:
        for index, address in enumerate(addresses):  # half through each server
            await refused_from((first, second)[index % 2].url, 2, forwarded_for=address)
        async with admin_of(first) as a, admin_of(second) as b:
            await counted(b)  # each server writes its own counts before listing
            rows = await counted(a, method="verify_audit_chain")
    mine = [r for r in rows if r["source"] in {f"address:{a}" for a in addresses} | {"others"}]
    assert sum(r["count"] for r in mine) == 2 * len(addresses)  # nothing lost, only folded
    addresses_in = defaultdict(set)  # the cap is on all addresses of an interval
    for row in rows:
        if row["source"].startswith("address:"):
            addresses_in[row["interval_start"]].add(row["source"])
    assert all(len(named) <= MAX_SOURCES for named in addresses_in.values()), addresses_in
    assert any(row["source"] == "others" for row in mine)


async def add_counts(database_url: str, interval: datetime, sources: list[str]) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO denied_calls (created_at, source, method, outcome, count, last_at) "
            "SELECT $1, s, 'get_node', 'unauthenticated', 1, $1 FROM unnest($2::text[]) s",
            interval, sources)
    finally:
        await conn.close()


async def test_counts_older_than_the_retention_are_deleted(proxied_db):
    url, srv = proxied_db
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    expired, kept = now - timedelta(days=8), now - timedelta(days=6)  # retention: 7 days
    # More than one pass deletes: the servers come back for the rest.
    await add_counts(url, expired, [f"address:10.9.{i // 250}.{i % 250}"
                                    for i in range(PRUNE_BATCH + 5)])
    await add_counts(url, kept, ["address:10.8.0.1"])
    with running_server({"FLEXDB_DATABASE_URL": url, **PROXIED}):  # prunes soon after start
        async with admin_of(srv) as admin:
            for _ in range(120):
                old = await admin.call("list_denied_calls", {
                    "until": (expired + timedelta(seconds=1)).isoformat(),
                    "pagination": {"page_size": 1, "include_total": True}})
                if old["pagination"]["total_count"] == 0:
                    break
                await asyncio.sleep(0.5)
            assert old["pagination"]["total_count"] == 0
            assert [r["count"] for r in await counted(admin, source="address:10.8.0.1")] == [1]
