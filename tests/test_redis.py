"""Redis: rate limits shared by every instance (GCRA in a Lua script), cache invalidation
reaching every instance at once, and service that goes on, degraded, while Redis is down,
recovering by itself. Against the real Redis (FLEXDB_TEST_REDIS_URL) and a test-owned
redis-server that the tests stop and start."""
from __future__ import annotations

import asyncio
import os
import shutil
import time
from contextlib import contextmanager

import httpx
import pytest

from rpc_server.client import FlexDBClient, RpcError, Unauthenticated

from .conftest import running_server, unique
from .services import own_redis

LIMITS = {"FLEXDB_RATE_LIMIT_KEY_PER_S": "5", "FLEXDB_RATE_LIMIT_KEY_BURST": "5"}


@pytest.fixture(scope="module")
def redis_url():
    url = os.environ.get("FLEXDB_TEST_REDIS_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CI must set FLEXDB_TEST_REDIS_URL: the Redis tests may not skip")
        pytest.skip("FLEXDB_TEST_REDIS_URL is not set")
    return url


@contextmanager
def two_servers(database_url: str, **env: str):
    env = {"FLEXDB_DATABASE_URL": database_url, **env}
    with running_server(env) as first, running_server(env) as second:
        yield first, second


async def new_key(admin: FlexDBClient) -> str:
    """A key of a new user who owns a new tenant: fresh buckets for every test."""
    user = (await admin.call("create_user", {"email": f"{unique('r')}@example.com",
                                             "display_name": "R"}))["user"]
    tenant = (await admin.call("create_tenant", {"slug": unique("r"), "name": "R"}))["tenant"]
    await admin.call("add_user_to_tenant", {"tenant_id": tenant["id"], "user_id": user["id"],
                                            "role": "owner"})
    return (await admin.call("create_api_key", {"name": "r", "user_id": user["id"]}))["secret"]


async def burst(urls: list[str], key: str, calls: int) -> tuple[int, list[RpcError]]:
    """`calls` quick calls, alternating between the servers: (admitted, refusals)."""
    admitted, refused = 0, []
    clients = [FlexDBClient(url, api_key=key) for url in urls]
    try:
        for i in range(calls):
            try:
                await clients[i % len(clients)].call("list_tenants", {})
                admitted += 1
            except RpcError as exc:
                refused.append(exc)
    finally:
        for client in clients:
            await client.aclose()
    return admitted, refused


def assert_rate_limited(refusals: list[RpcError]) -> None:
    assert refusals
    for exc in refusals:
        assert exc.code == -32005 and exc.data["type"] == "rate_limited", exc.data
        assert 0 < exc.data["retry_after"] <= 0.2 and exc.data["scope"] == "key"


async def test_a_key_limit_is_shared_by_every_instance(database_url, redis_url):
    with two_servers(database_url, FLEXDB_REDIS_URL=redis_url, **LIMITS) as (a, b):
        async with FlexDBClient(a.url, api_key=a.admin_key) as admin:
            key = await new_key(admin)
        admitted, refused = await burst([a.url, b.url], key, 12)
    # Burst 5 for both instances together (one more may refill while the calls run).
    assert 5 <= admitted <= 6, admitted
    assert_rate_limited(refused)


async def test_without_redis_each_instance_limits_in_process(database_url):
    with running_server({"FLEXDB_DATABASE_URL": database_url, **LIMITS}) as a:
        async with FlexDBClient(a.url, api_key=a.admin_key) as admin:
            key = await new_key(admin)
        admitted, refused = await burst([a.url], key, 10)
    assert 5 <= admitted <= 6, admitted
    assert_rate_limited(refused)


async def test_a_tenant_limit_counts_every_caller(database_url, redis_url):
    env = {"FLEXDB_REDIS_URL": redis_url, "FLEXDB_RATE_LIMIT_TENANT_PER_S": "2",
           "FLEXDB_RATE_LIMIT_TENANT_BURST": "4"}
    with running_server({"FLEXDB_DATABASE_URL": database_url, **env}) as a:
        async with FlexDBClient(a.url, api_key=a.admin_key) as admin:
            tenant = (await admin.call("create_tenant", {"slug": unique("t"),
                                                         "name": "T"}))["tenant"]
            other = (await admin.call("create_tenant", {"slug": unique("t"),
                                                        "name": "T"}))["tenant"]
            outcomes = []
            for _ in range(8):
                try:
                    await admin.call("get_tenant", {"id": tenant["id"]})
                    outcomes.append("ok")
                except RpcError as exc:
                    assert exc.data["scope"] == "tenant"
                    outcomes.append("limited")
            assert outcomes.count("ok") in (4, 5) and "limited" in outcomes
            await admin.call("get_tenant", {"id": other["id"]})  # its own bucket


def cache_lookups(base: str, cache: str, result: str) -> float:
    prefix = f'flexdb_cache_lookups_total{{cache="{cache}",result="{result}"}}'
    for line in httpx.get(base + "/metrics", timeout=10).text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return 0.0


def shared_hits(base: str) -> float:
    return cache_lookups(base, "shared_auth", "hit")


async def test_key_lookups_and_roles_are_shared_between_instances(database_url, redis_url):
    with two_servers(database_url, FLEXDB_REDIS_URL=redis_url) as (a, b):
        async with FlexDBClient(a.url, api_key=a.admin_key) as admin:
            key = await new_key(admin)
        tenant_of_key = None
        async with FlexDBClient(a.url, api_key=key) as on_a:
            tenant_of_key = (await on_a.call("list_tenants", {}))["tenants"][0]["id"]
            await on_a.call("get_tenant", {"id": tenant_of_key})  # key and role looked up on a
        before = shared_hits(b.base)
        async with FlexDBClient(b.url, api_key=key) as on_b:
            await on_b.call("get_tenant", {"id": tenant_of_key})
        # b found the key and the role in Redis, not in its database.
        assert shared_hits(b.base) - before >= 2


async def test_a_revoked_key_stops_on_every_instance_within_a_second(database_url, redis_url):
    # A long cache TTL: only the invalidation message can make the other instance forget.
    with two_servers(database_url, FLEXDB_REDIS_URL=redis_url,
                     FLEXDB_AUTH_CACHE_TTL_S="120") as (a, b):
        async with FlexDBClient(a.url, api_key=a.admin_key) as admin:
            created = await admin.call("create_api_key", {"name": "short-lived"})
            async with FlexDBClient(b.url, api_key=created["secret"]) as on_b:
                await on_b.call("list_tenants", {})  # cached as valid on b
                await admin.call("revoke_api_key", {"id": created["api_key"]["id"]})
                deadline = time.monotonic() + 1.0
                while True:
                    try:
                        await on_b.call("list_tenants", {})
                    except Unauthenticated:
                        break
                    assert time.monotonic() < deadline, "b still accepts the revoked key"
                    await asyncio.sleep(0.05)


async def test_service_goes_on_while_redis_is_down_and_recovers(database_url):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    with own_redis() as (url, stop_redis, start_redis), \
            running_server({"FLEXDB_DATABASE_URL": database_url, "FLEXDB_REDIS_URL": url,
                            "FLEXDB_RATE_LIMIT_KEY_PER_S": "1000"}) as srv:
        async with FlexDBClient(srv.url, api_key=srv.admin_key) as admin, \
                httpx.AsyncClient(timeout=10) as http:
            await admin.call("list_tenants", {})
            assert (await http.get(srv.base + "/ready")).json()["checks"]["redis"]["status"] \
                == "ok"
            stop_redis()
            started = time.monotonic()
            for _ in range(20):  # served, limits in-process, no wait on the dead Redis
                await admin.call("list_tenants", {})
            assert time.monotonic() - started < 5
            ready = await http.get(srv.base + "/ready")
            assert ready.status_code == 200 and ready.json()["status"] == "degraded"
            assert ready.json()["checks"]["redis"]["status"] == "failing"
            metrics = (await http.get(srv.base + "/metrics")).text
            failures = [line for line in metrics.splitlines()
                        if line.startswith("flexdb_redis_failures_total")]
            assert failures and float(failures[0].split()[-1]) >= 1
            start_redis()
            for _ in range(60):  # recovers by itself
                await admin.call("list_tenants", {})
                ready = (await http.get(srv.base + "/ready")).json()
                if ready["status"] == "ok":
                    break
                await asyncio.sleep(0.1)
            assert ready["status"] == "ok", ready


SCHEMA_A = {"type": "object", "required": ["a"], "properties": {"a": {"type": "string"}}}
SCHEMA_B = {"type": "object", "required": ["b"], "properties": {"b": {"type": "string"}}}


async def tenant_with_node_type(admin: FlexDBClient) -> tuple[str, str]:
    tenant = (await admin.call("create_tenant", {"slug": unique("n"), "name": "N"}))["tenant"]
    node_type = (await admin.call("create_node_type", {
        "tenant_id": tenant["id"], "name": "doc", "schema": SCHEMA_A}))["node_type"]
    return tenant["id"], node_type["id"]


async def test_a_node_type_change_reaches_every_instance_within_a_second(database_url,
                                                                         redis_url):
    with two_servers(database_url, FLEXDB_REDIS_URL=redis_url) as (a, b):
        async with FlexDBClient(a.url, api_key=a.admin_key) as on_a, \
                FlexDBClient(b.url, api_key=b.admin_key) as on_b:
            tenant_id, type_id = await tenant_with_node_type(on_a)
            node = {"tenant_id": tenant_id, "node_type_id": type_id, "data": {"a": "x"}}
            await on_a.call("create_node", node)  # a read the node type and shared it
            shared_before = cache_lookups(b.base, "shared_node_types", "hit")
            await on_b.call("create_node", node)
            assert cache_lookups(b.base, "shared_node_types", "hit") == shared_before + 1
            await on_b.call("create_node", node)  # now in b's own cache

            await on_a.call("update_node_type", {"tenant_id": tenant_id, "id": type_id,
                                                 "schema": SCHEMA_B,
                                                 "mode": "allow_invalid"})
            await asyncio.sleep(1.0)
            hits = cache_lookups(b.base, "node_types", "hit")
            misses = cache_lookups(b.base, "node_types", "miss")
            with pytest.raises(RpcError) as refused:
                await on_b.call("create_node", node)
            assert refused.value.code == -32602
            assert "b" in str(refused.value.data)
            # b had dropped its entry when the message came: a miss, not a stale hit.
            assert cache_lookups(b.base, "node_types", "miss") == misses + 1
            assert cache_lookups(b.base, "node_types", "hit") == hits
            await on_b.call("create_node", {**node, "data": {"b": "y"}})


async def test_a_stale_node_type_is_never_used_to_validate_without_redis(database_url):
    """Without Redis no message comes, so b's cache is stale: b's writes still follow the new
    schema at once, because every write checks the node type's version in the database."""
    with two_servers(database_url) as (a, b):
        async with FlexDBClient(a.url, api_key=a.admin_key) as on_a, \
                FlexDBClient(b.url, api_key=b.admin_key) as on_b:
            tenant_id, type_id = await tenant_with_node_type(on_a)
            node = {"tenant_id": tenant_id, "node_type_id": type_id, "data": {"a": "x"}}
            created = (await on_b.call("create_node", node))["node"]  # cached on b
            await on_a.call("update_node_type", {"tenant_id": tenant_id, "id": type_id,
                                                 "schema": SCHEMA_B,
                                                 "mode": "allow_invalid"})
            with pytest.raises(RpcError) as refused:
                await on_b.call("create_node", node)
            assert refused.value.code == -32602 and "b" in str(refused.value.data)
            with pytest.raises(RpcError) as refused:
                await on_b.call("update_node", {"tenant_id": tenant_id, "id": created["id"],
                                                "data": {"a": "z"}})
            assert refused.value.code == -32602 and "b" in str(refused.value.data)
            fresh = (await on_b.call("create_node", {**node, "data": {"b": "y"}}))["node"]
            await on_b.call("update_node", {"tenant_id": tenant_id, "id": fresh["id"],
                                            "data": {"b": "z"}})

            await on_a.call("delete_node_type", {"tenant_id": tenant_id, "id": type_id})
            with pytest.raises(RpcError) as gone:
                await on_b.call("create_node", {**node, "data": {"b": "y"}})
            assert gone.value.code == -32001 and gone.value.data["kind"] == "node_type"


# Ways a Redis answers reads but refuses writes: (make it refuse, make it accept again).
WRITE_REFUSALS = {
    "no good replicas": (("CONFIG", "SET", "min-replicas-to-write", "1"),
                         ("CONFIG", "SET", "min-replicas-to-write", "0")),
    "read-only replica": (("REPLICAOF", "127.0.0.1", "1"), ("REPLICAOF", "NO", "ONE")),
    "paused writers": (("CLIENT", "PAUSE", "60000", "WRITE"), ("CLIENT", "UNPAUSE")),
}
AUTH_TTL_S = 2.0


async def refused_now(url: str, revoked_key: str, removed_key: str, tenant_id: str) -> bool:
    """Whether both old credentials are refused, each for the right reason; False when
    both still work (one refused and the other not is a failure of its own)."""
    async with FlexDBClient(url, api_key=revoked_key) as revoked, \
            FlexDBClient(url, api_key=removed_key) as removed:
        try:
            await revoked.call("list_tenants", {})
            key_refused = False
        except Unauthenticated as exc:
            assert exc.code == -32002 and "revoked" in exc.message, exc.message
            key_refused = True
        try:
            await removed.call("get_tenant", {"id": tenant_id})
            member_refused = False
        except RpcError as exc:  # not a member: answered like a missing tenant
            assert exc.code == -32001 and exc.data["kind"] == "tenant", exc.data
            member_refused = True
    return key_refused and member_refused


@pytest.mark.parametrize("refusal", list(WRITE_REFUSALS))
async def test_revocation_holds_while_redis_refuses_writes(database_url, refusal):
    """A revoked key and a removed member stop at once on the instance that made the change
    and within FLEXDB_AUTH_CACHE_TTL_S on the other, though the shared cache could not be
    invalidated; once Redis takes writes again, the shared cache is used again."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    import redis
    refuse, accept = WRITE_REFUSALS[refusal]
    with own_redis() as (url, _, _), two_servers(
            database_url, FLEXDB_REDIS_URL=url, FLEXDB_AUTH_CACHE_TTL_S=str(AUTH_TTL_S)) as (a, b):
        control = redis.Redis.from_url(url, socket_timeout=0.5)
        async with FlexDBClient(a.url, api_key=a.admin_key) as admin:
            user = (await admin.call("create_user", {"email": f"{unique('w')}@example.com",
                                                     "display_name": "W"}))["user"]
            tenant = (await admin.call("create_tenant", {"slug": unique("w"),
                                                         "name": "W"}))["tenant"]
            await admin.call("add_user_to_tenant", {"tenant_id": tenant["id"],
                                                    "user_id": user["id"], "role": "viewer"})
            doomed, removed = [(await admin.call("create_api_key", {
                "name": name, "user_id": user["id"]})) for name in ("doomed", "removed")]
            for server in (a, b):  # trusted on both, in each one's cache and in Redis
                assert not await refused_now(server.url, doomed["secret"], removed["secret"],
                                             tenant["id"])
            control.execute_command(*refuse)
            with pytest.raises(redis.RedisError):  # the refusal is real
                control.incr("flexdb:auth:generation")
            try:
                await admin.call("revoke_api_key", {"id": doomed["api_key"]["id"]})
                await admin.call("remove_user_from_tenant", {"tenant_id": tenant["id"],
                                                             "user_id": user["id"]})
                changed = time.monotonic()
                old = (doomed["secret"], removed["secret"], tenant["id"])
                # a, at once and on every call, also after its Redis link was retried.
                while time.monotonic() < changed + 2.5:
                    assert await refused_now(a.url, *old), "a accepts the old credentials"
                    await asyncio.sleep(0.1)
                # b within the bound, then for good.
                while not await refused_now(b.url, *old):
                    assert time.monotonic() < changed + AUTH_TTL_S + 1.0, \
                        "b accepts the old credentials past FLEXDB_AUTH_CACHE_TTL_S"
                    await asyncio.sleep(0.1)
                for _ in range(10):
                    assert await refused_now(b.url, *old)
                    await asyncio.sleep(0.1)
            finally:
                control.execute_command(*accept)
            # Writes are back: the shared cache is trusted and filled again (a fresh key
            # looked up on a is a shared hit on b), and the old credentials stay refused.
            for _ in range(30):
                fresh = (await admin.call("create_api_key", {"name": "fresh"}))["secret"]
                before = shared_hits(b.base)
                async with FlexDBClient(a.url, api_key=fresh) as on_a, \
                        FlexDBClient(b.url, api_key=fresh) as on_b:
                    await on_a.call("list_tenants", {})
                    await on_b.call("list_tenants", {})
                if shared_hits(b.base) > before:
                    break
                await asyncio.sleep(0.2)
            else:
                pytest.fail("the shared cache was not used again after Redis took writes")
            for server in (a, b):
                assert await refused_now(server.url, *old)
        control.close()
