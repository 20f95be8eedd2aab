"""JSON-RPC 2.0 framing over HTTP, following the specification's own examples."""
from __future__ import annotations

import httpx
import pytest

from rpc_server.client import InvalidParams

from .auth_helpers import World
from .conftest import unique


async def post(http, payload=None, *, content=None):
    if content is not None:
        return await http.post("/jsonrpc", content=content,
                               headers={"Content-Type": "application/json"})
    return await http.post("/jsonrpc", json=payload)


def req(method, params=None, id=1, **extra):
    body = {"jsonrpc": "2.0", "method": method, **extra}
    if params is not None:
        body["params"] = params
    if id is not ...:
        body["id"] = id
    return body


async def test_parse_error_is_200_with_code_32700(http):
    r = await post(http, content=b'{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]')
    assert r.status_code == 200
    body = r.json()
    assert body["error"]["code"] == -32700 and body["id"] is None


async def test_invalid_request_object(http):
    r = await post(http, {"jsonrpc": "2.0", "method": 1, "params": "bar"})
    assert r.status_code == 200
    assert r.json()["error"]["code"] == -32600 and r.json()["id"] is None


async def test_empty_array_is_single_invalid_request(http):
    r = await post(http, [])
    body = r.json()
    assert isinstance(body, dict)
    assert body["error"]["code"] == -32600 and body["id"] is None


async def test_batch_of_non_objects_gives_one_error_each(http):
    r = await post(http, [1, 2, 3])
    body = r.json()
    assert [e["error"]["code"] for e in body] == [-32600, -32600, -32600]


async def test_batch_invalid_json_is_single_parse_error(http):
    r = await post(http, content=b'[{"jsonrpc": "2.0", "method": "sum", "params": [1,2,4],'
                                 b' "id": "1"},{"jsonrpc": "2.0", "method"]')
    assert r.json()["error"]["code"] == -32700


async def test_mixed_batch_valid_members_run_and_answers_keep_order(http):
    slug = unique("batch")
    batch = [
        req("create_tenant", {"slug": slug, "name": "Batch"}, id="a"),
        {"foo": "boo"},
        req("no_such_method", {}, id="c"),
        req("list_tenants", {"pagination": {"page_size": 1}}, id=..., ),  # notification
        req("get_tenant", {"id": "not-a-uuid"}, id=5),
        {"jsonrpc": "1.0", "method": "list_tenants", "id": 6},
    ]
    r = await post(http, batch)
    assert r.status_code == 200
    body = r.json()
    assert len(body) == 5  # the notification gets no answer
    assert body[0]["id"] == "a" and body[0]["result"]["tenant"]["slug"] == slug
    assert body[1]["id"] is None and body[1]["error"]["code"] == -32600
    assert body[2]["id"] == "c" and body[2]["error"]["code"] == -32601
    assert body[3]["id"] == 5 and body[3]["error"]["code"] == -32602
    assert body[3]["error"]["data"]["errors"][0]["field"] == "id"
    assert body[4]["id"] == 6 and body[4]["error"]["code"] == -32600


async def test_only_notifications_gives_204_and_they_run(http, rpc):
    slug = unique("notified")
    r = await post(http, [req("create_tenant", {"slug": slug, "name": "N"}, id=...),
                          req("list_tenants", {}, id=...)])
    assert r.status_code == 204 and r.content == b""
    r = await post(http, req("list_tenants", {}, id=...))
    assert r.status_code == 204
    # The notification really ran: the slug is now taken.
    r = await post(http, req("create_tenant", {"slug": slug, "name": "again"}))
    assert r.json()["error"]["code"] == -32004


@pytest.mark.parametrize("id", ["abc", 42, 3.5, None, "", 0])
async def test_ids_are_echoed(http, id):
    r = await post(http, req("list_tenants", {"pagination": {"page_size": 1}}, id=id))
    body = r.json()
    assert body["id"] == id and "result" in body


@pytest.mark.parametrize("bad_id", [True, [1], {"a": 1}])
async def test_invalid_id_types_are_invalid_requests(http, bad_id):
    r = await post(http, req("list_tenants", {}, id=bad_id))
    assert r.json()["error"]["code"] == -32600 and r.json()["id"] is None


async def test_params_by_position(http):
    slug = unique("pos")
    r = await post(http, req("create_tenant", [slug, "Positional"]))
    tenant = r.json()["result"]["tenant"]
    assert tenant["slug"] == slug and tenant["name"] == "Positional"
    r = await post(http, req("get_tenant", [tenant["id"]]))
    assert r.json()["result"]["tenant"]["id"] == tenant["id"]


async def test_too_many_positional_params_is_invalid_params(http):
    r = await post(http, req("get_tenant", ["a", "b", "c"]))
    assert r.json()["error"]["code"] == -32602


@pytest.mark.parametrize("params,field", [
    ({"slug": 123, "name": "x"}, "slug"),
    ({"slug": "ok-slug", "name": ["x"]}, "name"),
    ({"slug": "ok-slug"}, "name"),
    ({"slug": "ok-slug", "name": "x", "unknown": 1}, "unknown"),
])
async def test_wrong_param_types_are_32602_naming_the_field(http, params, field):
    r = await post(http, req("create_tenant", params))
    error = r.json()["error"]
    assert error["code"] == -32602
    assert error["data"]["type"] == "invalid_params"
    assert any(e["field"] == field for e in error["data"]["errors"]), error


async def test_params_must_be_array_or_object(http):
    r = await post(http, req("list_tenants", "bar"))
    assert r.json()["error"]["code"] == -32600


async def test_wrong_params_type_in_pagination(rpc):
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("list_tenants", {"pagination": {"page_size": "ten"}})
    assert exc.value.data["errors"][0]["field"] == "pagination.page_size"


async def test_body_size_limit(http):
    big = "x" * (1_048_576 + 10)
    r = await post(http, req("create_tenant", {"slug": "big", "name": big}))
    assert r.status_code == 200
    error = r.json()["error"]
    assert error["code"] == -32600 and error["data"]["max_bytes"] == 1_048_576


async def test_batch_length_limit(http):
    r = await post(http, [req("list_tenants", {}, id=i) for i in range(101)])
    body = r.json()
    assert isinstance(body, dict) and body["error"]["code"] == -32600
    assert body["error"]["data"]["max_batch"] == 100


async def test_batch_at_limit_is_accepted(http):
    r = await post(http, [req("list_tenants", {"pagination": {"page_size": 1}}, id=i)
                          for i in range(100)])
    body = r.json()
    assert [b["id"] for b in body] == list(range(100))
    assert all("result" in b for b in body)


def deep_object(levels: int) -> dict:
    deep: dict = {}
    cursor = deep
    for _ in range(levels - 1):
        cursor["a"] = {}
        cursor = cursor["a"]
    return deep


async def test_nesting_is_limited_per_document_not_per_request(http):
    """FLEXDB_MAX_JSON_DEPTH (100) limits each document; deep values elsewhere are judged as
    any value there is (the request itself has no nesting limit of its own)."""
    r = await post(http, req("create_tenant", {"slug": "deep", "name": "x",
                                               "extra": deep_object(150)}, id=8))
    assert r.json()["id"] == 8
    assert r.json()["error"]["data"]["errors"] == [
        {"field": "extra", "message": "is not a parameter of this method"}]
    r = await post(http, req("create_node", {"tenant_id": "x", "node_type_id": "x",
                                             "data": deep_object(101)}, id=9))
    assert r.json()["id"] == 9 and r.json()["error"]["code"] == -32602
    assert {"field": "data", "message": "is nested deeper than 100 levels "
            "(FLEXDB_MAX_JSON_DEPTH)"} in r.json()["error"]["data"]["errors"]


async def test_extremely_deep_json_is_a_clean_error(http):
    r = await post(http, content=b"[" * 5000 + b"]" * 5000)
    assert r.status_code == 200
    error = r.json()["error"]
    assert error["code"] == -32600 and error["data"]["reason"] == "JSON nested too deeply to read"


async def test_request_id_header_is_echoed_or_generated(http):
    r = await http.post("/jsonrpc", json=req("list_tenants", {}),
                        headers={"X-Request-ID": "abc-123"})
    assert r.headers["X-Request-ID"] == "abc-123"
    r = await http.post("/jsonrpc", json=req("list_tenants", {}),
                        headers={"X-Request-ID": "bad id\twith spaces"})
    generated = r.headers["X-Request-ID"]
    assert generated != "bad id\twith spaces" and len(generated) == 32


async def test_health(http):
    r = await http.get("/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"


async def test_server_survives_garbage(http, rpc):
    for content in [b"", b"null", b"\xff\xfe", b'"just a string"', b"123", b"{}"]:
        r = await post(http, content=content)
        assert r.status_code == 200
        assert r.json()["error"]["code"] in (-32700, -32600)
    assert "tenants" in await rpc.call("list_tenants", {})


async def test_batched_get_node_members_each_get_their_own_answer(server, rpc):
    """get_node members of a batch are read with one query per tenant; each member must
    still get exactly its own node, its own not-found, or its own refusal."""
    mine, other = await World.build(rpc), await World.build(rpc)
    nodes = [await mine.node() for _ in range(5)]
    foreign = await other.node()
    members = [{"tenant_id": mine.tid, "id": n["id"]} for n in nodes]
    members += [{"tenant_id": mine.tid, "id": nodes[0]["id"]},      # asked twice
                {"tenant_id": mine.tid, "id": foreign["id"]},       # another tenant's node
                {"tenant_id": other.tid, "id": foreign["id"]},      # a tenant not the caller's
                {"tenant_id": mine.tid, "id": "not-a-uuid"}]        # invalid params
    batch = [{"jsonrpc": "2.0", "id": i, "method": "get_node", "params": p}
             for i, p in enumerate(members)]
    async with httpx.AsyncClient(timeout=30) as http:
        reply = (await http.post(server.url, json=batch, headers={
            "Authorization": f"Bearer {mine.keys['viewer']}"})).json()
    answers = {r["id"]: r for r in reply}
    for i, node in enumerate(nodes):
        assert answers[i]["result"]["node"] == node
    assert answers[5]["result"]["node"] == nodes[0]
    assert answers[6]["error"]["code"] == -32001 and answers[6]["error"]["data"]["kind"] == "node"
    assert answers[7]["error"]["code"] == -32001 and answers[7]["error"]["data"]["kind"] == "tenant"
    assert answers[8]["error"]["code"] == -32602


async def test_concurrent_get_node_calls_are_coalesced_yet_each_gets_its_own_answer(server, rpc):
    """Single get_node calls in flight together are read with one query (caching/batch_reads.py);
    callers of two tenants, interleaved, must each get exactly their own node, their own
    not-found or their own refusal."""
    import asyncio

    a, b = await World.build(rpc), await World.build(rpc)
    a_nodes = [await a.node() for _ in range(6)]
    b_nodes = [await b.node() for _ in range(6)]
    asks = []  # (key, params, expected: node dict, or (code, kind))
    for i in range(6):
        asks.append((a.keys["viewer"], {"tenant_id": a.tid, "id": a_nodes[i]["id"]}, a_nodes[i]))
        asks.append((b.keys["viewer"], {"tenant_id": b.tid, "id": b_nodes[i]["id"]}, b_nodes[i]))
        asks.append((a.keys["viewer"], {"tenant_id": a.tid, "id": b_nodes[i]["id"]},
                     (-32001, "node")))    # b's node under a's tenant: not a's
        asks.append((a.keys["viewer"], {"tenant_id": b.tid, "id": b_nodes[i]["id"]},
                     (-32001, "tenant")))  # b's tenant: a's caller has no role there
    asks = asks * 3  # duplicates in flight too

    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=64)) as http:
        async def ask(key, params):
            return (await http.post(server.url, headers={"Authorization": f"Bearer {key}"},
                                    json={"jsonrpc": "2.0", "id": 1, "method": "get_node",
                                          "params": params})).json()
        replies = await asyncio.gather(*(ask(key, params) for key, params, _ in asks))
    for (_, params, expected), reply in zip(asks, replies):
        if isinstance(expected, dict):
            assert reply["result"]["node"] == expected, params
        else:
            code, kind = expected
            assert reply["error"]["code"] == code and reply["error"]["data"]["kind"] == kind


async def test_batch_prefetch_matches_ids_however_they_are_written(server, rpc):
    """A batch's get_node members are read ahead from their text ids; ids in another
    accepted spelling (upper case) still find their node, and a platform admin reads
    across tenants."""
    a, b = await World.build(rpc), await World.build(rpc)
    na, nb = await a.node(), await b.node()
    members = [{"tenant_id": a.tid.upper(), "id": na["id"].upper()},
               {"tenant_id": b.tid, "id": nb["id"]},
               {"tenant_id": a.tid, "id": nb["id"]},
               {"tenant_id": b.tid, "id": "00000000-0000-0000-0000-000000000000"}]
    batch = [{"jsonrpc": "2.0", "id": i, "method": "get_node", "params": p}
             for i, p in enumerate(members)]
    async with httpx.AsyncClient(timeout=30) as http:
        reply = {r["id"]: r for r in (await http.post(server.url, json=batch, headers={
            "Authorization": f"Bearer {server.admin_key}"})).json()}
    assert reply[0]["result"]["node"] == na
    assert reply[1]["result"]["node"] == nb
    assert reply[2]["error"]["code"] == -32001 and reply[2]["error"]["data"]["kind"] == "node"
    assert reply[3]["error"]["code"] == -32001 and reply[3]["error"]["data"]["kind"] == "node"


async def test_nesting_limit_applies_member_by_member_in_a_batch(http):
    """One member with a document nested too deeply is refused; its neighbours run.
    Brackets inside strings do not count as nesting."""
    brackets = "[{" * 200
    r = await post(http, [req("list_tenants", {"pagination": {"page_size": 1}}, id=1),
                          req("create_node", {"tenant_id": "x", "node_type_id": "x",
                                              "data": deep_object(101)}, id=2),
                          req("create_node", {"tenant_id": "x", "node_type_id": "x",
                                              "data": {"s": brackets}}, id=3)])
    answers = {a["id"]: a for a in r.json()}
    assert "result" in answers[1]
    assert answers[2]["error"]["code"] == -32602
    assert "data" in {e["field"] for e in answers[2]["error"]["data"]["errors"]}
    assert answers[3]["error"]["code"] == -32602  # the ids, not the nesting
    assert {e["field"] for e in answers[3]["error"]["data"]["errors"]} == {"tenant_id",
                                                                         "node_type_id"}


async def test_a_batch_with_bad_credentials_is_refused_member_by_member(server):
    """The members share one credentials lookup; each still gets the refusal."""
    batch = [{"jsonrpc": "2.0", "id": i, "method": "list_tenants", "params": {}}
             for i in range(20)]
    async with httpx.AsyncClient(timeout=30) as http:
        reply = (await http.post(server.url, json=batch, headers={
            "Authorization": "Bearer fdb_" + "x" * 43})).json()
    assert sorted(r["id"] for r in reply) == list(range(20))
    assert all(r["error"]["code"] == -32002 for r in reply)


# The dispatcher's answers, byte for byte (as they were when jsonrpcserver dispatched).
EXACT_ANSWERS = [
    (req("no_such_method", {"a": 1}, id=1),
     b'{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found","data":'
     b'{"type":"method_not_found","method":"no_such_method"}},"id":1}'),
    (req("get_tenant", {"id": "x", "extra": 1}, id="s"),
     b'{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params: extra: is not a '
     b'parameter of this method","data":{"type":"invalid_params","errors":[{"field":"extra",'
     b'"message":"is not a parameter of this method"}]}},"id":"s"}'),
    (req("get_tenant", ["a", "b"], id=2),
     b'{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params: params: too many '
     b'positional arguments","data":{"type":"invalid_params","errors":[{"field":"params",'
     b'"message":"too many positional arguments"}]}},"id":2}'),
    (req("rpc.discover", [1], id=3),
     b'{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params: params: too many '
     b'positional arguments","data":{"type":"invalid_params","errors":[{"field":"params",'
     b'"message":"too many positional arguments"}]}},"id":3}'),
    (req("rpc.discover", {"verbose": True}, id=None),
     b'{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params: verbose: is not a '
     b'parameter of this method","data":{"type":"invalid_params","errors":[{"field":"verbose",'
     b'"message":"is not a parameter of this method"}]}},"id":null}'),
    (req("get_tenant", {"id": "00000000-0000-0000-0000-000000000000"}, id=4.5),
     b'{"jsonrpc":"2.0","error":{"code":-32001,"message":"tenant not found","data":'
     b'{"type":"not_found","kind":"tenant","id":"00000000-0000-0000-0000-000000000000"}},'
     b'"id":4.5}'),
]


@pytest.mark.parametrize("request_object,answer", EXACT_ANSWERS)
async def test_dispatch_answers_byte_for_byte(http, request_object, answer):
    r = await post(http, request_object)
    assert r.content == answer
    batch = await post(http, [request_object, req("no_such_method", id=..., jsonrpc="2.0")])
    assert batch.content == b"[" + answer + b"]"  # the notification answers nothing


async def test_unknown_notifications_answer_nothing(http):
    r = await post(http, [req("no_such_method", id=...), req("get_tenant", ["a", "b"], id=...)])
    assert r.status_code == 204 and r.content == b""
