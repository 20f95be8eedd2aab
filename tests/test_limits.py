"""One set of limits, equal on both surfaces (JSON-RPC and the REST facade in front of it):
how deeply a document may nest (FLEXDB_MAX_JSON_DEPTH), numbers out of range, boolean
schemas, unknown query parameters and bodies not sent as JSON."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import httpx
import pytest

from rest_facade.routes import all_routers
from rpc_server.client import FlexDBClient, InvalidParams
from rpc_server.config import ConfigError, Settings, load_settings

from .conftest import error_fields, missing_id, running_facade, running_server, unique

LIMIT = Settings().max_json_depth  # the default, and the largest the setting takes
ECHO = "def run(input, db):\n    return input\n"
TOO_DEEP = f"is nested deeper than {LIMIT} levels (FLEXDB_MAX_JSON_DEPTH)"
JSON = {"Content-Type": "application/json"}


def nested(depth: int, leaf: Any = "leaf") -> dict:
    """An object nested exactly `depth` levels ({} and [] count one each): objects and
    arrays in turn, an object outermost, `leaf` innermost."""
    doc: Any = {"leaf": leaf}
    for level in range(1, depth):
        doc = {"k": doc} if (depth - level) % 2 else [doc]
    return doc


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth_of, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth_of, value), default=0)
    return 0


def schema_nested(depth: int) -> dict:
    """A valid JSON Schema nested exactly `depth` levels."""
    schema: dict = {}
    for _ in range(depth - 1):
        schema = {"items": schema}
    return schema


def test_the_default_limit_is_the_largest_the_setting_takes():
    """So the tests below, at the default, also cover the hardest case: a schema that deep
    must still be checkable, a document that deep writable inside any answer."""
    assert load_settings({"FLEXDB_MAX_JSON_DEPTH": str(LIMIT)}).max_json_depth == LIMIT
    with pytest.raises(ConfigError, match="FLEXDB_MAX_JSON_DEPTH"):
        load_settings({"FLEXDB_MAX_JSON_DEPTH": str(LIMIT + 1)})


def test_the_helpers_nest_exactly():
    for depth in (1, 2, 3, LIMIT, LIMIT + 1):
        assert depth_of(nested(depth)) == depth and isinstance(nested(depth), dict)
        assert depth_of(schema_nested(depth)) == depth
    assert "[" in json.dumps(nested(5))  # arrays count too


@pytest.fixture(scope="module")
def facade(server):
    with running_facade(server.url) as proc:
        yield proc


@pytest.fixture
async def rest(facade, server):
    async with httpx.AsyncClient(base_url=facade.base, timeout=60, headers={
            "Authorization": f"Bearer {server.admin_key}"}) as client:
        yield client


def ok(resp: httpx.Response, status: int = 200) -> Any:
    assert resp.status_code == status, resp.text
    return resp.json()


def rest_error(resp: httpx.Response, status: int, code: int, type: str) -> dict:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["code"] == code and error["details"]["type"] == type, error
    assert "not valid JSON" not in error["message"]
    return error


def refused_as_too_deep(resp: httpx.Response, field: str, limit: int = LIMIT) -> None:
    error = rest_error(resp, 422, -32602, "invalid_params")
    message = f"is nested deeper than {limit} levels (FLEXDB_MAX_JSON_DEPTH)"
    assert error["details"]["errors"] == [{"field": field, "in": "body", "message": message}]
    assert error["message"] == f"Invalid params: {field}: {message}"


async def rpc_refused_as_too_deep(rpc, method: str, params: dict, field: str,
                                  limit: int = LIMIT) -> None:
    with pytest.raises(InvalidParams) as exc:
        await rpc.call(method, params)
    assert error_fields(exc) == [field]
    assert exc.value.data["errors"][0]["message"] == \
        f"is nested deeper than {limit} levels (FLEXDB_MAX_JSON_DEPTH)"


async def make_tenant(rpc) -> str:
    return (await rpc.call("create_tenant", {"slug": unique("lim"), "name": "L"}))["tenant"]["id"]


async def make_node_type(rpc, tenant: str, schema: Any = None) -> str:
    params = {"tenant_id": tenant, "name": unique("T")}
    if schema is not None:
        params["schema"] = schema
    return (await rpc.call("create_node_type", params))["node_type"]["id"]


def as_sent(document: Any, as_string: bool) -> Any:
    return json.dumps(document) if as_string else document


# ---------------------------------------------------------------- nesting

@pytest.mark.parametrize("as_string", [False, True], ids=["object", "string"])
async def test_a_document_at_the_limit_goes_from_rest_to_rpc_and_back(rest, rpc, as_string):
    t = await make_tenant(rpc)
    nt = await make_node_type(rpc, t)
    doc, changed = nested(LIMIT), nested(LIMIT, "changed")
    node = ok(await rest.post(f"/tenants/{t}/nodes",
                              json={"node_type_id": nt, "data": as_sent(doc, as_string)}), 201)
    node_id = node["node"]["id"]
    read = (await rpc.call("get_node", {"tenant_id": t, "id": node_id}))["node"]
    assert read["data"] == doc and depth_of(read["data"]) == LIMIT
    # written back as read, then changed at the deepest level
    await rpc.call("update_node", {"tenant_id": t, "id": node_id, "data": read["data"]})
    await rpc.call("update_node", {"tenant_id": t, "id": node_id,
                                   "data": as_sent(changed, as_string)})
    assert ok(await rest.get(f"/tenants/{t}/nodes/{node_id}"))["node"]["data"] == changed
    # in a batch (the deepest spot of a JSON-RPC answer) and in a graph walk's answer
    listed = await rpc.batch([("list_nodes", {"tenant_id": t})])
    assert listed[0]["nodes"][0]["data"] == changed


@pytest.mark.parametrize("as_string", [False, True], ids=["object", "string"])
async def test_a_document_at_the_limit_goes_from_rpc_to_rest_and_back(rest, rpc, as_string):
    t = await make_tenant(rpc)
    nt = await make_node_type(rpc, t)
    doc, changed = nested(LIMIT), nested(LIMIT, "changed")
    node_id = (await rpc.call("create_node", {"tenant_id": t, "node_type_id": nt,
                                              "data": as_sent(doc, as_string)}))["node"]["id"]
    route = f"/tenants/{t}/nodes/{node_id}"
    read = ok(await rest.get(route))["node"]
    assert read["data"] == doc
    ok(await rest.put(route, json={"data": read["data"]}))  # written back as read
    ok(await rest.patch(route, json={"data": as_sent(changed, as_string)}))  # merge patch
    ok(await rest.put(route, json={"data": as_sent(changed, as_string)}))
    assert (await rpc.call("get_node", {"tenant_id": t, "id": node_id}))["node"]["data"] == changed
    # created in bulk over REST (each item's data one level further in), read over RPC
    bulk = ok(await rest.post(f"/tenants/{t}/nodes/bulk", json={"nodes": [
        {"node_type_id": nt, "data": as_sent(doc, as_string)}]}), 201)
    got = await rpc.call("get_node", {"tenant_id": t, "id": bulk["nodes"][0]["id"]})
    assert got["node"]["data"] == doc


@pytest.mark.parametrize("as_string", [False, True], ids=["object", "string"])
async def test_a_schema_at_the_limit_goes_both_ways(rest, rpc, as_string):
    t = await make_tenant(rpc)
    schema = schema_nested(LIMIT)
    created = ok(await rest.post(f"/tenants/{t}/node-types", json={
        "name": "Deep", "schema": as_sent(schema, as_string)}), 201)["node_type"]
    read = (await rpc.call("get_node_type", {"tenant_id": t, "id": created["id"]}))["node_type"]
    assert read["schema"] == schema
    await rpc.call("update_node_type", {"tenant_id": t, "id": created["id"],
                                        "schema": as_sent(read["schema"], as_string)})
    route = f"/tenants/{t}/node-types/{created['id']}"
    back = ok(await rest.get(route))["node_type"]
    assert back["schema"] == schema and back["version"] == 2
    ok(await rest.put(route, json={"schema": back["schema"]}))


async def test_a_pipeline_input_at_the_limit_goes_both_ways(rest, rpc):
    t = await make_tenant(rpc)
    pipeline = (await rpc.call("create_pipeline", {"tenant_id": t, "name": "echo",
                                                   "code": ECHO}))["pipeline"]
    doc = nested(LIMIT)
    run = ok(await rest.post(f"/tenants/{t}/pipelines/{pipeline['id']}/runs",
                             json={"input": doc}), 201)["run"]
    got = (await rpc.call("get_pipeline_run", {"tenant_id": t, "id": run["id"]}))["run"]
    assert got["input"] == doc and got["result"] == doc
    again = (await rpc.call("run_pipeline", {"tenant_id": t, "pipeline_id": pipeline["id"],
                                             "input": got["result"]}))["run"]
    assert ok(await rest.get(f"/tenants/{t}/runs/{again['id']}"))["run"]["input"] == doc


@pytest.mark.parametrize("as_string", [False, True], ids=["object", "string"])
async def test_one_level_deeper_is_invalid_params_on_both_surfaces(rest, rpc, as_string):
    t = await make_tenant(rpc)
    nt = await make_node_type(rpc, t)
    node = (await rpc.call("create_node", {"tenant_id": t, "node_type_id": nt}))["node"]
    deep = as_sent(nested(LIMIT + 1), as_string)
    deep_schema = as_sent(schema_nested(LIMIT + 1), as_string)

    await rpc_refused_as_too_deep(rpc, "create_node", {"tenant_id": t, "node_type_id": nt,
                                                       "data": deep}, "data")
    refused_as_too_deep(await rest.post(f"/tenants/{t}/nodes", json={
        "node_type_id": nt, "data": deep}), "data")
    await rpc_refused_as_too_deep(rpc, "update_node", {"tenant_id": t, "id": node["id"],
                                                       "data": deep}, "data")
    for method in ("put", "patch"):
        refused_as_too_deep(await rest.request(method, f"/tenants/{t}/nodes/{node['id']}",
                                               json={"data": deep}), "data")
    await rpc_refused_as_too_deep(rpc, "create_nodes", {"tenant_id": t, "nodes": [
        {"node_type_id": nt}, {"node_type_id": nt, "data": deep}]}, "nodes.1.data")
    refused_as_too_deep(await rest.post(f"/tenants/{t}/nodes/bulk", json={"nodes": [
        {"node_type_id": nt}, {"node_type_id": nt, "data": deep}]}), "nodes.1.data")
    await rpc_refused_as_too_deep(rpc, "create_node_type", {"tenant_id": t, "name": "D",
                                                            "schema": deep_schema}, "schema")
    refused_as_too_deep(await rest.post(f"/tenants/{t}/node-types", json={
        "name": "D", "schema": deep_schema}), "schema")
    if not as_string:  # (these take objects only)
        await rpc_refused_as_too_deep(rpc, "run_pipeline", {
            "tenant_id": t, "pipeline_id": missing_id(), "input": deep}, "input")
        refused_as_too_deep(await rest.post(f"/tenants/{t}/pipelines/{missing_id()}/runs",
                                            json={"input": deep}), "input")
        search = {"filter": {"field": "data", "op": "eq", "value": nested(LIMIT)}}
        await rpc_refused_as_too_deep(rpc, "query_nodes", {"tenant_id": t, **search},
                                      "filter")
        refused_as_too_deep(await rest.post(f"/tenants/{t}/nodes/search", json=search),
                            "filter")
        query = {"sql": "SELECT $1::jsonb AS v", "params": [1, deep]}
        await rpc_refused_as_too_deep(rpc, "execute_query", {"tenant_id": t, **query},
                                      "params.1")
        refused_as_too_deep(await rest.post(f"/tenants/{t}/query", json=query), "params.1")
    # nothing was stored or changed
    listed = await rpc.call("list_nodes", {"tenant_id": t})
    assert [n["id"] for n in listed["nodes"]] == [node["id"]] and listed["nodes"][0]["version"] == 1
    types = await rpc.call("list_node_types", {"tenant_id": t})
    assert [x["id"] for x in types["node_types"]] == [nt]


async def test_a_too_deep_document_keeps_the_request_id_and_fails_only_its_member(http):
    deep = nested(LIMIT + 1)
    r = await http.post("/jsonrpc", json=[
        {"jsonrpc": "2.0", "id": "a", "method": "list_tenants", "params": {}},
        {"jsonrpc": "2.0", "id": "b", "method": "create_node", "params": {
            "tenant_id": missing_id(), "node_type_id": missing_id(), "data": deep}}])
    answers = {a["id"]: a for a in r.json()}
    assert "result" in answers["a"]
    error = answers["b"]["error"]
    assert error["code"] == -32602
    assert error["data"]["errors"] == [{"field": "data", "message": TOO_DEEP}]


@pytest.mark.parametrize("depth", [300, 1000])
async def test_far_deeper_documents_are_refused_the_same_way(rest, rpc, http, depth):
    """Past what orjson writes (~254 levels): still the document's own refusal."""
    t = await make_tenant(rpc)
    nt = await make_node_type(rpc, t)
    text = '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)
    for data in (text, json.dumps(text)):  # as an object, as a JSON string
        body = '{"node_type_id": "%s", "data": %s}' % (nt, data)
        refused_as_too_deep(await rest.post(f"/tenants/{t}/nodes", content=body,
                                            headers=JSON), "data")
        r = await http.post("/jsonrpc", content='{"jsonrpc": "2.0", "id": 7, "method": '
                            '"create_node", "params": {"tenant_id": "%s", %s}}' % (t, body[1:-1]))
        assert r.json()["id"] == 7
        assert r.json()["error"]["data"]["errors"] == [{"field": "data", "message": TOO_DEEP}]


async def test_json_too_deep_to_read_is_refused_whole_on_both_surfaces(rest, rpc, http):
    t = await make_tenant(rpc)
    deep = b"[" * 5000 + b"]" * 5000
    r = await http.post("/jsonrpc", content=deep)
    error = r.json()["error"]
    assert error["code"] == -32600 and error["data"]["reason"] == "JSON nested too deeply to read"
    error = rest_error(await rest.post(f"/tenants/{t}/nodes", content=b'{"data":' + deep + b"}",
                                       headers=JSON), 400, -32600, "invalid_request")
    assert error["message"] == "The request body is JSON nested too deeply to read"


def test_the_limit_is_the_setting_of_each_process(database_url, server):
    """FLEXDB_MAX_JSON_DEPTH is read by the server and by the facade, each for itself
    (here a facade set lower than the server behind it refuses on its own)."""
    limit = 6

    async def check(rpc_url: str, key: str, facade_base: str):
        async with FlexDBClient(rpc_url, api_key=key) as rpc:
            t = await make_tenant(rpc)
            nt = await make_node_type(rpc, t)
            await rpc.call("create_node", {"tenant_id": t, "node_type_id": nt,
                                           "data": nested(limit)})
            await rpc_refused_as_too_deep(rpc, "create_node", {
                "tenant_id": t, "node_type_id": nt, "data": nested(limit + 1)}, "data", limit)
        async with FlexDBClient(server.url, api_key=server.admin_key) as rpc:
            t = await make_tenant(rpc)
            nt = await make_node_type(rpc, t)
        async with httpx.AsyncClient(base_url=facade_base, timeout=30, headers={
                "Authorization": f"Bearer {server.admin_key}"}) as rest:
            route = f"/tenants/{t}/nodes"
            ok(await rest.post(route, json={"node_type_id": nt, "data": nested(limit)}), 201)
            refused_as_too_deep(await rest.post(route, json={
                "node_type_id": nt, "data": nested(limit + 1)}), "data", limit)

    with running_server({"FLEXDB_DATABASE_URL": database_url,
                         "FLEXDB_MAX_JSON_DEPTH": str(limit)}) as low_server, \
            running_facade(server.url, FLEXDB_MAX_JSON_DEPTH=str(limit)) as low_facade:
        asyncio.run(check(low_server.url, low_server.admin_key, low_facade.base))


# ---------------------------------------------------------------- numbers out of range

OUT_OF_RANGE = [b"123456789012345678901234567890", b"9223372036854775808",
                b"-9223372036854775809", b"1e400", b"-1e400", b"1" + b"0" * 5000]
HOLDS = ("holds a number out of range: integers must fit in 64 bits (-2^63 .. 2^63-1) and "
         "other numbers in a double; send larger numbers as strings")


@pytest.mark.parametrize("number", OUT_OF_RANGE, ids=lambda n: n[:24].decode())
async def test_a_number_out_of_range_is_invalid_params_not_a_parse_error(rest, rpc, http,
                                                                          number):
    t = await make_tenant(rpc)
    nt = await make_node_type(rpc, t)
    params = b'{"tenant_id": "%s", "node_type_id": "%s", "data": {"x": [%s]}}' % (
        t.encode(), nt.encode(), number)
    reply = (await http.post("/jsonrpc", content=b'{"jsonrpc": "2.0", "id": 41, "method": '
                             b'"create_node", "params": %s}' % params)).json()
    assert reply["id"] == 41 and reply["error"]["code"] == -32602
    assert reply["error"]["data"]["errors"] == [{"field": "data", "message": HOLDS}]
    # in a batch, only the member holding it fails
    batch = b'[{"jsonrpc": "2.0", "id": 1, "method": "get_tenant", "params": {"id": "%s"}},' \
            b'{"jsonrpc": "2.0", "id": 2, "method": "create_node", "params": %s}]' % (
                t.encode(), params)
    answers = {a["id"]: a for a in (await http.post("/jsonrpc", content=batch)).json()}
    assert answers[1]["result"]["tenant"]["id"] == t
    assert answers[2]["error"]["data"]["errors"] == [{"field": "data", "message": HOLDS}]
    # over REST: 422 naming the field, not 400
    body = b'{"node_type_id": "%s", "data": {"x": [%s]}}' % (nt.encode(), number)
    error = rest_error(await rest.post(f"/tenants/{t}/nodes", content=body, headers=JSON),
                       422, -32602, "invalid_params")
    assert error["details"]["errors"] == [{"field": "data", "in": "body", "message": HOLDS}]
    # inside a document sent as a JSON string too
    text = json.dumps('{"x": [%s]}' % number.decode())
    body = b'{"node_type_id": "%s", "data": %s}' % (nt.encode(), text.encode())
    error = rest_error(await rest.post(f"/tenants/{t}/nodes", content=body, headers=JSON),
                       422, -32602, "invalid_params")
    assert error["details"]["errors"][0]["message"] == HOLDS
    # in a typed field
    body = b'{"name": "x", "expected_version": %s}' % number
    error = rest_error(await rest.patch(f"/tenants/{t}", content=body, headers=JSON),
                       422, -32602, "invalid_params")
    assert [e["field"] for e in error["details"]["errors"]] == ["expected_version"]
    assert error["details"]["errors"][0]["message"].startswith("is a number out of range")
    reply = (await http.post("/jsonrpc", content=b'{"jsonrpc": "2.0", "id": 3, "method": '
                             b'"update_tenant", "params": {"id": "%s", "name": "x", '
                             b'"expected_version": %s}}' % (t.encode(), number))).json()
    assert reply["id"] == 3 and reply["error"]["code"] == -32602
    assert reply["error"]["data"]["errors"] == [
        {"field": "expected_version", "message": error["details"]["errors"][0]["message"]}]
    assert (await rpc.call("list_nodes", {"tenant_id": t}))["nodes"] == []


async def test_an_id_out_of_range_is_an_invalid_request(http):
    r = await http.post("/jsonrpc", content=b'{"jsonrpc": "2.0", "method": "list_tenants", '
                                            b'"id": 123456789012345678901234567890}')
    error = r.json()["error"]
    assert r.json()["id"] is None and error["code"] == -32600
    assert error["data"]["reason"] == "id is a number out of range: integers must fit in 64 bits"


async def test_numbers_at_the_edges_of_the_range_are_kept_exactly(rest, rpc):
    t = await make_tenant(rpc)
    nt = await make_node_type(rpc, t)
    body = (b'{"node_type_id": "%s", "data": {"max": 9223372036854775807, '
            b'"min": -9223372036854775808, "big": 1.7976931348623157e308, "tiny": 5e-324}}'
            % nt.encode())
    node = ok(await rest.post(f"/tenants/{t}/nodes", content=body, headers=JSON), 201)["node"]
    expected = {"max": 2**63 - 1, "min": -(2**63), "big": 1.7976931348623157e308,
                "tiny": 5e-324}
    assert node["data"] == expected
    got = await rpc.call("get_node", {"tenant_id": t, "id": node["id"]})
    assert got["node"]["data"] == expected


# ---------------------------------------------------------------- numbers as stored

BODY_LIMIT = Settings().max_body_bytes
AS_STORED = ("bytes as stored, more than %d (FLEXDB_MAX_BODY_BYTES): it is read back with a "
             "space after each comma and colon, and its numbers in plain notation (1e-300 "
             "takes 302 characters; send such numbers as strings)" % BODY_LIMIT)


async def as_stored(database_url: str, document: Any) -> int:
    """The bytes of the document as PostgreSQL writes it back."""
    conn = await asyncpg.connect(database_url)
    try:
        text = await conn.fetchval("SELECT $1::jsonb::text", json.dumps(document))
    finally:
        await conn.close()
    return len(text.encode())


def tiny_numbers(count: int) -> dict:
    # orjson writes each with an exponent; PostgreSQL stores and writes each in full
    return {"x": [1e-300] * count, "y": [1.5e-7, -2.5e-10, 1.7976931348623157e308, 1e16]}


async def assert_refused_as_stored(rest, rpc, t: str, nt: str, node_id: str,
                                   too_large: dict) -> None:
    """Each way of storing a document refuses `too_large`, saying it counts as stored."""
    for method, params in [
            ("create_node", {"tenant_id": t, "node_type_id": nt, "data": too_large}),
            ("update_node", {"tenant_id": t, "id": node_id, "data": too_large}),
            ("create_relationship", {"tenant_id": t, "source_node_id": node_id,
                                     "target_node_id": node_id, "relationship_type": "r",
                                     "data": too_large}),
            ("create_nodes", {"tenant_id": t, "nodes": [{"node_type_id": nt,
                                                         "data": too_large}]})]:
        with pytest.raises(InvalidParams) as exc:
            await rpc.call(method, params)
        message = exc.value.data["errors"][0]["message"]
        assert message.startswith("takes ") and message.endswith(AS_STORED), message
    error = rest_error(await rest.post(f"/tenants/{t}/nodes", json={
        "node_type_id": nt, "data": json.dumps(too_large, separators=(",", ":"))}),
        422, -32602, "invalid_params")
    assert error["details"]["errors"][0]["message"].endswith(AS_STORED)


async def test_a_document_larger_as_stored_than_a_body_may_be_is_refused(rest, rpc, http,
                                                                         database_url):
    """A few bytes of 1e-300 are 302 in every read of it: counted as stored, a document
    of them is held to FLEXDB_MAX_BODY_BYTES like any other, on every surface. The count
    is PostgreSQL's own: a document one number short of the limit is stored."""
    t = await make_tenant(rpc)
    nt = await make_node_type(rpc, t)
    one = await as_stored(database_url, tiny_numbers(1))
    assert one - await as_stored(database_url, tiny_numbers(0)) == 302
    fits = (BODY_LIMIT - one) // (302 + 2) + 1  # each next one with its comma and space
    assert await as_stored(database_url, tiny_numbers(fits)) <= BODY_LIMIT
    assert await as_stored(database_url, tiny_numbers(fits + 1)) > BODY_LIMIT
    node = (await rpc.call("create_node", {"tenant_id": t, "node_type_id": nt,
                                           "data": tiny_numbers(fits)}))["node"]
    assert (await rpc.call("get_node", {"tenant_id": t, "id": node["id"]}))["node"][
        "data"] == tiny_numbers(fits)
    # 7 bytes more in the request, 304 as stored
    await assert_refused_as_stored(rest, rpc, t, nt, node["id"], tiny_numbers(fits + 1))
    nodes = (await rpc.call("list_nodes", {"tenant_id": t}))["nodes"]
    assert [n["id"] for n in nodes] == [node["id"]]
    assert nodes[0]["data"] == tiny_numbers(fits)  # (the update was refused)


async def test_the_spaces_postgresql_writes_back_count_as_stored(rest, rpc, database_url):
    """PostgreSQL writes a document back with a space after each comma and colon: a list of
    zeros within the limit as sent (2 bytes each) takes half as much again as stored, and
    is refused once that passes FLEXDB_MAX_BODY_BYTES; the largest that fits as stored is
    kept and read back whole. Commas and colons in strings are not separators."""
    t = await make_tenant(rpc)
    nt = await make_node_type(rpc, t)
    empty = await as_stored(database_url, {"z": [0]})
    fits = (BODY_LIMIT - empty) // 3 + 1  # each next zero with its comma and space
    assert await as_stored(database_url, {"z": [0] * fits}) == BODY_LIMIT - (
        BODY_LIMIT - empty) % 3
    assert len(json.dumps({"z": [0] * (fits + 1)}, separators=(",", ":"))) < BODY_LIMIT * 0.7
    node = (await rpc.call("create_node", {"tenant_id": t, "node_type_id": nt,
                                           "data": {"z": [0] * fits}}))["node"]
    got = await rpc.call("get_node", {"tenant_id": t, "id": node["id"]})
    assert got["node"]["data"] == {"z": [0] * fits}
    await assert_refused_as_stored(rest, rpc, t, nt, node["id"], {"z": [0] * (fits + 1)})
    # one string (and room for the request's envelope): no separators
    punctuation = {"s": ",:" * ((BODY_LIMIT - 400) // 2)}
    assert await as_stored(database_url, punctuation) <= BODY_LIMIT
    assert len(json.dumps(punctuation)) + (BODY_LIMIT - 400) > BODY_LIMIT  # if counted
    await rpc.call("update_node", {"tenant_id": t, "id": node["id"], "data": punctuation})


async def test_exponents_in_strings_are_not_numbers(rpc):
    """Only numbers grow as stored: text that looks like one (a UUID's "5e8", "1e300"
    spelled out) is counted as it is."""
    t = await make_tenant(rpc)
    nt = await make_node_type(rpc, t)
    data = {"ids": ["3fa85e64-5717-4562-b3fc-2c963f66afa6"] * 100,
            "notes": ["1e300, 1e-300 and \"5e-324\"" + " " * 1000] * 900}
    text = len(json.dumps(data))  # counted as numbers, the three would add 800 bytes a note
    assert text < BODY_LIMIT < text + 800 * 900
    node = (await rpc.call("create_node", {"tenant_id": t, "node_type_id": nt,
                                           "data": data}))["node"]
    assert (await rpc.call("get_node", {"tenant_id": t, "id": node["id"]}))["node"][
        "data"] == data


async def test_nan_and_infinity_stay_malformed_json(rest, rpc, http):
    t = await make_tenant(rpc)
    for literal in (b"NaN", b"Infinity", b"-Infinity"):
        body = b'{"data": {"x": %s}}' % literal
        r = await rest.post(f"/tenants/{t}/nodes", content=body, headers=JSON)
        assert r.status_code == 400 and r.json()["error"]["code"] == -32700
        r = await http.post("/jsonrpc", content=b'{"jsonrpc": "2.0", "id": 1, "method": '
                                                b'"list_tenants", "params": {"x": %s}}' % literal)
        assert r.json()["error"]["code"] == -32700


# ---------------------------------------------------------------- boolean schemas

@pytest.mark.parametrize("as_string", [False, True], ids=["object", "string"])
async def test_true_and_false_are_whole_schemas(rest, rpc, as_string):
    t = await make_tenant(rpc)
    accept_all = await make_node_type(rpc, t, "true" if as_string else True)
    got = (await rpc.call("get_node_type", {"tenant_id": t, "id": accept_all}))["node_type"]
    assert got["schema"] is True
    await rpc.call("create_node", {"tenant_id": t, "node_type_id": accept_all,
                                   "data": {"anything": [1, "x"]}})
    accept_none = ok(await rest.post(f"/tenants/{t}/node-types", json={
        "name": "None", "schema": "false" if as_string else False}), 201)["node_type"]
    assert accept_none["schema"] is False
    assert ok(await rest.get(f"/tenants/{t}/node-types/{accept_none['id']}")) == \
        {"node_type": accept_none}
    for data in ({}, {"a": 1}):
        with pytest.raises(InvalidParams) as exc:
            await rpc.call("create_node", {"tenant_id": t, "node_type_id": accept_none["id"],
                                           "data": data})
        assert error_fields(exc) == ["data"]
        error = rest_error(await rest.post(f"/tenants/{t}/nodes", json={
            "node_type_id": accept_none["id"], "data": data}), 422, -32602, "invalid_params")
        assert [e["field"] for e in error["details"]["errors"]] == ["data"]
    # false -> true over JSON-RPC, true -> an object -> false over REST
    updated = await rpc.call("update_node_type", {"tenant_id": t, "id": accept_none["id"],
                                                  "schema": "true" if as_string else True})
    assert updated["node_type"]["schema"] is True
    route = f"/tenants/{t}/node-types/{accept_none['id']}"
    ok(await rest.patch(route, json={"schema": {"type": "object"}}))
    back = ok(await rest.put(route, json={"schema": "false" if as_string else False}))
    assert back["node_type"]["schema"] is False and back["node_type"]["version"] == 4


@pytest.mark.parametrize("schema", [1, "1", [], "[]", "null"], ids=str)
async def test_other_non_object_schemas_are_refused(rpc, schema):
    t = await make_tenant(rpc)
    with pytest.raises(InvalidParams) as exc:
        await make_node_type(rpc, t, schema)
    assert error_fields(exc) == ["schema"]
    assert exc.value.data["errors"][0]["message"].startswith("must be a JSON Schema: an object, "
                                                             "true or false")


# ---------------------------------------------------------------- REST query parameters

def facade_routes() -> list[tuple[str, str]]:
    routes = sorted((method, route.path) for router in all_routers() for route in router.routes
                    for method in route.methods)
    assert len(routes) > 50
    return routes


@pytest.mark.parametrize("method,path", facade_routes())
async def test_an_unknown_query_parameter_is_422_on_every_route(rest, method, path):
    url = path.format(**{name: missing_id() for name in
                         ("tenant_id", "user_id", "node_type_id", "node_id", "relationship_id",
                          "pipeline_id", "run_id", "key_id", "job_id")})
    resp = await rest.request(method, url, params={"page_sise": "5"},
                              json={} if method in ("POST", "PUT", "PATCH") else None)
    error = rest_error(resp, 422, -32602, "invalid_params")
    assert error["details"]["errors"] == [
        {"field": "page_sise", "in": "query", "message": "is not a parameter of this route"}]


async def test_declared_query_parameters_still_work(rest, rpc):
    t = await make_tenant(rpc)
    nt = await make_node_type(rpc, t)
    page = ok(await rest.get(f"/tenants/{t}/nodes", params={
        "page_size": 1, "page_token": "", "include_total": "true", "node_type_id": nt}))
    assert page["pagination"]["total_count"] == 0


# ---------------------------------------------------------------- REST bodies not sent as JSON

@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded",
                                          "text/plain", "multipart/form-data; boundary=x"])
async def test_a_body_not_sent_as_json_is_415_saying_so(rest, rpc, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    resp = await rest.post("/tenants", content=b'{"slug": "nope", "name": "N"}',
                           headers=headers)
    assert ("content-type" in resp.request.headers) == bool(content_type)
    error = rest_error(resp, 415, -32600, "unsupported_media_type")
    assert error["message"] == "Send the body as JSON, with Content-Type: application/json"
    assert error["details"]["content_type"] == content_type
    listed = await rpc.call("list_tenants", {"pagination": {"page_size": 1000}})
    assert "nope" not in {x["slug"] for x in listed["tenants"]}


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8",
                                          "Application/JSON", "application/merge-patch+json"])
async def test_json_content_types_are_accepted(rest, rpc, content_type):
    resp = await rest.post("/tenants", content=json.dumps({"slug": unique("ct"), "name": "C"}),
                           headers={"Content-Type": content_type})
    ok(resp, 201)


async def test_a_route_without_a_body_takes_a_request_without_content_type(rest, rpc):
    t = await make_tenant(rpc)
    resp = await rest.post(f"/tenants/{t}/runs/{missing_id()}/cancel")
    rest_error(resp, 404, -32001, "not_found")


async def test_json_rpc_takes_bodies_whatever_their_content_type(http):
    body = b'{"jsonrpc": "2.0", "id": 5, "method": "list_tenants", "params": {}}'
    for content_type in ("application/x-www-form-urlencoded", "text/plain", None):
        headers = {"Content-Type": content_type} if content_type else {}
        r = await http.post("/jsonrpc", content=body, headers=headers)
        assert r.status_code == 200 and "result" in r.json() and r.json()["id"] == 5


async def test_openapi_documents_the_415_and_422(rest):
    document = ok(await rest.get("/openapi.json"))
    create = document["paths"]["/tenants"]["post"]["responses"]
    assert {"415", "422"} <= set(create)
