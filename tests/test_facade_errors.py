"""The REST facade's error mapping: one error shape for every status (401, 403, 404, 405,
409, 413, 422, 400), the same refusals as rpc_server."""
from __future__ import annotations

import asyncio

import httpx
import pytest

from rpc_server.client import FlexDBClient
from rpc_server.config import Settings

from .conftest import missing_id, own_user_id, unique
from .facade_helpers import (
    SMALL_BODY_LIMIT,
    N,
    T,
    as_caller,
    call,
    error,
    make_node,
    make_node_type,
    make_tenant,
    member_key,
    ok,
    rpc_error,
    same_error,
)

# ---------------------------------------------------------------- error mapping

async def test_a_missing_node_is_404(rest, rpc):
    t = await make_tenant(rpc)
    gone = missing_id()
    err = error(await call(rest, "GET", N + "/{node_id}", tenant_id=t, node_id=gone), 404,
                -32001, "not_found")
    assert err["details"]["kind"] == "node" and err["details"]["id"] == gone
    same_error(err, await rpc_error(rpc, "get_node", {"tenant_id": t, "id": gone}))


async def test_no_or_a_bad_key_is_401(facade):
    for key in (None, "not-a-key", "fdb_" + "0" * 40):
        async with as_caller(facade, key) as client:
            resp = await call(client, "GET", "/tenants")
            error(resp, 401, -32002, "unauthenticated")
            assert resp.headers["www-authenticate"] == 'Bearer realm="flexdb"'
    async with httpx.AsyncClient(base_url=facade.base) as client:
        for header in ("Basic dXNlcjpwdw==", "Bearer"):
            resp = await call(client, "POST", "/tenants", headers={"Authorization": header},
                              json={"slug": unique("x"), "name": "X"})
            error(resp, 401, -32002, "unauthenticated")
            assert resp.headers["www-authenticate"].startswith("Bearer")


async def test_a_viewer_cannot_create_a_node_403(facade, rpc, server):
    t = await make_tenant(rpc)
    nt = await make_node_type(rpc, t)
    _, key = await member_key(rpc, t, "viewer")
    body = {"node_type_id": nt, "data": {"name": "x"}}
    async with as_caller(facade, key) as viewer:
        err = error(await call(viewer, "POST", N, tenant_id=t, json=body), 403, -32003,
                    "forbidden")
        ok(await call(viewer, "GET", N, tenant_id=t))  # reading is allowed
    async with FlexDBClient(server.url, api_key=key) as direct:
        same_error(err, await rpc_error(direct, "create_node", {"tenant_id": t, **body}))
    assert (await rpc.call("list_nodes", {"tenant_id": t}))["nodes"] == []


async def test_a_member_of_another_tenant_gets_404_like_rpc(facade, rpc, server):
    mine, theirs = await make_tenant(rpc), await make_tenant(rpc)
    node = await make_node(rpc, theirs, await make_node_type(rpc, theirs), secret="x")
    _, key = await member_key(rpc, mine, "owner")
    owner = await own_user_id(rpc)  # the platform admin created (and owns) both tenants
    async with as_caller(facade, key) as outsider, \
            FlexDBClient(server.url, api_key=key) as direct:
        for route, path, method, params in [
                (N + "/{node_id}", {"node_id": node["id"]}, "get_node", {"id": node["id"]}),
                (T + "/users/{user_id}", {"user_id": owner}, "get_tenant_user",
                 {"user_id": owner}),
                (N, {}, "list_nodes", {}), (T, {}, "get_tenant", None)]:
            resp = await call(outsider, "GET", route, tenant_id=theirs, **path)
            err = error(resp, 404, -32001, "not_found")
            assert "secret" not in resp.text
            rpc_params = {"id": theirs} if params is None else {"tenant_id": theirs, **params}
            same_error(err, await rpc_error(direct, method, rpc_params))
        patch = await call(outsider, "PATCH", N + "/{node_id}", tenant_id=theirs,
                           node_id=node["id"], json={"data": {"secret": "stolen"}})
        error(patch, 404, -32001, "not_found")
    assert (await rpc.call("get_node", {"tenant_id": theirs, "id": node["id"]}))["node"] == node


async def test_conflicts_are_409(rest, rpc):
    taken = (await rpc.call("create_tenant", {"slug": unique("dup"), "name": "D"}))["tenant"]
    body = {"slug": taken["slug"], "name": "Again"}
    err = error(await call(rest, "POST", "/tenants", json=body), 409, -32004)
    same_error(err, await rpc_error(rpc, "create_tenant", body))

    stale = {"name": "late", "expected_version": 7}
    for method in ("PUT", "PATCH"):
        err = error(await call(rest, method, T, tenant_id=taken["id"], json=stale), 409, -32004)
        same_error(err, await rpc_error(rpc, "update_tenant", {"id": taken["id"], **stale}))
    nt = await make_node_type(rpc, taken["id"])
    node = await make_node(rpc, taken["id"], nt)
    stale = {"data": {"a": 1}, "expected_version": 5}
    direct = await rpc_error(rpc, "update_node", {"tenant_id": taken["id"], "id": node["id"],
                                                  **stale})
    for method in ("PUT", "PATCH"):
        err = error(await call(rest, method, N + "/{node_id}", tenant_id=taken["id"],
                               node_id=node["id"], json=stale), 409, -32004)
        same_error(err, direct)
    assert (await rpc.call("get_tenant", {"id": taken["id"]}))["tenant"] == taken


async def test_invalid_params_are_422_with_field_details(rest, rpc):
    t = await make_tenant(rpc)
    err = error(await call(rest, "POST", N, tenant_id=t, json={"data": []}), 422, -32602,
                "invalid_params")
    fields = {(e["field"], e["in"]) for e in err["details"]["errors"]}
    assert fields == {("node_type_id", "body"), ("data", "body")}
    assert all(e["message"] for e in err["details"]["errors"])
    assert err["message"].startswith("Invalid params: ")

    err = error(await call(rest, "GET", N + "/{node_id}", tenant_id="not-a-uuid",
                           node_id=missing_id()), 422, -32602, "invalid_params")
    assert [(e["field"], e["in"]) for e in err["details"]["errors"]] == [("tenant_id", "path")]
    err = error(await call(rest, "GET", N, tenant_id=t, params={"page_size": 0}), 422, -32602)
    assert [(e["field"], e["in"]) for e in err["details"]["errors"]] == [("page_size", "query")]
    err = error(await call(rest, "POST", "/tenants", json={"slug": "x", "name": "X",
                                                           "unknown": 1}), 422, -32602)
    assert "unknown" in {e["field"] for e in err["details"]["errors"]}

    # Checked by rpc_server (the node type's schema): the same details as over JSON-RPC.
    nt = (await rpc.call("create_node_type", {"tenant_id": t, "name": "Strict", "schema": {
        "type": "object", "required": ["name"]}}))["node_type"]["id"]
    body = {"node_type_id": nt, "data": {"age": 1}}
    err = error(await call(rest, "POST", N, tenant_id=t, json=body), 422, -32602)
    same_error(err, await rpc_error(rpc, "create_node", {"tenant_id": t, **body}))


async def test_malformed_json_is_400(rest, rpc):
    t = await make_tenant(rpc)
    for bad in (b'{"slug": "x", "name": ', b"{not json}", b"\xff\xfe"):
        err = error(await call(rest, "POST", "/tenants", content=bad,
                               headers={"Content-Type": "application/json"}),
                    400, -32700, "parse_error")
        assert err["message"] == "The request body is not valid JSON"
    error(await call(rest, "POST", N, tenant_id=t, content=b"[1,",
                     headers={"Content-Type": "application/json"}), 400, -32700, "parse_error")


async def test_unknown_route_is_404_and_wrong_method_405(rest):
    err = error(await rest.get("/no/such/route"), 404, -32601, "route_not_found")
    assert err["details"]["path"] == "/no/such/route"
    resp = await rest.delete("/tenants")
    err = error(resp, 405, -32601, "method_not_allowed")
    assert err["message"] == "DELETE is not allowed on this route"


async def test_a_405_names_the_allowed_methods(rest):
    resp = await rest.delete("/tenants")
    err = error(resp, 405, -32601, "method_not_allowed")
    assert set(resp.headers["allow"].split(", ")) == {"GET", "POST"}
    assert set(err["details"]["allowed"]) == {"GET", "POST"}


async def test_a_body_over_the_limit_is_413(edge_facade, server, rpc):
    t = await make_tenant(rpc)
    nt = await make_node_type(rpc, t)
    async with as_caller(edge_facade, server.admin_key) as client:
        fits = {"node_type_id": nt, "data": {"pad": "x" * (SMALL_BODY_LIMIT - 200)}}
        ok(await call(client, "POST", N, tenant_id=t, json=fits), 201)
        too_big = {"node_type_id": nt, "data": {"pad": "x" * SMALL_BODY_LIMIT}}

        declared = await call(client, "POST", N, tenant_id=t, json=too_big,
                              headers={"X-Request-ID": "big-1"})
        err = error(declared, 413, -32600, "body_too_large")
        assert err["details"]["max_bytes"] == SMALL_BODY_LIMIT and err["request_id"] == "big-1"

        async def chunks(body: bytes, size: int = 1000):
            for i in range(0, len(body), size):
                yield body[i:i + size]

        payload = httpx.Request("POST", "/", json=too_big).content
        chunked = await call(client, "POST", N, tenant_id=t, content=chunks(payload),
                             headers={"Content-Type": "application/json"})
        assert "content-length" not in chunked.request.headers
        err = error(chunked, 413, -32600, "body_too_large")
        assert err["details"]["max_bytes"] == SMALL_BODY_LIMIT

        small = httpx.Request("POST", "/", json={"node_type_id": nt}).content
        ok(await call(client, "POST", N, tenant_id=t, content=chunks(small, 5),
                      headers={"Content-Type": "application/json"}), 201)
    assert (await rpc.call("list_nodes", {"tenant_id": t}))["pagination"]["total_count"] == 2


async def test_non_json_numbers_are_refused_like_rpc(rest, rpc):
    t = await make_tenant(rpc)
    nt = await make_node_type(rpc, t)
    for number in (b"NaN", b"Infinity", b"-Infinity"):
        body = b'{"node_type_id": "%s", "data": {"x": %s}}' % (nt.encode(), number)
        error(await call(rest, "POST", N, tenant_id=t, content=body,
                         headers={"Content-Type": "application/json"}), 400, -32700)
    # 1e400 is JSON, out of range: the field holding it is invalid, as over JSON-RPC
    body = b'{"node_type_id": "%s", "data": {"x": 1e400}}' % nt.encode()
    err = error(await call(rest, "POST", N, tenant_id=t, content=body,
                           headers={"Content-Type": "application/json"}), 422, -32602)
    assert [e["field"] for e in err["details"]["errors"]] == ["data"]
    assert (await rpc.call("list_nodes", {"tenant_id": t}))["nodes"] == []


async def test_an_unpaired_surrogate_is_refused_like_rpc(rest, rpc):
    t = await make_tenant(rpc)
    nt = await make_node_type(rpc, t)
    body = b'{"node_type_id": "%s", "data": {"x": "\\ud800"}}' % nt.encode()
    error(await call(rest, "POST", N, tenant_id=t, content=body,
                     headers={"Content-Type": "application/json"}), 400, -32700)


async def test_a_body_the_facade_accepts_is_not_refused_upstream(rest, rpc):
    """The largest body the facade takes (by default rpc_server's limit less the envelope's
    room) is created; one byte more is the facade's own 413."""
    t = await make_tenant(rpc)
    nt = await make_node_type(rpc, t)
    settings = Settings()
    limit = settings.facade_body_limit
    assert limit < settings.max_body_bytes
    empty = len(httpx.Request("POST", "/", json={"node_type_id": nt, "data": {"p": ""}}).content)
    body = {"node_type_id": nt, "data": {"p": "x" * (limit - empty)}}
    assert len(httpx.Request("POST", "/", json=body).content) == limit
    resp = await call(rest, "POST", N, tenant_id=t, json=body)
    assert resp.status_code == 201, resp.text[:300]
    body["data"]["p"] += "x"
    err = error(await call(rest, "POST", N, tenant_id=t, json=body), 413, -32600, "body_too_large")
    assert err["details"]["max_bytes"] == limit


async def test_a_viewer_patch_is_403_like_rpc(facade, rpc, server):
    t = await make_tenant(rpc)
    node = await make_node(rpc, t, await make_node_type(rpc, t))
    _, key = await member_key(rpc, t, "viewer")
    stale = {"data": {"a": 1}, "expected_version": 9}
    async with FlexDBClient(server.url, api_key=key) as direct:
        exc = await rpc_error(direct, "update_node", {"tenant_id": t, "id": node["id"], **stale})
    assert exc.code == -32003
    async with as_caller(facade, key) as viewer:
        error(await call(viewer, "PATCH", N + "/{node_id}", tenant_id=t, node_id=node["id"],
                         json={"data": {"a": 1}}), 403, -32003)
        error(await call(viewer, "PATCH", N + "/{node_id}", tenant_id=t, node_id=node["id"],
                         json=stale), 403, -32003)


async def test_concurrent_callers_keep_their_own_identity(facade, rpc, server):
    """The facade's one pooled RPC client carries each request's own Authorization."""
    t = await make_tenant(rpc)
    _, key = await member_key(rpc, t, "viewer")
    async with as_caller(facade, server.admin_key) as admin, as_caller(facade, key) as user, \
            as_caller(facade, None) as anonymous:
        callers = [admin, user, anonymous] * 10
        answers = await asyncio.gather(*(call(c, "GET", "/tenants", params={"page_size": 1})
                                         for c in callers))
    for caller, resp in zip(callers, answers):
        if caller is anonymous:
            error(resp, 401, -32002)
        elif caller is user:
            assert [x["id"] for x in ok(resp)["tenants"]] == [t]
            assert ok(resp)["pagination"]["total_count"] == 1
        else:
            assert ok(resp)["pagination"]["total_count"] > 1



@pytest.mark.parametrize("depth", [300, 1000])
async def test_deeply_nested_documents_are_422_not_500(rest, rpc, depth):
    t = await make_tenant(rpc)
    nt = await make_node_type(rpc, t)
    nested = "1"
    for _ in range(depth):
        nested = '{"a":' + nested + "}"
    body = ('{"node_type_id": "%s", "data": %s}' % (nt, nested)).encode()
    resp = await call(rest, "POST", N, tenant_id=t, content=body,
                      headers={"Content-Type": "application/json"})
    err = error(resp, 422, -32602, "invalid_params")
    assert [e["field"] for e in err["details"]["errors"]] == ["data"]
    node = (await rpc.call("create_node", {"tenant_id": t, "node_type_id": nt}))["node"]
    resp = await call(rest, "PATCH", N + "/{node_id}", tenant_id=t, node_id=node["id"],
                      content=('{"data": %s}' % nested).encode(),
                      headers={"Content-Type": "application/json"})
    err = error(resp, 422, -32602, "invalid_params")
    assert [e["field"] for e in err["details"]["errors"]] == ["data"]


async def test_out_of_range_moments_are_422_not_500(rest, rpc):
    t = await make_tenant(rpc)
    resp = await call(rest, "GET", T + "/audit-events", tenant_id=t,
                      params={"since": "9999-12-31T23:59:59-23:59"})
    error(resp, 422, -32602, "invalid_params")
    resp = await call(rest, "POST", "/api-keys",
                      json={"name": "far", "expires_at": "0001-01-01T00:00:00+01:00"})
    error(resp, 422, -32602, "invalid_params")


async def test_a_405_on_a_literal_route_names_only_its_methods(rest, rpc):
    # /nodes/bulk also matches /nodes/{node_id}: Allow is about the bulk route only.
    t = await make_tenant(rpc)
    resp = await rest.request("OPTIONS", f"/tenants/{t}/nodes/bulk")
    error(resp, 405, -32601, "method_not_allowed")
    assert resp.headers["allow"] == "POST"
