"""The change feed through list_changes: every committed change once, in commit order, with
cascades, actors, filters, the response budget and retention."""
from __future__ import annotations

import asyncio

import pytest

from rpc_server.client import FlexDBClient, InvalidParams, NotFound

from .auth_helpers import TRIVIAL_PIPELINE, new_user
from .conftest import (
    make_node,
    make_node_type,
    make_tenant,
    migrated_database,
    running_server,
    unique,
)


async def changes(rpc, tenant_id, after=None, **params) -> list[dict]:
    """Every change after `after`, read page by page."""
    found = []
    while True:
        page = await rpc.call("list_changes", {"tenant_id": tenant_id, "after": after,
                                               "limit": 1000, **params})
        found += page["changes"]
        if page["last_position"] == page["head"] or page["last_position"] == after:
            return found
        after = page["last_position"]


def summary(events) -> list[tuple]:
    return [(e["operation"], e["kind"], e["version"]) for e in events]


async def test_each_change_has_one_event_in_order_with_its_object_and_actor(rpc, server):
    tenant = await make_tenant(rpc)
    t = tenant["id"]
    nt = await make_node_type(rpc, t)
    node = await make_node(rpc, t, nt["id"], {"name": "a"})
    updated = (await rpc.call("update_node", {"tenant_id": t, "id": node["id"],
                                              "data": {"name": "b"}}))["node"]
    other = await make_node(rpc, t, nt["id"])
    rel = (await rpc.call("create_relationship", {
        "tenant_id": t, "source_node_id": node["id"], "target_node_id": other["id"],
        "relationship_type": "knows"}))["relationship"]
    pipe = (await rpc.call("create_pipeline", {"tenant_id": t, "name": unique("p"),
                                               "code": TRIVIAL_PIPELINE}))["pipeline"]
    user, _ = await new_user(rpc)
    await rpc.call("add_user_to_tenant", {"tenant_id": t, "user_id": user["id"],
                                          "role": "viewer"})
    await rpc.call("delete_node", {"tenant_id": t, "id": node["id"]})

    events = await changes(rpc, t)
    kinds = [(e["operation"], e["kind"]) for e in events]
    # the tenant's creation made its creator a member; deleting a node deletes its
    # relationships after it (the cascade), each with its event
    assert kinds == [
        ("create", "membership"),
        ("create", "node_type"), ("create", "node"), ("update", "node"), ("create", "node"),
        ("create", "relationship"), ("create", "pipeline"), ("create", "membership"),
        ("delete", "node"), ("delete", "relationship")], kinds
    positions = [e["position"] for e in events]
    assert positions == list(range(positions[0], positions[0] + len(events)))
    by_kind = {(e["operation"], e["kind"]): e for e in reversed(events)}  # the first of each
    created = by_kind[("create", "node")]
    assert created["object"]["data"] == {"name": "a"} and created["object"]["id"] == node["id"]
    update = by_kind[("update", "node")]
    assert update["object"]["data"] == {"name": "b"} and update["version"] == updated["version"]
    assert update["node_type_id"] == nt["id"] and update["object_omitted"] is False
    assert by_kind[("create", "relationship")]["relationship_type"] == "knows"
    assert by_kind[("create", "relationship")]["id"] == rel["id"]
    assert by_kind[("create", "pipeline")]["id"] == pipe["id"]
    assert events[7]["id"] == user["id"] and events[7]["object"]["role"] == "viewer"
    deleted = by_kind[("delete", "node")]
    assert deleted["object"] is None and deleted["object_omitted"] is False
    assert deleted["version"] == updated["version"]
    for event in events[-9:]:
        assert event["actor"]["key_id"] is not None, event


async def test_a_cascade_records_every_object_removed_and_a_rollback_records_nothing(rpc):
    t = (await make_tenant(rpc))["id"]
    nt = await make_node_type(rpc, t, schema={"type": "object", "properties": {
        "n": {"type": "integer"}}})
    nodes = [await make_node(rpc, t, nt["id"], {"n": i}) for i in range(3)]
    await rpc.call("create_relationship", {
        "tenant_id": t, "source_node_id": nodes[0]["id"], "target_node_id": nodes[1]["id"],
        "relationship_type": "r"})
    head = (await rpc.call("list_changes", {"tenant_id": t, "limit": 1}))["head"]
    with pytest.raises(InvalidParams):  # one bad document: the whole batch is refused
        await rpc.call("create_nodes", {"tenant_id": t, "nodes": [
            {"node_type_id": nt["id"], "data": {"n": 1}},
            {"node_type_id": nt["id"], "data": {"n": "not a number"}}]})
    assert (await rpc.call("list_changes", {"tenant_id": t, "after": head}))["changes"] == []
    await rpc.call("delete_node_type", {"tenant_id": t, "id": nt["id"]})
    events = await changes(rpc, t, after=head)
    assert sorted((e["kind"], e["id"]) for e in events) == sorted(
        [("node_type", nt["id"])] + [("node", n["id"]) for n in nodes]
        + [("relationship", events[-1]["id"])])
    assert {e["operation"] for e in events} == {"delete"}


async def test_concurrent_writers_get_dense_positions_in_commit_order(rpc):
    t = (await make_tenant(rpc))["id"]
    nt = await make_node_type(rpc, t)
    nodes = [await make_node(rpc, t, nt["id"], {"v": 0}) for _ in range(8)]
    head = (await rpc.call("list_changes", {"tenant_id": t, "limit": 1}))["head"]

    async def writer(node):
        for v in range(1, 26):
            await rpc.call("update_node", {"tenant_id": t, "id": node["id"], "data": {"v": v}})

    await asyncio.gather(*(writer(n) for n in nodes))
    events = await changes(rpc, t, after=head)
    assert [e["position"] for e in events] == list(range(head + 1, head + 1 + 8 * 25))
    for node in nodes:  # each node's updates in the order they were made
        mine = [e["object"]["data"]["v"] for e in events if e["id"] == node["id"]]
        assert mine == list(range(1, 26))


async def test_filters_and_reading_on_from_last_position(rpc):
    t = (await make_tenant(rpc))["id"]
    a, b = await make_node_type(rpc, t), await make_node_type(rpc, t)
    for i in range(5):
        await make_node(rpc, t, a["id"], {"i": i})
        await make_node(rpc, t, b["id"], {"i": i})
    only_a = await changes(rpc, t, filter={"node_type_id": a["id"]})
    assert [e["object"]["data"]["i"] for e in only_a] == list(range(5))
    creates_of_types = await changes(rpc, t, filter={"kinds": ["node_type"],
                                                      "operations": ["create"]})
    assert [e["id"] for e in creates_of_types] == [a["id"], b["id"]]
    page = await rpc.call("list_changes", {"tenant_id": t, "limit": 3,
                                           "filter": {"node_type_id": b["id"]}})
    assert len(page["changes"]) == 3
    assert page["last_position"] == page["changes"][-1]["position"] < page["head"]
    rest = await changes(rpc, t, after=page["last_position"], filter={"node_type_id": b["id"]})
    assert [e["object"]["data"]["i"] for e in page["changes"] + rest] == list(range(5))
    nothing = await rpc.call("list_changes", {"tenant_id": t, "filter": {"kinds": ["pipeline"]}})
    assert nothing["changes"] == [] and nothing["last_position"] == nothing["head"]
    for bad in ({"kinds": ["nodes"]}, {"operations": ["insert"]}, {"kinds": []},
                {"node_type_id": "x"}, {"colour": "red"}):
        with pytest.raises(InvalidParams) as raised:
            await rpc.call("list_changes", {"tenant_id": t, "filter": bad})
        assert raised.value.data["errors"][0]["field"].startswith("filter"), bad
    with pytest.raises(InvalidParams) as raised:
        await rpc.call("list_changes", {"tenant_id": t, "after": 10_000})
    assert raised.value.data["type"] == "position_ahead"
    with pytest.raises(InvalidParams):
        await rpc.call("list_changes", {"tenant_id": t, "limit": 1001})


async def test_another_tenant_and_a_non_member_read_nothing(rpc, server):
    t = (await make_tenant(rpc))["id"]
    await make_node_type(rpc, t)
    _, key = await new_user(rpc)
    async with FlexDBClient(server.url, api_key=key) as stranger:
        with pytest.raises(NotFound):
            await stranger.call("list_changes", {"tenant_id": t})
        own = (await stranger.call("create_tenant", {"slug": unique("s"), "name": "S"}))
        mine = await changes(stranger, own["tenant"]["id"])
        assert {e["kind"] for e in mine} == {"membership"}


@pytest.fixture(scope="module")
def small_feed(pg_server_url):
    """A server whose events carry objects up to 2,000 bytes and keep the last 5 events."""
    with migrated_database(pg_server_url) as url, running_server({
            "FLEXDB_DATABASE_URL": url, "FLEXDB_FEED_MAX_OBJECT_BYTES": "2000",
            "FLEXDB_FEED_RETENTION_EVENTS": "5", "FLEXDB_FEED_TRIM_INTERVAL_S": "0.1"}) as srv:
        yield srv


async def test_objects_are_measured_as_the_json_text_readers_get(small_feed):
    """A control character is one byte in jsonb and six (\\u0001) in the JSON readers get:
    an object of 1,000 of them (about 1 KB as stored) is 6 KB of text, past the 2,000
    bytes allowed, so its event leaves it out; its object_bytes says the text's size."""
    async with FlexDBClient(small_feed.url, api_key=small_feed.admin_key) as rpc:
        t = (await make_tenant(rpc))["id"]
        nt = await make_node_type(rpc, t)
        escaped = await make_node(rpc, t, nt["id"], {"s": "\x01" * 1000})
        plain = await make_node(rpc, t, nt["id"], {"s": "x" * 1000})
        by_id = {e["id"]: e for e in await changes(rpc, t)}
        assert by_id[escaped["id"]]["object"] is None
        assert by_id[escaped["id"]]["object_omitted"] is True
        assert by_id[escaped["id"]]["object_bytes"] > 6000
        assert by_id[plain["id"]]["object"]["data"] == {"s": "x" * 1000}
        assert 1000 < by_id[plain["id"]]["object_bytes"] < 2000


async def test_large_objects_are_left_out_and_retention_is_an_error_not_a_gap(small_feed):
    async with FlexDBClient(small_feed.url, api_key=small_feed.admin_key) as rpc:
        t = (await make_tenant(rpc))["id"]
        nt = await make_node_type(rpc, t)
        small = await make_node(rpc, t, nt["id"], {"s": "x"})
        big = await make_node(rpc, t, nt["id"], {"s": "x" * 5000})
        events = await changes(rpc, t)
        by_id = {e["id"]: e for e in events}
        assert by_id[small["id"]]["object"]["data"] == {"s": "x"}
        assert by_id[big["id"]]["object"] is None
        assert by_id[big["id"]]["object_omitted"] is True
        assert by_id[big["id"]]["object_bytes"] > 2000
        # retention keeps the last 5: reading after an older position is an error
        for i in range(10):
            await make_node(rpc, t, nt["id"], {"i": i})
        for _ in range(100):
            kept = await rpc.call("list_changes", {"tenant_id": t})
            if len(kept["changes"]) <= 5:
                break
            await asyncio.sleep(0.1)
        assert len(kept["changes"]) == 5
        assert kept["changes"][-1]["position"] == kept["head"]
        with pytest.raises(InvalidParams) as raised:
            await rpc.call("list_changes", {"tenant_id": t, "after": 1})
        assert raised.value.data["type"] == "position_expired"
        assert "resynchronise" in raised.value.message
        assert raised.value.data["trimmed_through"] == kept["head"] - 5
