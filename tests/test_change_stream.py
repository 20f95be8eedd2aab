"""The change feed as a stream: GET /events (Server-Sent Events) and FlexDBClient.changes —
resuming, filters, heartbeats, who may read, revocation ending a stream, caps, and a server
killed under write load whose acknowledged writes all reach a resuming reader once."""
from __future__ import annotations

import asyncio
import json
import os
import signal

import httpx
import pytest

from rpc_server.client import FlexDBClient, InvalidParams, NotFound, RateLimited, Unauthenticated

from .auth_helpers import new_user
from .conftest import (
    ROOT,
    ServerProcess,
    make_node,
    make_node_type,
    make_tenant,
    migrated_database,
    running_facade,
    running_server,
)

SETTINGS = {"FLEXDB_FEED_HEARTBEAT_S": "0.2", "FLEXDB_FEED_STREAMS_PER_KEY": "3",
            "FLEXDB_FEED_RETENTION_EVENTS": "50", "FLEXDB_FEED_TRIM_INTERVAL_S": "0.1",
            "FLEXDB_AUTH_CACHE_TTL_S": "0.5"}


@pytest.fixture(scope="module")
def feed(pg_server_url):
    with migrated_database(pg_server_url) as url, \
            running_server({"FLEXDB_DATABASE_URL": url, **SETTINGS}) as srv:
        yield srv


@pytest.fixture
async def admin(feed):
    async with FlexDBClient(feed.url, api_key=feed.admin_key) as client:
        yield client


async def take(stream, n: int, timeout: float = 10) -> list[dict]:
    """The next n events of a changes() iterator."""
    async def collect():
        return [await stream.__anext__() for _ in range(n)]
    return await asyncio.wait_for(collect(), timeout)


async def raw_messages(client: httpx.AsyncClient, path: str, headers=None, until=None,
                       timeout: float = 10):
    """(status, lines) of GET path: all lines until `until(lines)` holds (or the end)."""
    lines: list[str] = []
    async with client.stream("GET", path, headers=headers or {}) as response:
        if response.status_code != 200:
            return response.status_code, [(await response.aread()).decode()]
        async def read():
            async for line in response.aiter_lines():
                lines.append(line)
                if until is not None and until(lines):
                    return
        await asyncio.wait_for(read(), timeout)
        return response.status_code, lines


async def test_a_stream_sends_new_changes_in_order_and_resumes_from_last_event_id(admin, feed):
    t = (await make_tenant(admin))["id"]
    nt = await make_node_type(admin, t)
    stream = admin.changes(t)
    first = asyncio.ensure_future(take(stream, 3))
    await asyncio.sleep(0.3)  # the stream is open: it starts at the current last position
    made = [await make_node(admin, t, nt["id"], {"i": i}) for i in range(3)]
    events = await first
    assert [e["id"] for e in events] == [n["id"] for n in made]
    assert [e["object"]["data"]["i"] for e in events] == [0, 1, 2]
    await stream.aclose()
    more = [await make_node(admin, t, nt["id"], {"i": i}) for i in range(3, 6)]
    async with httpx.AsyncClient(base_url=feed.base, timeout=10, headers={
            "Authorization": f"Bearer {feed.admin_key}"}) as http:
        status, lines = await raw_messages(
            http, f"/events?tenant_id={t}", {"Last-Event-ID": str(events[-1]["position"])},
            until=lambda got: sum(x.startswith("data:") for x in got) == 3)
    assert status == 200
    ids = [int(x[4:]) for x in lines if x.startswith("id: ")]
    # first the position it starts after, then one id per event, in order
    assert ids == [events[-1]["position"]] + [events[-1]["position"] + i for i in (1, 2, 3)]
    assert "event: change" in lines
    data = [x for x in lines if x.startswith("data: ")]
    assert all(m["id"] in x for m, x in zip(more, data))


async def test_an_idle_stream_gets_heartbeats_and_filters_apply(admin, feed):
    t = (await make_tenant(admin))["id"]
    nt = await make_node_type(admin, t)
    async with httpx.AsyncClient(base_url=feed.base, timeout=10, headers={
            "Authorization": f"Bearer {feed.admin_key}"}) as http:
        status, lines = await raw_messages(
            http, f"/events?tenant_id={t}",
            until=lambda got: got.count(": keep-alive") >= 2)
    assert status == 200 and lines[0] == "retry: 2000"
    stream = admin.changes(t, kinds=["relationship"], operations=["create"])
    waiting = asyncio.ensure_future(take(stream, 1))
    await asyncio.sleep(0.3)
    a, b = await make_node(admin, t, nt["id"]), await make_node(admin, t, nt["id"])
    rel = (await admin.call("create_relationship", {
        "tenant_id": t, "source_node_id": a["id"], "target_node_id": b["id"],
        "relationship_type": "r"}))["relationship"]
    [event] = await waiting
    assert event["kind"] == "relationship" and event["id"] == rel["id"]
    await stream.aclose()


async def test_who_may_open_a_stream(admin, feed):
    t = (await make_tenant(admin))["id"]
    _, stranger = await new_user(admin)
    viewer, viewer_key = await new_user(admin)
    await admin.call("add_user_to_tenant", {"tenant_id": t, "user_id": viewer["id"],
                                            "role": "viewer"})
    async with httpx.AsyncClient(base_url=feed.base, timeout=10) as http:
        for headers, status, code in (
                ({}, 401, -32002),
                ({"Authorization": "Bearer fdb_not-a-key"}, 401, -32002),
                ({"Authorization": f"Bearer {stranger}"}, 404, -32001)):
            answer = await http.get(f"/events?tenant_id={t}", headers=headers)
            assert answer.status_code == status
            assert answer.json()["error"]["code"] == code
        own = {"Authorization": f"Bearer {feed.admin_key}"}
        for query, field in (("", "tenant_id"), (f"tenant_id={t}&after=-1", "after"),
                             (f"tenant_id={t}&kinds=nodes", "filter.kinds.0"),
                             (f"tenant_id={t}&colour=red", "colour")):
            answer = await http.get(f"/events?{query}", headers=own)
            assert answer.status_code == 400, query
            assert answer.json()["error"]["data"]["errors"][0]["field"] == field
        answer = await http.get(f"/events?tenant_id={t}&after=1000", headers=own)
        assert answer.status_code == 400
        assert answer.json()["error"]["data"]["type"] == "position_ahead"
    async with FlexDBClient(feed.url, api_key=viewer_key) as as_viewer:
        stream = as_viewer.changes(t)
        waiting = asyncio.ensure_future(take(stream, 1))
        await asyncio.sleep(0.3)
        nt = await make_node_type(admin, t)
        [event] = await waiting
        assert event["id"] == nt["id"]
        await stream.aclose()


async def test_revoking_the_key_or_removing_the_member_ends_the_stream(admin, feed):
    t = (await make_tenant(admin))["id"]
    for how in ("revoke", "remove"):
        user, key = await new_user(admin)
        await admin.call("add_user_to_tenant", {"tenant_id": t, "user_id": user["id"],
                                                "role": "viewer"})
        async with FlexDBClient(feed.url, api_key=key) as reader:
            stream = reader.changes(t)

            async def to_the_end():
                async for _ in stream:  # (its own removal is an event it may still see)
                    pass

            ended = asyncio.ensure_future(asyncio.wait_for(to_the_end(), 10))
            await asyncio.sleep(0.3)
            if how == "revoke":
                keys = await admin.call("list_api_keys", {"user_id": user["id"]})
                await admin.call("revoke_api_key", {"id": keys["api_keys"][0]["id"]})
                with pytest.raises(Unauthenticated):
                    await ended
            else:
                await admin.call("remove_user_from_tenant", {"tenant_id": t,
                                                             "user_id": user["id"]})
                with pytest.raises(NotFound):
                    await ended


async def test_open_streams_are_capped_per_key(admin, feed):
    t = (await make_tenant(admin))["id"]
    user, key = await new_user(admin)
    await admin.call("add_user_to_tenant", {"tenant_id": t, "user_id": user["id"],
                                            "role": "viewer"})
    async with FlexDBClient(feed.url, api_key=key) as reader:
        streams = [reader.changes(t) for _ in range(3)]
        waiting = [asyncio.ensure_future(take(s, 1)) for s in streams]
        await asyncio.sleep(0.5)
        with pytest.raises(RateLimited) as refused:
            await take(reader.changes(t), 1)
        assert refused.value.data["setting"] == "FLEXDB_FEED_STREAMS_PER_KEY"
        # another caller is not held to this key's cap
        other = admin.changes(t)
        also = asyncio.ensure_future(take(other, 1))
        await asyncio.sleep(0.3)
        await make_node_type(admin, t)
        assert len(await also) == 1
        for w in waiting:
            assert len(await w) == 1
        for s in streams + [other]:
            await s.aclose()


async def test_a_position_retention_dropped_is_refused_with_410(admin, feed):
    t = (await make_tenant(admin))["id"]
    nt = await make_node_type(admin, t)
    await admin.call("create_nodes", {"tenant_id": t, "nodes": [
        {"node_type_id": nt["id"], "data": {"i": i}} for i in range(80)]})
    for _ in range(100):
        head = await admin.call("list_changes", {"tenant_id": t, "limit": 1})
        if head["changes"][0]["position"] > 1:
            break
        await asyncio.sleep(0.1)
    async with httpx.AsyncClient(base_url=feed.base, timeout=10, headers={
            "Authorization": f"Bearer {feed.admin_key}"}) as http:
        answer = await http.get(f"/events?tenant_id={t}&after=1")
    assert answer.status_code == 410
    assert answer.json()["error"]["data"]["type"] == "position_expired"
    with pytest.raises(InvalidParams) as raised:
        await take(admin.changes(t, after=1), 1)
    assert raised.value.data["type"] == "position_expired"


@pytest.fixture
def own_database(pg_server_url):
    with migrated_database(pg_server_url) as url:
        yield url


async def test_kill_9_under_write_load_every_acknowledged_write_is_received_once(
        own_database):
    """A writer creates nodes while a client follows the stream; the server is killed with
    SIGKILL mid-load and started again on the same port; the client resumes by itself."""
    env = {"FLEXDB_DATABASE_URL": own_database}
    with running_server(env) as first:
        port, key = first.port, first.admin_key
        async with FlexDBClient(first.url, api_key=key, timeout=5) as admin:
            t = (await make_tenant(admin))["id"]
            nt = await make_node_type(admin, t)
    server = ServerProcess(env, ROOT, port=port)
    server.wait_ready()
    acknowledged: list[str] = []
    received: list[dict] = []
    stop = asyncio.Event()
    try:
        async with FlexDBClient(server.url, api_key=key, timeout=5) as client:
            start = (await client.call("list_changes", {"tenant_id": t}))["head"]

            async def follow():
                async for event in client.changes(t, after=start, kinds=["node"],
                                                  retry_delay=0.1, max_retry_delay=0.5):
                    received.append(event)

            async def write():
                i = 0
                while not stop.is_set():
                    i += 1
                    try:
                        node = await make_node(client, t, nt["id"], {"i": i})
                        acknowledged.append(node["id"])
                    except Exception:  # noqa: BLE001 - the server is down: try again
                        await asyncio.sleep(0.05)

            reader = asyncio.ensure_future(follow())
            writers = [asyncio.ensure_future(write()) for _ in range(4)]
            await asyncio.sleep(1.5)
            os.kill(server.proc.pid, signal.SIGKILL)
            server.proc.wait()
            await asyncio.sleep(0.5)
            server = ServerProcess(env, ROOT, port=port)
            await asyncio.get_running_loop().run_in_executor(None, server.wait_ready)
            await asyncio.sleep(1.5)
            stop.set()
            await asyncio.gather(*writers)
            head = (await client.call("list_changes", {"tenant_id": t}))["head"]
            for _ in range(200):
                if received and received[-1]["position"] >= head:
                    break
                await asyncio.sleep(0.05)
            reader.cancel()
    finally:
        server.stop()
    positions = [e["position"] for e in received]
    assert positions == list(range(start + 1, start + 1 + len(positions)))  # none twice
    assert positions[-1] == head
    ids = [e["id"] for e in received]
    assert len(acknowledged) > 20
    missing = set(acknowledged) - set(ids)
    assert not missing, f"{len(missing)} acknowledged writes have no event"


@pytest.fixture(scope="module")
def feed_facade(feed):
    with running_facade(feed.url) as proc:
        yield proc


async def test_the_rest_facade_lists_and_streams_the_same_events(admin, feed, feed_facade):
    t = (await make_tenant(admin))["id"]
    nt = await make_node_type(admin, t)
    user, key = await new_user(admin)
    await admin.call("add_user_to_tenant", {"tenant_id": t, "user_id": user["id"],
                                            "role": "viewer"})
    async with httpx.AsyncClient(base_url=feed_facade.base, timeout=10, headers={
            "Authorization": f"Bearer {key}"}) as rest:
        listed = (await rest.get(f"/tenants/{t}/changes", params={"kinds": "node_type"})).json()
        assert [e["id"] for e in listed["changes"]] == [nt["id"]]
        head = listed["head"]
        # a stream through the facade, closed each time: the closes reach rpc_server, which
        # lets the stream go within a second (the key may hold 3 streams there, so a leak
        # would refuse every stream from the fourth on)
        for i in range(6):
            for _ in range(30):
                status, lines = await raw_messages(
                    rest, f"/tenants/{t}/events", {"Last-Event-ID": str(head)},
                    until=lambda got: any(x.startswith("data: ") for x in got)
                    if i else any(x.startswith("id: ") for x in got))
                if status != 429:
                    break
                await asyncio.sleep(0.1)
            assert status == 200, lines
            if i == 0:
                await make_node(admin, t, nt["id"], {"via": "facade"})
        sent = [json.loads(x[6:]) for x in lines if x.startswith("data: ")]
        assert sent[0]["object"]["data"] == {"via": "facade"}
        refused = await rest.get(f"/tenants/{missing_tenant()}/events")
        assert refused.status_code == 404
        assert refused.json()["error"]["code"] == -32001
        bad = await rest.get(f"/tenants/{t}/events", params={"kinds": "nodes"})
        assert bad.status_code in (400, 422)


def missing_tenant() -> str:
    return "00000000-0000-4000-8000-000000000001"


@pytest.fixture(scope="module")
def two_servers(pg_server_url):
    """Two server instances on one database."""
    with migrated_database(pg_server_url) as url, \
            running_server({"FLEXDB_DATABASE_URL": url}) as a, \
            running_server({"FLEXDB_DATABASE_URL": url}) as b:
        yield a, b


async def test_a_stream_on_one_instance_follows_writes_made_on_another(two_servers):
    a, b = two_servers
    async with FlexDBClient(a.url, api_key=a.admin_key) as on_a, \
            FlexDBClient(b.url, api_key=a.admin_key) as on_b:
        t = (await make_tenant(on_a))["id"]
        nt = await make_node_type(on_a, t)
        stream = on_b.changes(t, kinds=["node"])
        waiting = asyncio.ensure_future(take(stream, 20))
        await asyncio.sleep(0.3)
        made = await asyncio.gather(*(make_node(on_a if i % 2 else on_b, t, nt["id"], {"i": i})
                                      for i in range(20)))
        events = await waiting
        await stream.aclose()
    assert sorted(e["id"] for e in events) == sorted(n["id"] for n in made)
    positions = [e["position"] for e in events]
    assert positions == sorted(positions) and len(set(positions)) == 20
