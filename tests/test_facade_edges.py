"""The REST facade at its edges: security headers, CORS, what happens when rpc_server is
unreachable, slow, busy or garbled, credentials checked at the facade, connection caps and
oversized requests."""
from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest
from aiohttp import web

from rpc_server.client import FlexDBClient

from .auth_helpers import new_user
from .conftest import free_port, missing_id, running_facade, running_server
from .facade_helpers import (
    ALLOWED_ORIGIN,
    EVIL_ORIGIN,
    N,
    T,
    U,
    as_caller,
    assert_api_headers,
    call,
    error,
    make_tenant,
)

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
