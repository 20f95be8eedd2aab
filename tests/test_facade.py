"""The REST facade end to end: a live `flexdb facade` process in front of the live rpc_server.

Every route is exercised (a route without a test fails test_every_route_is_exercised), its
answer compared with what the direct JSON-RPC call returns for the same object; then the
error mapping (one error shape for every status), request ids, security headers, CORS, body
limits, and what happens when rpc_server is unreachable, slow or busy."""
from __future__ import annotations

import asyncio
import re
import threading
import time
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from aiohttp import web

from rest_facade.app import create_app
from rpc_server.client import FlexDBClient, RpcError
from rpc_server.config import Settings

from .auth_helpers import new_user
from .conftest import free_port, missing_id, own_user_id, running_facade, running_server, unique

ECHO = "def run(input, db):\n    return input\n"
FAIL = "def run(input, db):\n    raise ValueError('boom')\n"
SPIN = "def run(input, db):\n    n = 0\n    while True:\n        n += 1\n"
ERROR_KEYS = {"code", "message", "details", "request_id"}
GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")
SMALL_BODY_LIMIT = 4096
ALLOWED_ORIGIN, EVIL_ORIGIN = "https://app.example", "https://evil.example"

T, U, NT, N, R, P = ("/tenants/{tenant_id}", "/users/{user_id}",
                     "/tenants/{tenant_id}/node-types", "/tenants/{tenant_id}/nodes",
                     "/tenants/{tenant_id}/relationships", "/tenants/{tenant_id}/pipelines")
# Every route the facade declares, written out by hand: test_the_route_list_is_the_apps
# compares it with the app, test_every_route_is_exercised with what the tests requested.
ROUTES = {
    ("POST", "/tenants"), ("GET", "/tenants"),
    ("GET", T), ("PUT", T), ("PATCH", T), ("DELETE", T), ("GET", T + "/usage"),
    ("POST", "/users"), ("GET", "/users"),
    ("GET", U), ("PUT", U), ("PATCH", U), ("DELETE", U),
    ("POST", T + "/users"), ("GET", T + "/users"), ("GET", T + "/users/{user_id}"),
    ("PUT", T + "/users/{user_id}"), ("PATCH", T + "/users/{user_id}"),
    ("DELETE", T + "/users/{user_id}"),
    ("POST", NT), ("GET", NT), ("GET", NT + "/{node_type_id}"), ("PUT", NT + "/{node_type_id}"),
    ("PATCH", NT + "/{node_type_id}"), ("DELETE", NT + "/{node_type_id}"),
    ("POST", N), ("POST", N + "/bulk"), ("GET", N), ("GET", N + "/{node_id}"),
    ("PUT", N + "/{node_id}"), ("PATCH", N + "/{node_id}"), ("DELETE", N + "/{node_id}"),
    ("POST", R), ("POST", R + "/bulk"), ("GET", R), ("GET", R + "/{relationship_id}"),
    ("PUT", R + "/{relationship_id}"), ("PATCH", R + "/{relationship_id}"),
    ("DELETE", R + "/{relationship_id}"),
    ("POST", T + "/query"), ("POST", N + "/search"), ("POST", T + "/traverse"),
    ("POST", T + "/shortest-path"),
    ("POST", P), ("GET", P), ("GET", P + "/{pipeline_id}"), ("PUT", P + "/{pipeline_id}"),
    ("PATCH", P + "/{pipeline_id}"), ("DELETE", P + "/{pipeline_id}"),
    ("POST", P + "/{pipeline_id}/runs"), ("GET", T + "/runs"), ("GET", T + "/runs/{run_id}"),
    ("POST", T + "/runs/{run_id}/cancel"),
    ("POST", "/api-keys"), ("GET", "/api-keys"), ("DELETE", "/api-keys/{key_id}"),
    ("GET", T + "/audit-events"), ("GET", T + "/audit-events/verify"),
}
NOT_API = {"/", "/docs", "/docs/assets/{name}", "/redoc", "/openapi.json", "/health"}
EXERCISED: set[tuple[str, str]] = set()


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def facade(server):
    with running_facade(server.url) as proc:
        yield proc


@pytest.fixture(scope="module")
def edge_facade(server):
    """A facade with a small body limit and one allowed CORS origin."""
    with running_facade(server.url, FLEXDB_FACADE_MAX_BODY_BYTES=str(SMALL_BODY_LIMIT),
                        FLEXDB_CORS_ORIGINS=ALLOWED_ORIGIN) as proc:
        yield proc


def as_caller(facade, key: str | None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(base_url=facade.base, headers=headers, timeout=30)


@pytest.fixture
async def rest(facade, server):
    async with as_caller(facade, server.admin_key) as client:
        yield client


# ---------------------------------------------------------------- helpers

async def call(client: httpx.AsyncClient, method: str, route: str, *, json: Any = None,
               params: dict | None = None, content: Any = None,
               headers: dict | None = None, **path: str) -> httpx.Response:
    """One request to `route` (a path template of ROUTES) with its {placeholders} from
    `path`; the route counts as exercised."""
    assert (method, route) in ROUTES, f"{method} {route} is not a facade route"
    EXERCISED.add((method, route))
    return await client.request(method, route.format(**path), json=json, params=params,
                                content=content, headers=headers)


def assert_api_headers(resp: httpx.Response) -> None:
    h = resp.headers
    assert h["x-content-type-options"] == "nosniff"
    assert h["x-frame-options"] == "DENY"
    assert h["cache-control"] == "no-store"
    assert h["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert h["x-request-id"]


def ok(resp: httpx.Response, status: int = 200) -> Any:
    """The JSON body of a successful answer."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    assert_api_headers(resp)
    return resp.json()


async def created(client: httpx.AsyncClient, resp: httpx.Response, location: str) -> Any:
    """201 with a Location, which (for resources with a GET) answers the same body."""
    body = ok(resp, 201)
    assert resp.headers["location"] == location
    got = await client.get(location)
    assert ok(got) == body
    return body


def no_content(resp: httpx.Response) -> None:
    assert resp.status_code == 204, resp.text
    assert resp.content == b""
    assert_api_headers(resp)


def error(resp: httpx.Response, status: int, code: int, type: str | None = None) -> dict:
    """The error of an answer: the one shape every failure has."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    assert_api_headers(resp)
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS, body
    err = body["error"]
    assert err["code"] == code, err
    assert isinstance(err["message"], str) and err["message"]
    assert err["request_id"] == resp.headers["x-request-id"]
    if type is not None:
        assert err["details"]["type"] == type, err
    return err


async def rpc_error(rpc: FlexDBClient, method: str, params: dict) -> RpcError:
    with pytest.raises(RpcError) as exc:
        await rpc.call(method, params)
    return exc.value


def same_error(err: dict, exc: RpcError) -> None:
    """A REST error carries exactly what the JSON-RPC error said."""
    assert (err["code"], err["message"], err["details"]) == (exc.code, exc.message, exc.data)


async def walk_pages(client, route: str, key: str, page_size: int, **path) -> list[dict]:
    """Every item of a list route, page by page through page_token."""
    items, token = [], ""
    while True:
        page = ok(await call(client, "GET", route, params={"page_size": page_size,
                                                           "page_token": token}, **path))
        assert len(page[key]) <= page_size
        items += page[key]
        token = page["pagination"]["next_page_token"]
        if not token:
            return items


def identity(item: dict) -> str:
    return item.get("id") or item["user_id"]  # memberships have no id of their own


async def same_page(client, rpc, route: str, method: str, params: dict, key: str,
                    page_size: int = 2, **path) -> dict:
    """The first two pages of a list route equal the RPC method's, filters included."""
    query = {"page_size": page_size, **params}
    first = ok(await call(client, "GET", route, params=query, **path))
    rpc_params = {**{k: v for k, v in path.items() if k == "tenant_id"}, **params,
                  "pagination": {"page_size": page_size}}
    assert first == await rpc.call(method, rpc_params)
    assert len(first[key]) <= page_size
    token = first["pagination"]["next_page_token"]
    if token:
        second = ok(await call(client, "GET", route, params={**query, "page_token": token},
                               **path))
        rpc_params["pagination"]["page_token"] = token
        assert second == await rpc.call(method, rpc_params)
        assert not {identity(i) for i in second[key]} & {identity(i) for i in first[key]}
    bare = ok(await call(client, "GET", route, params={**query, "include_total": "false"},
                         **path))
    assert "total_count" not in bare["pagination"] and bare[key] == first[key]
    return first


async def make_tenant(rpc) -> str:
    return (await rpc.call("create_tenant", {"slug": unique("f"), "name": "F"}))["tenant"]["id"]


async def make_node_type(rpc, t: str, name: str = "Person") -> str:
    return (await rpc.call("create_node_type", {"tenant_id": t, "name": name}))["node_type"]["id"]


async def make_node(rpc, t: str, nt: str, **data) -> dict:
    return (await rpc.call("create_node", {"tenant_id": t, "node_type_id": nt,
                                           "data": data}))["node"]


async def member_key(rpc, tenant_id: str, role: str) -> tuple[dict, str]:
    """A new user with an API key, a member of the tenant with `role`."""
    user, key = await new_user(rpc)
    await rpc.call("add_user_to_tenant", {"tenant_id": tenant_id, "user_id": user["id"],
                                          "role": role})
    return user, key


def declared_routes(app) -> set[tuple[str, str]]:
    """(method, path) of every route of the app, also of included routers (FastAPI keeps
    them as nodes of their own since 0.16x)."""
    found: set[tuple[str, str]] = set()

    def walk(routes, prefix: str) -> None:
        for route in routes:
            inner = getattr(route, "original_router", None)
            if inner is not None:
                walk(inner.routes, prefix + route.include_context.prefix)
            elif getattr(route, "methods", None):
                found.update((m, prefix + route.path) for m in route.methods - {"HEAD"})

    walk(app.routes, "")
    return {(m, p) for m, p in found if p not in NOT_API}


# ---------------------------------------------------------------- the route list, docs

def test_the_route_list_is_the_apps():
    assert declared_routes(create_app(Settings())) == ROUTES


async def test_openapi_lists_every_route_and_the_docs_render(rest):
    spec = ok(await rest.get("/openapi.json"))
    listed = {(m.upper(), path) for path, ops in spec["paths"].items() for m in ops}
    assert listed == ROUTES
    for path in ("/docs", "/redoc"):
        page = await rest.get(path)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "<html" in page.text.lower()
        assert page.headers["x-frame-options"] == "DENY"
        # Served from the package (test_facade_docs.py checks them in a browser).
        assert "http" not in page.headers["content-security-policy"]


# ---------------------------------------------------------------- tenants

async def test_tenants(rest, rpc):
    slug = unique("rest")
    resp = await call(rest, "POST", "/tenants", json={"slug": slug, "name": "Rest"})
    tenant = (await created(rest, resp, f"/tenants/{resp.json()['tenant']['id']}"))["tenant"]
    t = tenant["id"]
    assert (tenant["slug"], tenant["name"], tenant["version"]) == (slug, "Rest", 1)
    assert ok(await call(rest, "GET", T, tenant_id=t)) == await rpc.call("get_tenant", {"id": t})

    await make_tenant(rpc)
    await make_tenant(rpc)
    await same_page(rest, rpc, "/tenants", "list_tenants", {}, "tenants")

    put = ok(await call(rest, "PUT", T, tenant_id=t, json={"name": "Renamed"}))
    assert (put["tenant"]["name"], put["tenant"]["slug"], put["tenant"]["version"]) == \
        ("Renamed", slug, 2)
    patched = ok(await call(rest, "PATCH", T, tenant_id=t,
                            json={"status": "suspended", "expected_version": 2}))
    assert patched["tenant"]["status"] == "suspended" and patched["tenant"]["version"] == 3
    assert patched == await rpc.call("get_tenant", {"id": t})

    usage = ok(await call(rest, "GET", T + "/usage", tenant_id=t))
    assert usage == await rpc.call("get_tenant_usage", {"tenant_id": t})
    assert usage["usage"]["nodes"] == 0 and usage["usage"]["max_nodes"] is None

    no_content(await call(rest, "DELETE", T, tenant_id=t))
    error(await call(rest, "GET", T, tenant_id=t), 404, -32001, "not_found")


# ---------------------------------------------------------------- users and members

async def test_users(rest, rpc):
    email = f"{unique('rest')}@example.com"
    resp = await call(rest, "POST", "/users", json={"email": email, "display_name": "Rest"})
    user = (await created(rest, resp, f"/users/{resp.json()['user']['id']}"))["user"]
    u = user["id"]
    assert (user["email"], user["display_name"]) == (email, "Rest")
    assert ok(await call(rest, "GET", U, user_id=u)) == await rpc.call("get_user", {"id": u})

    await new_user(rpc)
    await same_page(rest, rpc, "/users", "list_users", {}, "users")

    put = ok(await call(rest, "PUT", U, user_id=u, json={"display_name": "Put"}))
    assert put["user"]["display_name"] == "Put" and put["user"]["email"] == email
    patched = ok(await call(rest, "PATCH", U, user_id=u,
                            json={"display_name": "Patched",
                                  "expected_version": put["user"]["version"]}))
    assert patched == await rpc.call("get_user", {"id": u})
    assert patched["user"]["display_name"] == "Patched"

    no_content(await call(rest, "DELETE", U, user_id=u))
    error(await call(rest, "GET", U, user_id=u), 404, -32001, "not_found")


async def test_tenant_members(rest, rpc):
    t = await make_tenant(rpc)
    user, _ = await new_user(rpc)
    u = user["id"]
    resp = await call(rest, "POST", T + "/users", tenant_id=t,
                      json={"user_id": u, "role": "viewer"})
    member = (await created(rest, resp, f"/tenants/{t}/users/{u}"))["tenant_user"]
    assert (member["user_id"], member["role"]) == (u, "viewer")
    route = T + "/users/{user_id}"
    assert ok(await call(rest, "GET", route, tenant_id=t, user_id=u)) == \
        await rpc.call("get_tenant_user", {"tenant_id": t, "user_id": u})

    for _ in range(2):
        other, _ = await new_user(rpc)
        await rpc.call("add_user_to_tenant", {"tenant_id": t, "user_id": other["id"]})
    listed = await same_page(rest, rpc, T + "/users", "list_tenant_users", {}, "tenant_users",
                             tenant_id=t)
    assert listed["pagination"]["total_count"] == 4  # the owner and three members

    put = ok(await call(rest, "PUT", route, tenant_id=t, user_id=u, json={"role": "member"}))
    assert put["tenant_user"]["role"] == "member"
    patched = ok(await call(rest, "PATCH", route, tenant_id=t, user_id=u,
                            json={"role": "admin"}))
    assert patched["tenant_user"]["role"] == "admin"
    assert patched == await rpc.call("get_tenant_user", {"tenant_id": t, "user_id": u})
    members = await rpc.call("list_tenant_users", {"tenant_id": t})
    assert patched["tenant_user"] in members["tenant_users"]

    no_content(await call(rest, "DELETE", route, tenant_id=t, user_id=u))
    members = await rpc.call("list_tenant_users", {"tenant_id": t})
    assert u not in {m["user_id"] for m in members["tenant_users"]}
    gone = error(await call(rest, "GET", route, tenant_id=t, user_id=u), 404, -32001,
                 "not_found")
    same_error(gone, await rpc_error(rpc, "get_tenant_user", {"tenant_id": t, "user_id": u}))


# ---------------------------------------------------------------- node types

async def test_node_types(rest, rpc):
    t = await make_tenant(rpc)
    schema = {"type": "object", "properties": {"name": {"type": "string"}}}
    resp = await call(rest, "POST", NT, tenant_id=t,
                      json={"name": "Person", "description": "people", "schema": schema})
    location = f"/tenants/{t}/node-types/{resp.json()['node_type']['id']}"
    node_type = (await created(rest, resp, location))["node_type"]
    nt = node_type["id"]
    assert (node_type["name"], node_type["schema"]) == ("Person", schema)
    assert ok(await call(rest, "GET", NT + "/{node_type_id}", tenant_id=t, node_type_id=nt)) \
        == await rpc.call("get_node_type", {"tenant_id": t, "id": nt})

    await make_node_type(rpc, t, "Place")
    await make_node_type(rpc, t, "Thing")
    await same_page(rest, rpc, NT, "list_node_types", {}, "node_types", tenant_id=t)
    assert len(await walk_pages(rest, NT, "node_types", 1, tenant_id=t)) == 3

    put = ok(await call(rest, "PUT", NT + "/{node_type_id}", tenant_id=t, node_type_id=nt,
                        json={"description": "humans"}))
    assert put["node_type"]["description"] == "humans" and put["node_type"]["schema"] == schema
    patched = ok(await call(rest, "PATCH", NT + "/{node_type_id}", tenant_id=t,
                            node_type_id=nt, json={"schema": None}))
    assert patched["node_type"]["schema"] is None
    assert patched == await rpc.call("get_node_type", {"tenant_id": t, "id": nt})

    no_content(await call(rest, "DELETE", NT + "/{node_type_id}", tenant_id=t,
                          node_type_id=nt))
    error(await call(rest, "GET", NT + "/{node_type_id}", tenant_id=t, node_type_id=nt),
          404, -32001, "not_found")


# ---------------------------------------------------------------- nodes

async def test_nodes(rest, rpc):
    t = await make_tenant(rpc)
    people, places = await make_node_type(rpc, t), await make_node_type(rpc, t, "Place")
    resp = await call(rest, "POST", N, tenant_id=t,
                      json={"node_type_id": people, "data": {"name": "Ada"}})
    node = (await created(rest, resp, f"/tenants/{t}/nodes/{resp.json()['node']['id']}"))[
        "node"]
    n = node["id"]
    assert (node["node_type_id"], node["data"], node["version"]) == (people, {"name": "Ada"}, 1)
    assert ok(await call(rest, "GET", N + "/{node_id}", tenant_id=t, node_id=n)) == \
        await rpc.call("get_node", {"tenant_id": t, "id": n})

    bulk = ok(await call(rest, "POST", N + "/bulk", tenant_id=t, json={"nodes": [
        {"node_type_id": people, "data": {"name": "Bob"}},
        {"node_type_id": places, "data": {"name": "Paris"}},
        {"node_type_id": people, "data": {"name": "Cy"}}]}), 201)
    assert [x["data"]["name"] for x in bulk["nodes"]] == ["Bob", "Paris", "Cy"]
    for x in bulk["nodes"]:
        assert {"node": x} == await rpc.call("get_node", {"tenant_id": t, "id": x["id"]})

    listed = await same_page(rest, rpc, N, "list_nodes", {"node_type_id": people}, "nodes",
                             tenant_id=t)
    assert listed["pagination"]["total_count"] == 3
    everything = await walk_pages(rest, N, "nodes", 2, tenant_id=t)
    assert [x["id"] for x in everything] == [n] + [x["id"] for x in bulk["nodes"]]
    bad_token = await rpc_error(rpc, "list_nodes", {"tenant_id": t,
                                                    "pagination": {"page_token": "garbage"}})
    same_error(error(await call(rest, "GET", N, tenant_id=t, params={"page_token": "garbage"}),
                     422, -32602), bad_token)

    put = ok(await call(rest, "PUT", N + "/{node_id}", tenant_id=t, node_id=n,
                        json={"data": {"name": "Ada L."}, "expected_version": 1}))
    assert (put["node"]["data"], put["node"]["version"]) == ({"name": "Ada L."}, 2)
    assert put == await rpc.call("get_node", {"tenant_id": t, "id": n})

    no_content(await call(rest, "DELETE", N + "/{node_id}", tenant_id=t, node_id=n))
    error(await call(rest, "GET", N + "/{node_id}", tenant_id=t, node_id=n), 404, -32001,
          "not_found")


async def test_patch_of_a_node_is_a_json_merge_patch(rest, rpc):
    t = await make_tenant(rpc)
    nt = await make_node_type(rpc, t)
    n = (await make_node(rpc, t, nt, name="Ada", tags=["a"], drop=1,
                         address={"city": "London", "zip": "N1"}))["id"]
    route = N + "/{node_id}"
    patched = ok(await call(rest, "PATCH", route, tenant_id=t, node_id=n, json={"data": {
        "drop": None, "tags": ["b"], "address": {"zip": None, "street": "Main"}, "age": 36,
        "absent": None}}))
    assert patched["node"]["data"] == {"name": "Ada", "tags": ["b"], "age": 36,
                                       "address": {"city": "London", "street": "Main"}}
    assert patched["node"]["version"] == 2
    assert patched == await rpc.call("get_node", {"tenant_id": t, "id": n})

    again = ok(await call(rest, "PATCH", route, tenant_id=t, node_id=n,
                          json={"data": {"age": 37}, "expected_version": 2}))
    assert again["node"]["version"] == 3 and again["node"]["data"]["age"] == 37

    # A stale expected_version: 409 exactly as rpc_server answers it.
    stale = await rpc_error(rpc, "update_node", {"tenant_id": t, "id": n, "data": {},
                                                 "expected_version": 2})
    same_error(error(await call(rest, "PATCH", route, tenant_id=t, node_id=n,
                                json={"data": {"age": 1}, "expected_version": 2}),
                     409, -32004), stale)
    assert (await rpc.call("get_node", {"tenant_id": t, "id": n}))["node"]["version"] == 3
    error(await call(rest, "PATCH", route, tenant_id=t, node_id=missing_id(),
                     json={"data": {}}), 404, -32001, "not_found")



async def test_concurrent_patches_lose_no_update(rest, rpc):
    """Each PATCH is a read and a versioned write: of concurrent ones, those that answer 200
    are all in the result, the others answer 409."""
    t = await make_tenant(rpc)
    n = (await make_node(rpc, t, await make_node_type(rpc, t)))["id"]
    answers = await asyncio.gather(*(
        call(rest, "PATCH", N + "/{node_id}", tenant_id=t, node_id=n, json={"data": {f"k{i}": i}})
        for i in range(8)))
    applied = set()
    for i, resp in enumerate(answers):
        if resp.status_code == 200:
            applied.add(f"k{i}")
        else:
            error(resp, 409, -32004, "version_conflict")
    node = (await rpc.call("get_node", {"tenant_id": t, "id": n}))["node"]
    assert applied and set(node["data"]) == applied
    assert node["version"] == 1 + len(applied)

# ---------------------------------------------------------------- relationships

async def test_relationships(rest, rpc):
    t = await make_tenant(rpc)
    nt = await make_node_type(rpc, t)
    a, b, c = [(await make_node(rpc, t, nt, name=x))["id"] for x in "abc"]
    resp = await call(rest, "POST", R, tenant_id=t, json={
        "source_node_id": a, "target_node_id": b, "relationship_type": "knows",
        "data": {"since": 2020, "via": {"school": "X", "club": "Y"}}})
    location = f"/tenants/{t}/relationships/{resp.json()['relationship']['id']}"
    rel = (await created(rest, resp, location))["relationship"]
    r = rel["id"]
    assert (rel["source_node_id"], rel["target_node_id"], rel["relationship_type"]) == \
        (a, b, "knows")
    assert ok(await call(rest, "GET", R + "/{relationship_id}", tenant_id=t,
                         relationship_id=r)) == \
        await rpc.call("get_relationship", {"tenant_id": t, "id": r})

    bulk = ok(await call(rest, "POST", R + "/bulk", tenant_id=t, json={"relationships": [
        {"source_node_id": a, "target_node_id": c, "relationship_type": "knows"},
        {"source_node_id": b, "target_node_id": c, "relationship_type": "likes"},
        {"source_node_id": a, "target_node_id": c, "relationship_type": "likes"}]}), 201)
    assert len(bulk["relationships"]) == 3
    for x in bulk["relationships"]:
        assert {"relationship": x} == await rpc.call("get_relationship",
                                                     {"tenant_id": t, "id": x["id"]})
    for filters, count in [({"source_node_id": a}, 3), ({"target_node_id": c}, 3),
                           ({"relationship_type": "likes"}, 2),
                           ({"source_node_id": a, "relationship_type": "knows"}, 2)]:
        page = await same_page(rest, rpc, R, "list_relationships", filters, "relationships",
                               tenant_id=t)
        assert page["pagination"]["total_count"] == count, filters

    route = R + "/{relationship_id}"
    put = ok(await call(rest, "PUT", route, tenant_id=t, relationship_id=r,
                        json={"relationship_type": "met", "data": {"since": 2021}}))
    assert (put["relationship"]["relationship_type"], put["relationship"]["data"]) == \
        ("met", {"since": 2021})
    retyped = ok(await call(rest, "PATCH", route, tenant_id=t, relationship_id=r,
                            json={"relationship_type": "knows"}))
    assert retyped["relationship"]["relationship_type"] == "knows"
    assert retyped["relationship"]["data"] == {"since": 2021}
    merged = ok(await call(rest, "PATCH", route, tenant_id=t, relationship_id=r, json={
        "data": {"since": None, "how": {"where": "work"}},
        "expected_version": retyped["relationship"]["version"]}))
    assert merged["relationship"]["data"] == {"how": {"where": "work"}}
    assert merged["relationship"]["version"] == retyped["relationship"]["version"] + 1
    assert merged == await rpc.call("get_relationship", {"tenant_id": t, "id": r})

    stale = await rpc_error(rpc, "update_relationship", {"tenant_id": t, "id": r,
                                                         "data": {}, "expected_version": 1})
    same_error(error(await call(rest, "PATCH", route, tenant_id=t, relationship_id=r,
                                json={"data": {"x": 1}, "expected_version": 1}),
                     409, -32004), stale)
    same_error(error(await call(rest, "PUT", route, tenant_id=t, relationship_id=r,
                                json={"data": {}, "expected_version": 1}), 409, -32004), stale)

    no_content(await call(rest, "DELETE", route, tenant_id=t, relationship_id=r))
    error(await call(rest, "GET", route, tenant_id=t, relationship_id=r), 404, -32001,
          "not_found")


# ---------------------------------------------------------------- queries and graph walks

async def test_queries_search_and_graph_walks(rest, rpc):
    t = await make_tenant(rpc)
    nt = await make_node_type(rpc, t)
    ids = [(await make_node(rpc, t, nt, name=f"n{i}", rank=i))["id"] for i in range(4)]
    for source, target in zip(ids, ids[1:]):
        await rpc.call("create_relationship", {"tenant_id": t, "source_node_id": source,
                                               "target_node_id": target,
                                               "relationship_type": "next"})

    query = {"sql": "SELECT data->>'name' AS name FROM nodes WHERE (data->>'rank')::int >= $1 "
                    "ORDER BY 1", "params": [2]}
    rows = ok(await call(rest, "POST", T + "/query", tenant_id=t, json=query))
    direct = await rpc.call("execute_query", {"tenant_id": t, **query})
    rows.pop("duration_ms"), direct.pop("duration_ms")
    assert rows == direct
    assert (rows["rows"], rows["row_count"], rows["truncated"]) == ([["n2"], ["n3"]], 2, False)

    search = {"filter": {"field": "data.rank", "op": "gte", "value": 1},
              "sort": {"field": "data.rank", "direction": "desc"},
              "pagination": {"page_size": 2}}
    found = ok(await call(rest, "POST", N + "/search", tenant_id=t, json=search))
    assert found == await rpc.call("query_nodes", {"tenant_id": t, **search})
    assert [x["id"] for x in found["nodes"]] == [ids[3], ids[2]]
    token = found["pagination"]["next_page_token"]
    search["pagination"]["page_token"] = token
    rest_page = ok(await call(rest, "POST", N + "/search", tenant_id=t, json=search))
    assert [x["id"] for x in rest_page["nodes"]] == [ids[1]]
    assert rest_page == await rpc.call("query_nodes", {"tenant_id": t, **search})

    walk = {"start_node_id": ids[0], "max_depth": 2, "relationship_types": ["next"]}
    reached = ok(await call(rest, "POST", T + "/traverse", tenant_id=t, json=walk))
    assert reached == await rpc.call("traverse", {"tenant_id": t, **walk})
    assert [(x["node"]["id"], x["depth"]) for x in reached["nodes"]] == [(ids[1], 1),
                                                                         (ids[2], 2)]

    ends = {"source_node_id": ids[0], "target_node_id": ids[3]}
    path = ok(await call(rest, "POST", T + "/shortest-path", tenant_id=t, json=ends))
    assert path == await rpc.call("shortest_path", {"tenant_id": t, **ends})
    assert path["path"]["length"] == 3
    backwards = {"source_node_id": ids[3], "target_node_id": ids[0], "direction": "out"}
    assert ok(await call(rest, "POST", T + "/shortest-path", tenant_id=t,
                         json=backwards)) == {"path": None}


async def test_a_refused_query_is_400(rest, rpc):
    t = await make_tenant(rpc)
    refused = {"sql": "DELETE FROM nodes"}
    direct = await rpc_error(rpc, "execute_query", {"tenant_id": t, **refused})
    assert direct.code == -32006
    err = error(await call(rest, "POST", T + "/query", tenant_id=t, json=refused), 400, -32006)
    assert err["details"]["layer"] == direct.data["layer"]
    same_error(err, direct)


# ---------------------------------------------------------------- pipelines and runs

async def test_pipelines_and_runs(rest, rpc):
    t = await make_tenant(rpc)
    resp = await call(rest, "POST", P, tenant_id=t,
                      json={"name": "echo", "code": ECHO, "description": "returns its input"})
    location = f"/tenants/{t}/pipelines/{resp.json()['pipeline']['id']}"
    pipeline = (await created(rest, resp, location))["pipeline"]
    p = pipeline["id"]
    assert (pipeline["name"], pipeline["code"]) == ("echo", ECHO)
    route = P + "/{pipeline_id}"
    assert ok(await call(rest, "GET", route, tenant_id=t, pipeline_id=p)) == \
        await rpc.call("get_pipeline", {"tenant_id": t, "id": p})
    fails = (await rpc.call("create_pipeline", {"tenant_id": t, "name": "fails",
                                                "code": FAIL}))["pipeline"]["id"]
    await rpc.call("create_pipeline", {"tenant_id": t, "name": "spin", "code": SPIN})
    await same_page(rest, rpc, P, "list_pipelines", {}, "pipelines", tenant_id=t)

    put = ok(await call(rest, "PUT", route, tenant_id=t, pipeline_id=p,
                        json={"description": "echo"}))
    assert put["pipeline"]["description"] == "echo" and put["pipeline"]["code"] == ECHO
    patched = ok(await call(rest, "PATCH", route, tenant_id=t, pipeline_id=p,
                            json={"timeout_ms": 5000, "expected_version": 2}))
    assert patched == await rpc.call("get_pipeline", {"tenant_id": t, "id": p})
    assert patched["pipeline"]["timeout_ms"] == 5000

    runs = P + "/{pipeline_id}/runs"
    resp = await call(rest, "POST", runs, tenant_id=t, pipeline_id=p, json={"input": {"a": 1}})
    run = (await created(rest, resp, f"/tenants/{t}/runs/{resp.json()['run']['id']}"))["run"]
    assert (run["status"], run["result"], run["pipeline_id"]) == ("succeeded", {"a": 1}, p)
    assert ok(await call(rest, "GET", T + "/runs/{run_id}", tenant_id=t, run_id=run["id"])) \
        == await rpc.call("get_pipeline_run", {"tenant_id": t, "id": run["id"]})
    ok(await call(rest, "POST", runs, tenant_id=t, pipeline_id=p, json={"input": 2}), 201)

    failed = error(await call(rest, "POST", runs, tenant_id=t, pipeline_id=fails, json={}),
                   422, -32007, "pipeline_failed")
    assert failed["details"]["run"]["status"] == "failed"
    assert failed["details"]["run"]["pipeline_id"] == fails

    for filters, count in [({}, 3), ({"pipeline_id": p}, 2), ({"status": "failed"}, 1),
                           ({"status": "succeeded", "pipeline_id": fails}, 0)]:
        page = await same_page(rest, rpc, T + "/runs", "list_pipeline_runs", filters, "runs",
                               tenant_id=t)
        assert page["pagination"]["total_count"] == count, filters

    no_content(await call(rest, "DELETE", route, tenant_id=t, pipeline_id=p))
    error(await call(rest, "GET", route, tenant_id=t, pipeline_id=p), 404, -32001,
          "not_found")


async def test_cancel_a_run(rest, rpc):
    t = await make_tenant(rpc)
    spin = (await rpc.call("create_pipeline", {"tenant_id": t, "name": "spin", "code": SPIN,
                                               "timeout_ms": 10_000}))["pipeline"]["id"]
    resp = await call(rest, "POST", P + "/{pipeline_id}/runs", tenant_id=t, pipeline_id=spin,
                      json={"wait": False})
    queued = ok(resp, 202)["run"]  # accepted, not finished
    assert queued["status"] in ("queued", "running")
    assert resp.headers["location"] == f"/tenants/{t}/runs/{queued['id']}"
    cancel = T + "/runs/{run_id}/cancel"
    cancelled = ok(await call(rest, "POST", cancel, tenant_id=t, run_id=queued["id"]))["run"]
    assert (cancelled["id"], cancelled["status"]) == (queued["id"], "cancelled")
    assert (await rpc.call("get_pipeline_run", {"tenant_id": t, "id": queued["id"]}))[
        "run"]["status"] == "cancelled"
    again = await rpc_error(rpc, "cancel_pipeline_run", {"tenant_id": t, "id": queued["id"]})
    same_error(error(await call(rest, "POST", cancel, tenant_id=t, run_id=queued["id"]),
                     409, -32004), again)


# ---------------------------------------------------------------- API keys, revocation

async def test_api_keys_and_a_revoked_key_gets_401(rest, rpc, facade):
    t = await make_tenant(rpc)
    user, _ = await member_key(rpc, t, "viewer")
    resp = await call(rest, "POST", "/api-keys", json={"name": "rest", "user_id": user["id"]})
    made = ok(resp, 201)
    key_id, secret = made["api_key"]["id"], made["secret"]
    assert resp.headers["location"] == f"/api-keys/{key_id}"
    assert secret.startswith("fdb_") and made["api_key"]["user_id"] == user["id"]
    # No GET serves a single key: the Location names it for DELETE.
    assert (await rest.get(resp.headers["location"])).status_code == 405

    listed = await same_page(rest, rpc, "/api-keys", "list_api_keys", {"user_id": user["id"]},
                             "api_keys")
    assert key_id in {k["id"] for k in listed["api_keys"]}
    assert listed["pagination"]["total_count"] == 2
    assert all("secret" not in k for k in listed["api_keys"])

    async with as_caller(facade, secret) as own:
        assert ok(await call(own, "GET", T, tenant_id=t))["tenant"]["id"] == t
        own_keys = ok(await call(own, "GET", "/api-keys"))
        assert {k["id"] for k in own_keys["api_keys"]} == {k["id"] for k in listed["api_keys"]}
        no_content(await call(rest, "DELETE", "/api-keys/{key_id}", key_id=key_id))
        revoked = await own.get(f"/tenants/{t}")
        error(revoked, 401, -32002, "unauthenticated")
        assert revoked.headers["www-authenticate"].startswith("Bearer")
    async with FlexDBClient(rpc.url, api_key=secret) as direct:
        same_error(revoked.json()["error"], await rpc_error(direct, "get_tenant", {"id": t}))


# ---------------------------------------------------------------- audit events, request ids

async def test_audit_events_and_verify(rest, rpc):
    t = await make_tenant(rpc)
    nt = await make_node_type(rpc, t)
    nodes = [ok(await call(rest, "POST", N, tenant_id=t, json={"node_type_id": nt}), 201)[
        "node"]["id"] for _ in range(3)]
    actor = await own_user_id(rpc)
    route = T + "/audit-events"
    page = await same_page(rest, rpc, route, "list_audit_events", {"method": "create_node"},
                           "audit_events", tenant_id=t)
    assert page["pagination"]["total_count"] == 3
    events = (await rpc.call("list_audit_events", {"tenant_id": t, "method": "create_node"}))[
        "audit_events"]
    assert [e["target_id"] for e in events] == nodes
    moment = datetime.fromisoformat(events[1]["created_at"])
    for filters, count in [
            ({"target_id": nodes[1]}, 1), ({"actor": actor, "method": "create_node"}, 3),
            ({"method": "create_node", "since": events[1]["created_at"]}, 2),
            ({"method": "create_node", "until": events[1]["created_at"]}, 1),  # exclusive
            ({"method": "create_node",
              "since": events[1]["created_at"].replace("+00:00", "Z")}, 2),
            ({"method": "create_node", "since": (moment - timedelta(hours=1)).isoformat(),
              "until": (moment + timedelta(hours=1)).isoformat()}, 3)]:
        page = await same_page(rest, rpc, route, "list_audit_events", filters, "audit_events",
                               tenant_id=t)
        assert page["pagination"]["total_count"] == count, filters
    error(await call(rest, "GET", route, tenant_id=t, params={"since": "yesterday"}),
          422, -32602, "invalid_params")

    verified = ok(await call(rest, "GET", route + "/verify", tenant_id=t))
    assert verified["ok"] is True and verified["events_checked"] >= 5
    assert verified == await rpc.call("verify_audit_chain", {"tenant_id": t})


async def audit_request_id(rpc, tenant_id: str, node_id: str) -> str:
    events = (await rpc.call("list_audit_events", {"tenant_id": tenant_id,
                                                   "method": "create_node",
                                                   "target_id": node_id}))["audit_events"]
    assert len(events) == 1
    return events[0]["request_id"]


async def test_request_ids_are_echoed_and_forwarded_to_rpc_server(rest, rpc):
    t = await make_tenant(rpc)
    nt = await make_node_type(rpc, t)
    mine = unique("trace.rest:1")
    resp = await call(rest, "POST", N, tenant_id=t, json={"node_type_id": nt},
                      headers={"X-Request-ID": mine})
    assert resp.headers["x-request-id"] == mine
    assert await audit_request_id(rpc, t, ok(resp, 201)["node"]["id"]) == mine

    missing = await call(rest, "GET", N + "/{node_id}", tenant_id=t, node_id=missing_id(),
                         headers={"X-Request-ID": mine})
    assert error(missing, 404, -32001)["request_id"] == mine

    longest = "r" * 128
    resp = await call(rest, "GET", T, tenant_id=t, headers={"X-Request-ID": longest})
    assert resp.headers["x-request-id"] == longest
    for invalid in ("has spaces", "x" * 129, "x" * 300, "semi;colon", "é".encode(), ""):
        resp = await call(rest, "POST", N, tenant_id=t, json={"node_type_id": nt},
                          headers={"X-Request-ID": invalid})
        generated = resp.headers["x-request-id"]
        assert GENERATED_ID.match(generated) and generated != invalid
        assert await audit_request_id(rpc, t, ok(resp, 201)["node"]["id"]) == generated
    resp = await call(rest, "POST", N, tenant_id=t, json={"node_type_id": nt})
    assert GENERATED_ID.match(resp.headers["x-request-id"])
    first, second = await rest.get("/tenants/nope"), await rest.get("/tenants/nope")
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


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


# ---------------------------------------------------------------- headers and CORS

async def test_security_headers_on_every_json_answer(rest, rpc):
    t = await make_tenant(rpc)
    answers = [await call(rest, "GET", T, tenant_id=t), await rest.get("/no/route"),
               await call(rest, "GET", N + "/{node_id}", tenant_id=t, node_id=missing_id()),
               await rest.get("/openapi.json")]
    for resp in answers:
        assert resp.headers["content-type"] == "application/json"
        assert_api_headers(resp)
        assert resp.headers["referrer-policy"] == "no-referrer"



async def test_paths_that_merely_start_like_the_docs_get_the_api_headers(rest):
    for path in ("/docsx", "/redoc-old"):
        error(await rest.get(path), 404, -32601, "route_not_found")


async def test_cors_allows_the_configured_origin_only(edge_facade, facade, server):
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type,x-request-id"}
    async with as_caller(edge_facade, server.admin_key) as client:
        allowed = await client.options("/tenants", headers={"Origin": ALLOWED_ORIGIN,
                                                            **preflight})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
        assert "POST" in allowed.headers["access-control-allow-methods"]
        assert "Authorization" in allowed.headers["access-control-allow-headers"]
        simple = await call(client, "GET", "/tenants", headers={"Origin": ALLOWED_ORIGIN})
        assert simple.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
        assert "X-Request-ID" in simple.headers["access-control-expose-headers"]

        evil = await client.options("/tenants", headers={"Origin": EVIL_ORIGIN, **preflight})
        assert evil.status_code >= 400
        assert "access-control-allow-origin" not in evil.headers
        simple = await call(client, "GET", "/tenants", headers={"Origin": EVIL_ORIGIN})
        assert "access-control-allow-origin" not in simple.headers
    async with as_caller(facade, server.admin_key) as client:  # no origins configured
        closed = await client.options("/tenants", headers={"Origin": ALLOWED_ORIGIN,
                                                           **preflight})
        assert "access-control-allow-origin" not in closed.headers


# ---------------------------------------------------------------- rpc_server down, slow, busy

async def test_an_unreachable_rpc_server_is_502(server):
    with running_facade(f"http://127.0.0.1:{free_port()}/jsonrpc") as orphan:
        async with as_caller(orphan, server.admin_key) as client:
            err = error(await call(client, "GET", "/tenants"), 502, -32603,
                        "upstream_unavailable")
            assert "127.0.0.1" not in err["message"]


class StubRpc:
    """A stand-in for rpc_server, in a thread with its own event loop: get_tenant answers
    only after 5 s, list_tenants and list_users are busy, get_user answers an HTML error
    page; every other call gets an empty result. It records the headers of each call."""
    BUSY_FOR = {"list_tenants": 2.3, "list_users": 2.001}

    SLOW_S = 5.0

    def __init__(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/jsonrpc"
        self.calls: list[tuple[str, dict]] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> "StubRpc":
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def _start(self) -> None:
        self.release = asyncio.Event()
        app = web.Application()
        app.router.add_post("/jsonrpc", self._handle)
        self.runner = web.AppRunner(app, shutdown_timeout=1)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        self.release.set()  # a slow answer still pending ends now
        await self.runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        response = await self._answer(request)
        # Like a sticky-session proxy would: the facade must never send it back.
        response.set_cookie("sticky", request.headers.get("Authorization", "none")[-12:])
        return response

    async def _answer(self, request: web.Request) -> web.Response:
        payload = await request.json()
        method = payload["method"]
        self.calls.append((method, dict(request.headers)))
        if method == "get_node_type":  # an HTTP error status carrying a JSON-RPC error
            return web.json_response({"jsonrpc": "2.0", "id": payload["id"], "error": {
                "code": -32005, "message": "busy", "data": {"type": "busy",
                                                            "retry_after": 1}}}, status=503)
        if method == "list_node_types":
            return web.Response(status=500, text="Internal Server Error")
        if method == "get_pipeline":  # 200, but not a JSON-RPC answer
            return web.json_response({"jsonrpc": "2.0", "id": payload["id"]})
        if method == "get_relationship":  # an error object without the required fields
            return web.json_response({"jsonrpc": "2.0", "id": payload["id"],
                                      "error": {"code": "abc"}})
        if method == "list_pipelines":  # slow, for the in-flight cap
            await asyncio.sleep(1.5)
        if method == "get_tenant":
            try:
                await asyncio.wait_for(self.release.wait(), self.SLOW_S)
            except asyncio.TimeoutError:
                pass
        if method in self.BUSY_FOR:
            return web.json_response({"jsonrpc": "2.0", "id": payload["id"], "error": {
                "code": -32005, "message": "Too many queries are running; retry shortly",
                "data": {"type": "busy", "retry_after": self.BUSY_FOR[method]}}})
        if method == "get_user":
            return web.Response(status=502, text="<html>bad gateway</html>",
                                content_type="text/html")
        return web.json_response({"jsonrpc": "2.0", "id": payload["id"], "result": {}})


@pytest.fixture(scope="module")
def stub_facade():
    """A facade with a 0.5 s RPC timeout in front of StubRpc."""
    with StubRpc() as stub, running_facade(stub.url, FLEXDB_FACADE_RPC_TIMEOUT_S="0.5") as proc:
        proc.stub = stub
        yield proc


async def test_a_slow_rpc_server_is_504(stub_facade):
    async with as_caller(stub_facade, "fdb_caller") as client:
        started = time.monotonic()
        resp = await call(client, "GET", T, tenant_id=missing_id(),
                          headers={"X-Request-ID": "slow-1"})
        elapsed = time.monotonic() - started
    err = error(resp, 504, -32603, "upstream_timeout")
    assert err["request_id"] == "slow-1"
    assert elapsed < StubRpc.SLOW_S - 1, f"the facade waited {elapsed:.1f} s"
    method, headers = stub_facade.stub.calls[-1]
    assert method == "get_tenant"
    assert headers["Authorization"] == "Bearer fdb_caller"
    assert headers["X-Request-ID"] == "slow-1"


async def test_a_busy_rpc_server_is_429_with_retry_after(stub_facade):
    async with as_caller(stub_facade, "fdb_caller") as client:
        resp = await call(client, "GET", "/tenants")
    err = error(resp, 429, -32005, "busy")
    assert resp.headers["retry-after"] == "3"  # 2.3 s, rounded up to whole seconds
    assert err["details"]["retry_after"] == 2.3


async def test_retry_after_never_undercuts_the_servers_retry_after(stub_facade):
    async with as_caller(stub_facade, "fdb_caller") as client:
        resp = await call(client, "GET", "/users")
    error(resp, 429, -32005, "busy")
    assert int(resp.headers["retry-after"]) >= 2.001


async def test_an_unexpected_error_is_500_in_the_error_shape(stub_facade):
    """The stub answers create_tenant with {}: the route cannot build its answer."""
    async with as_caller(stub_facade, "fdb_caller") as client:
        resp = await call(client, "POST", "/tenants", json={"slug": "s", "name": "S"},
                          headers={"X-Request-ID": "boom-1"})
    assert resp.status_code == 500
    body = resp.json()
    assert body == {"error": {"code": -32603, "message": "Internal error",
                              "details": {"type": "internal"}, "request_id": "boom-1"}}


async def test_a_500_carries_the_request_id_and_security_headers(stub_facade):
    async with as_caller(stub_facade, "fdb_caller") as client:
        resp = await call(client, "POST", "/tenants", json={"slug": "s", "name": "S"},
                          headers={"X-Request-ID": "boom-2"})
    err = error(resp, 500, -32603, "internal")
    assert err["request_id"] == "boom-2"


async def test_a_garbled_rpc_answer_is_502(stub_facade):
    async with as_caller(stub_facade, "fdb_caller") as client:
        resp = await call(client, "GET", U, user_id=missing_id())
        err = error(resp, 502, -32603, "upstream_bad_answer")
        assert err["details"]["status"] == 502
        err = error(await call(client, "GET", "/tenants/{tenant_id}/node-types",
                               tenant_id=missing_id()), 502, -32603, "upstream_bad_answer")
        assert err["details"]["status"] == 500
        for path, ids in (("/tenants/{tenant_id}/pipelines/{pipeline_id}", "pipeline_id"),
                          ("/tenants/{tenant_id}/relationships/{relationship_id}",
                           "relationship_id")):
            error(await call(client, "GET", path, tenant_id=missing_id(),
                             **{ids: missing_id()}), 502, -32603, "upstream_bad_answer")


async def test_a_json_rpc_error_under_an_http_error_status_is_still_mapped(stub_facade):
    async with as_caller(stub_facade, "fdb_caller") as client:
        resp = await call(client, "GET", "/tenants/{tenant_id}/node-types/{node_type_id}",
                          tenant_id=missing_id(), node_type_id=missing_id())
    error(resp, 429, -32005, "busy")


async def test_cookies_set_upstream_never_travel_with_a_request(stub_facade):
    for key in ("fdb_alice", "fdb_bob", "fdb_alice"):
        async with as_caller(stub_facade, key) as client:
            await call(client, "GET", U, user_id=missing_id())
    assert stub_facade.stub.calls
    assert all("Cookie" not in headers for _, headers in stub_facade.stub.calls)


@pytest.mark.parametrize("authorization", ["", "Bearer fdb_" + "a" * 9000])
async def test_blank_or_oversized_credentials_are_401_at_the_facade(stub_facade, authorization):
    # A blank header must not reach rpc_server, which would read it as "no credentials"
    # (anonymous, on a server that allows that).
    before = len(stub_facade.stub.calls)
    async with httpx.AsyncClient(base_url=stub_facade.base, timeout=30) as client:
        resp = await client.get("/tenants", headers={"Authorization": authorization})
    error(resp, 401, -32002, "unauthenticated")
    assert len(stub_facade.stub.calls) == before


async def test_without_credentials_it_is_401_before_the_body_is_read(facade):
    async with httpx.AsyncClient(base_url=facade.base, timeout=30) as client:
        resp = await client.post("/tenants", content=b"{bad",
                                 headers={"Content-Type": "application/json"})
    error(resp, 401, -32002, "unauthenticated")


async def test_one_caller_cannot_take_every_connection():
    with StubRpc() as stub, running_facade(stub.url, FLEXDB_FACADE_MAX_IN_FLIGHT_PER_CALLER="2",
                                           FLEXDB_FACADE_RPC_TIMEOUT_S="10") as capped:
        async with as_caller(capped, "fdb_greedy") as greedy, \
                as_caller(capped, "fdb_other") as other:
            path = "/tenants/{tenant_id}/pipelines"
            t = missing_id()
            answers = await asyncio.gather(
                *(call(greedy, "GET", path, tenant_id=t) for _ in range(4)),
                call(other, "GET", path, tenant_id=t))
    statuses = sorted(r.status_code for r in answers[:4])
    assert statuses == [200, 200, 429, 429], statuses
    refused = next(r for r in answers[:4] if r.status_code == 429)
    error(refused, 429, -32005, "too_many_in_flight")
    assert refused.headers["retry-after"] == "1"
    assert answers[4].status_code == 200  # other credentials are not held up


SPELLINGS = ("bearer", "BEARER", "BeArEr", "Bearer ")  # (the last: two spaces before the key)


async def test_the_in_flight_cap_counts_one_key_whatever_the_scheme_spelling():
    """The scheme is case-insensitive (RFC 7235): respelling it does not make a new caller."""
    with StubRpc() as stub, running_facade(stub.url, FLEXDB_FACADE_MAX_IN_FLIGHT_PER_CALLER="2",
                                           FLEXDB_FACADE_RPC_TIMEOUT_S="10") as capped:
        async with httpx.AsyncClient(base_url=capped.base, timeout=30) as client:
            path = "/tenants/{tenant_id}/pipelines"
            t = missing_id()
            answers = await asyncio.gather(*(
                call(client, "GET", path, tenant_id=t,
                     headers={"Authorization": f"{scheme} fdb_greedy"})
                for scheme in SPELLINGS))
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200, 200, 429, 429], statuses
    for refused in (r for r in answers if r.status_code == 429):
        error(refused, 429, -32005, "too_many_in_flight")


async def test_every_scheme_spelling_authenticates_and_shares_the_key_rate_limit(
        database_url):
    env = {"FLEXDB_DATABASE_URL": database_url, "FLEXDB_RATE_LIMIT_KEY_PER_S": "0.01",
           "FLEXDB_RATE_LIMIT_KEY_BURST": "3"}
    with running_server(env) as srv, running_facade(srv.url) as limited:
        async with FlexDBClient(srv.url, api_key=srv.admin_key) as admin:
            _, key = await new_user(admin)
        async with httpx.AsyncClient(base_url=limited.base, timeout=30) as client:
            answers = [await call(client, "GET", "/tenants",
                                  headers={"Authorization": f"{scheme} {key}"})
                       for scheme in SPELLINGS + SPELLINGS[:2]]
            wrong_scheme = await call(client, "GET", "/tenants",
                                      headers={"Authorization": f"Basic {key}"})
    assert [r.status_code for r in answers] == [200, 200, 200, 429, 429, 429], \
        [r.text for r in answers]
    for refused in answers[3:]:
        assert error(refused, 429, -32005, "rate_limited")["details"]["scope"] == "key"
    error(wrong_scheme, 401, -32002, "unauthenticated")


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


async def test_a_non_ascii_authorization_header_is_401_not_500(facade):
    # Headers are bytes; a key with non-ASCII bytes is just a wrong key.
    async with httpx.AsyncClient(base_url=facade.base, timeout=30) as client:
        resp = await client.get("/tenants", headers=[(b"Authorization", b"Bearer \xc3\xa9t\xe9")])
    err = error(resp, 401, -32002, "unauthenticated")
    assert resp.headers["www-authenticate"].startswith("Bearer")
    assert err["request_id"] == resp.headers["x-request-id"]


async def test_an_oversized_request_head_is_refused(facade):
    # h11 bounds the request head: the facade closes the connection without an answer and
    # buffers nothing. (Not any transport error: one that never connected proves nothing.)
    closed_by_the_server = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)
    async with httpx.AsyncClient(base_url=facade.base, timeout=30) as client:
        with pytest.raises(closed_by_the_server):
            await client.get("/tenants", headers={"X-Big": "a" * 200_000})
        # A head within the bound is still answered (401: no key).
        resp = await client.get("/tenants", headers={"X-Big": "a" * 1_000})
        assert resp.status_code == 401


# ---------------------------------------------------------------- last: coverage

def test_every_route_is_exercised(request):
    module_tests = {item.originalname for item in request.session.items
                    if item.module is request.module}
    everything_ran = module_tests == {name for name in globals() if name.startswith("test_")}
    if not everything_ran:
        pytest.skip("only part of this module was selected")
    assert ROUTES - EXERCISED == set(), "routes without a test"
