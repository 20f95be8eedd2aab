"""Input built to hurt the server: it must get a clean JSON-RPC error (or work correctly),
never a -32603, a stall, or damage to data already stored."""
from __future__ import annotations

import base64
import json
import time

import pytest

from rpc_server.client import Conflict, InvalidParams, NotFound

from .conftest import error_fields, missing_id


async def make_type(rpc, tenant, schema=None, name="T"):
    params = {"tenant_id": tenant["id"], "name": name}
    if schema is not None:
        params["schema"] = schema
    return (await rpc.call("create_node_type", params))["node_type"]


async def node_count(rpc, tenant):
    page = await rpc.call("list_nodes", {"tenant_id": tenant["id"], "pagination": {"page_size": 1}})
    return page["pagination"]["total_count"]


@pytest.mark.parametrize("depth", [150, 252, 300])
async def test_deep_document_as_json_string_is_refused_and_nothing_is_stored(rpc, tenant, depth):
    nt = await make_type(rpc, tenant)
    data = '{"a":' + "[" * depth + "]" * depth + "}"
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("create_node", {"tenant_id": tenant["id"], "node_type_id": nt["id"],
                                       "data": data})
    assert error_fields(exc) == ["data"]
    assert "nested deeper" in exc.value.data["errors"][0]["message"]
    assert await node_count(rpc, tenant) == 0
    listed = await rpc.call("list_nodes", {"tenant_id": tenant["id"]})
    assert listed["nodes"] == []


async def test_document_at_the_depth_limit_round_trips(rpc, tenant):
    nt = await make_type(rpc, tenant)
    data = '{"a":' + "[" * 98 + "]" * 98 + "}"  # 99 levels of nesting in all
    node = (await rpc.call("create_node", {"tenant_id": tenant["id"], "node_type_id": nt["id"],
                                           "data": data}))["node"]
    assert node["data"] == json.loads(data)
    listed = await rpc.call("list_nodes", {"tenant_id": tenant["id"]})
    assert listed["nodes"][0]["id"] == node["id"]


async def test_catastrophic_pattern_does_not_stall_the_server(rpc, tenant, http):
    nt = await make_type(rpc, tenant,
                         {"properties": {"x": {"type": "string", "pattern": "^(a+)+$"}}})
    started = time.monotonic()
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("create_node", {"tenant_id": tenant["id"], "node_type_id": nt["id"],
                                       "data": {"x": "a" * 5000 + "!"}})
    assert error_fields(exc) == ["data.x"]
    assert len(exc.value.data["errors"][0]["message"]) < 400  # the value is not echoed whole
    # With a backtracking engine this takes longer than the universe has; RE2 is linear.
    assert time.monotonic() - started < 10
    assert (await http.get("/health")).status_code == 200


async def test_pattern_properties_and_additional_properties_use_linear_matching(rpc, tenant):
    nt = await make_type(rpc, tenant, {"patternProperties": {"^(a+)+$": {"type": "integer"}},
                                       "additionalProperties": False})
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("create_node", {"tenant_id": tenant["id"], "node_type_id": nt["id"],
                                       "data": {"a" * 5000 + "!": 1}})
    # The key matched no pattern, so it is not allowed: the message quotes it (cut short).
    assert error_fields(exc) == ["data"]
    assert exc.value.data["errors"][0]["message"].startswith("'" + "a" * 200)
    await rpc.call("create_node", {"tenant_id": tenant["id"], "node_type_id": nt["id"],
                                   "data": {"aaa": 1}})


@pytest.mark.parametrize("pattern", ["(a)\\1", "(?=a)b", "(?<!x)y"])
async def test_patterns_outside_re2_are_refused_when_saved(rpc, tenant, pattern):
    for schema in ({"properties": {"x": {"pattern": pattern}}},
                   {"patternProperties": {pattern: {}}}):
        with pytest.raises(InvalidParams) as exc:
            await make_type(rpc, tenant, schema, name=f"P{hash(json.dumps(schema))}")
        assert error_fields(exc) == ["schema"] and "RE2" in exc.value.message


async def test_unique_items_is_linear_and_follows_json_equality(rpc, tenant):
    nt = await make_type(rpc, tenant, {"properties": {"x": {"type": "array", "uniqueItems": True}}})
    distinct = [{"a": i, "b": [i, str(i)]} for i in range(5000)]
    await rpc.call("create_node", {"tenant_id": tenant["id"], "node_type_id": nt["id"],
                                   "data": {"x": distinct}})
    for dupes in ([1, 1.0], [{"a": [1]}, {"a": [1.0]}], [{"a": 1, "b": 2}, {"b": 2, "a": 1}]):
        with pytest.raises(InvalidParams) as exc:
            await rpc.call("create_node", {"tenant_id": tenant["id"], "node_type_id": nt["id"],
                                           "data": {"x": dupes}})
        assert error_fields(exc) == ["data.x"]
        assert "non-unique" in exc.value.data["errors"][0]["message"]
    # true and 1 are different JSON values
    await rpc.call("create_node", {"tenant_id": tenant["id"], "node_type_id": nt["id"],
                                   "data": {"x": [True, 1, "1", None, 0, False]}})


@pytest.mark.parametrize("schema", [
    {"$ref": "#"},
    {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
])
async def test_self_referencing_schema_is_refused(rpc, tenant, schema):
    with pytest.raises(InvalidParams) as exc:
        await make_type(rpc, tenant, schema)
    assert error_fields(exc) == ["schema"] and "refers to itself" in exc.value.message


async def test_ref_like_values_inside_const_are_data(rpc, tenant):
    nt = await make_type(rpc, tenant, {"properties": {
        "x": {"const": {"$ref": "http://example.com/x", "pattern": "(a)\\1"}}}})
    await rpc.call("create_node", {"tenant_id": tenant["id"], "node_type_id": nt["id"],
                                   "data": {"x": {"$ref": "http://example.com/x",
                                                  "pattern": "(a)\\1"}}})


def forged_token(*parts) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(parts)).encode()).decode().rstrip("=")


@pytest.mark.parametrize("token", [
    forged_token("nodes", "2024-01-01T00:00:00+00:00", 123),
    forged_token("nodes", "2024-01-01T00:00:00+00:00", [1]),
    forged_token("nodes", "0001-01-01T00:00:00+05:00", "00000000-0000-0000-0000-000000000000"),
    forged_token("nodes", "9999-12-31T23:59:59-05:00", "00000000-0000-0000-0000-000000000000"),
    forged_token("nodes", "2024-01-01T00:00:00", "00000000-0000-0000-0000-000000000000"),
    forged_token("nodes", 5, "00000000-0000-0000-0000-000000000000"),
    forged_token("nodes"),
    forged_token({"a": 1}, "x", "y"),
])
async def test_forged_page_tokens_are_invalid_params(rpc, tenant, token):
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("list_nodes",
                       {"tenant_id": tenant["id"], "pagination": {"page_token": token}})
    assert error_fields(exc) == ["pagination.page_token"]


async def test_well_formed_token_from_far_future_just_ends_the_list(rpc, tenant):
    token = forged_token("nodes", "9999-12-31T00:00:00+00:00",
                         "ffffffff-ffff-ffff-ffff-ffffffffffff")
    page = await rpc.call("list_nodes",
                          {"tenant_id": tenant["id"], "pagination": {"page_token": token}})
    assert page["nodes"] == [] and page["pagination"]["next_page_token"] == ""


@pytest.mark.parametrize("version", [2**31, 3_000_000_000, 2**62])
async def test_expected_version_beyond_the_column_is_invalid_params(rpc, tenant, version):
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("update_tenant", {"id": tenant["id"], "name": "x",
                                         "expected_version": version})
    assert error_fields(exc) == ["expected_version"]


async def test_largest_expected_version_is_a_plain_conflict(rpc, tenant):
    with pytest.raises(Conflict) as exc:
        await rpc.call("update_tenant", {"id": tenant["id"], "name": "x",
                                         "expected_version": 2**31 - 1})
    assert exc.value.type == "version_conflict"


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd", "bogus"])
async def test_body_not_matching_its_content_encoding_is_a_jsonrpc_error(http, encoding):
    r = await http.post("/jsonrpc", content=b'{"jsonrpc":"2.0","method":"list_tenants","id":1}',
                        headers={"Content-Type": "application/json", "Content-Encoding": encoding})
    assert r.status_code == 200
    error = r.json()["error"]
    assert error["code"] == -32600 and encoding in error["data"]["reason"]


async def test_compressed_body_is_limited_after_decompression(http):
    import gzip
    bomb = gzip.compress(b'{"jsonrpc":"2.0","method":"list_tenants","id":1,"pad":"'
                         + b" " * 50_000_000 + b'"}')
    assert len(bomb) < 100_000
    r = await http.post("/jsonrpc", content=bomb, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 200
    error = r.json()["error"]
    assert error["code"] == -32600 and error["data"]["max_bytes"] == 1_048_576


async def test_gzip_body_that_is_really_gzip_works(http):
    import gzip
    body = gzip.compress(b'{"jsonrpc":"2.0","method":"list_tenants","id":1}')
    r = await http.post("/jsonrpc", content=body,
                        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert r.status_code == 200 and "result" in r.json()


async def test_big_integers_are_refused_not_rounded(rpc, tenant, http):
    nt = await make_type(rpc, tenant)
    # Inside a document sent as a JSON string: invalid params naming the field.
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("create_node", {"tenant_id": tenant["id"], "node_type_id": nt["id"],
                                       "data": '{"a": 123456789012345678901234567890}'})
    assert error_fields(exc) == ["data"] and "64 bits" in exc.value.message
    # Inside the request itself: read as written, refused by the field holding it.
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("create_node", {"tenant_id": tenant["id"], "node_type_id": nt["id"],
                                       "data": {"a": 123456789012345678901234567890}})
    assert error_fields(exc) == ["data"] and "64 bits" in exc.value.message
    assert await node_count(rpc, tenant) == 0
    # As the request's id: an invalid request naming the problem, not a rounded id.
    r = await http.post("/jsonrpc", content=b'{"jsonrpc":"2.0","method":"list_tenants",'
                                            b'"id":123456789012345678901234567890}')
    assert r.json()["error"]["code"] == -32600 and "64 bits" in r.json()["error"]["data"]["reason"]
    # The largest 64-bit values and long digit strings inside strings are fine and exact.
    node = (await rpc.call("create_node", {"tenant_id": tenant["id"], "node_type_id": nt["id"],
                                           "data": {"max": 2**63 - 1, "min": -(2**63),
                                                    "s": "12345678901234567890123"}}))["node"]
    assert node["data"] == {"max": 2**63 - 1, "min": -(2**63), "s": "12345678901234567890123"}


async def test_bulk_with_no_items_still_checks_the_tenant(rpc):
    for method, key in (("create_nodes", "nodes"), ("create_relationships", "relationships")):
        tenant_id = missing_id()
        with pytest.raises(NotFound) as exc:
            await rpc.call(method, {"tenant_id": tenant_id, key: []})
        assert (exc.value.data["kind"], exc.value.data["id"]) == ("tenant", tenant_id)


async def test_unknown_param_is_named(rpc):
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("get_tenant", {"id": missing_id(), "idd": 1})
    assert error_fields(exc) == ["idd"]


async def test_only_the_2020_12_dialect_is_accepted(rpc, tenant):
    for dialect in ("http://json-schema.org/draft-04/schema#", 5, None, ["x"]):
        with pytest.raises(InvalidParams) as exc:
            await make_type(rpc, tenant, {"$schema": dialect})
        assert error_fields(exc) == ["schema"]
    await make_type(rpc, tenant, {"$schema": "https://json-schema.org/draft/2020-12/schema",
                                  "type": "object"}, name="Modern")
