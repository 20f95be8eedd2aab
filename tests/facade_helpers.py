"""Helpers shared by the REST facade tests (test_facade_routes.py, test_facade_errors.py,
test_facade_edges.py): the route list, requests that count a route as exercised, the
error shape, comparisons with the direct JSON-RPC answer."""
from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from rpc_server.client import FlexDBClient, RpcError

from .auth_helpers import new_user
from .conftest import unique

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
    ("GET", NT + "/{node_type_id}/versions"), ("POST", NT + "/{node_type_id}/schema-check"),
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
    ("GET", T + "/changes"), ("GET", T + "/events"),
    ("POST", NT + "/{node_type_id}/migrations"), ("GET", T + "/jobs"),
    ("GET", T + "/jobs/{job_id}"), ("POST", T + "/jobs/{job_id}/cancel"),
}
NOT_API = {"/", "/docs", "/docs/assets/{name}", "/redoc", "/openapi.json", "/health"}
EXERCISED: set[tuple[str, str]] = set()


def as_caller(facade, key: str | None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(base_url=facade.base, headers=headers, timeout=30)



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
