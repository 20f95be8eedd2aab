"""Webhooks through the public API and a real receiver: events arrive in position order,
signed as Standard Webhooks has it (checked here with our own few lines, the README's); a
failing receiver gets retries without the order breaking, then the webhook pauses and can be
resumed; redirects are not followed; private and loopback destinations are refused; the
secret is shown once; only tenant admins manage webhooks; two servers deliver each event
once."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from rpc_server.client import FlexDBClient, Forbidden, InvalidParams, NotFound

from .auth_helpers import new_user
from .conftest import (
    free_port,
    make_node,
    make_node_type,
    make_tenant,
    migrated_database,
    running_server,
)

FAST_RETRIES = {"FLEXDB_WEBHOOK_ALLOW_PRIVATE": "true", "FLEXDB_WEBHOOK_RETRY_BASE_S": "0.05",
                "FLEXDB_WEBHOOK_RETRY_MAX_S": "0.2", "FLEXDB_WEBHOOK_PAUSE_AFTER_FAILURES": "4",
                "FLEXDB_WEBHOOK_CONNECT_TIMEOUT_S": "1", "FLEXDB_WEBHOOK_TIMEOUT_S": "2",
                "FLEXDB_WEBHOOK_LEASE_S": "5"}
NOWHERE = "https://webhook.invalid/hook"  # never resolves (RFC 2606): nothing is sent


def verify(secret: str, headers, body: bytes) -> bool:
    """The receiver's check, written from the Standard Webhooks spec (the README's recipe)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    fresh = abs(time.time() - int(headers["webhook-timestamp"])) < 300
    return fresh and any(hmac.compare_digest(expected, s.partition(",")[2])
                         for s in headers["webhook-signature"].split())


class Receiver:
    """A local HTTP server recording what each path gets; `answers[path]` lists the statuses
    to give first (then 200)."""

    def __init__(self):
        self.got: dict[str, list[tuple[dict, bytes]]] = {}
        self.answers: dict[str, list[int]] = {}
        self.always: dict[str, int] = {}
        self.delay: dict[str, float] = {}  # seconds to wait before answering
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.got.setdefault(request.path, []).append(
            ({k.lower(): v for k, v in request.headers.items()}, body))
        if request.path == "/redirect":
            raise web.HTTPFound(self.base + "/target")
        await asyncio.sleep(self.delay.get(request.path, 0))
        queued = self.answers.get(request.path)
        status = queued.pop(0) if queued else self.always.get(request.path, 200)
        return web.Response(status=status, text="x" * 100_000)  # more than is read

    def events(self, path: str) -> list[dict]:
        return [json.loads(body) for _, body in self.got.get(path, [])]

    async def wait_for(self, path: str, count: int, timeout: float = 15) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.got.get(path, [])) < count:
            assert time.monotonic() < deadline, (path, len(self.got.get(path, [])), count)
            await asyncio.sleep(0.05)
        return self.events(path)


@asynccontextmanager
async def receiving():
    receiver = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", receiver.port).start()
    try:
        yield receiver
    finally:
        await runner.cleanup()


@pytest.fixture(scope="module")
def hooks_server(pg_server_url):
    with migrated_database(pg_server_url) as url, running_server(
            {"FLEXDB_DATABASE_URL": url, **FAST_RETRIES}) as srv:
        yield srv


@pytest.fixture
async def rpc_hooks(hooks_server):
    async with FlexDBClient(hooks_server.url, api_key=hooks_server.admin_key) as client:
        yield client


async def changes_after(rpc, tenant_id, after) -> list[dict]:
    page = await rpc.call("list_changes", {"tenant_id": tenant_id, "after": after,
                                           "limit": 1000})
    return page["changes"]


async def wait_webhook(rpc, t, webhook_id, check, timeout: float = 15) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        hook = (await rpc.call("get_webhook", {"tenant_id": t, "id": webhook_id}))["webhook"]
        if check(hook):
            return hook
        assert time.monotonic() < deadline, hook
        await asyncio.sleep(0.05)


async def test_events_arrive_in_order_signed_and_as_list_changes_has_them(rpc_hooks):
    rpc = rpc_hooks
    secret = "whsec_" + base64.b64encode(bytes(range(32))).decode()
    async with receiving() as receiver:
        t = (await make_tenant(rpc))["id"]
        created = await rpc.call("create_webhook", {"tenant_id": t, "url": receiver.base + "/a",
                                                    "secret": secret, "description": "d"})
        assert created["secret"] == secret
        hook = created["webhook"]
        start = hook["delivered_position"]
        nt = await make_node_type(rpc, t)
        nodes = [await make_node(rpc, t, nt["id"], {"n": i}) for i in range(3)]
        await rpc.call("update_node", {"tenant_id": t, "id": nodes[0]["id"], "data": {"n": 9}})
        await rpc.call("delete_node", {"tenant_id": t, "id": nodes[1]["id"]})
        expected = await changes_after(rpc, t, start)
        assert len(expected) == 6
        got = await receiver.wait_for("/a", 6)
        assert got == expected  # the same JSON as list_changes, in position order
        for headers, body in receiver.got["/a"]:
            assert verify(secret, headers, body)
            assert not verify("whsec_" + base64.b64encode(bytes(32)).decode(), headers, body)
            assert headers["content-type"] == "application/json"
        ids = [h["webhook-id"] for h, _ in receiver.got["/a"]]
        assert ids == [f"{hook['id']}:{e['position']}" for e in expected]
        # the webhook's progress, and one delivery record per event
        done = await wait_webhook(rpc, t, hook["id"], lambda h: h["delivered_position"]
                                  == expected[-1]["position"])
        assert done["status"] == "active" and done["last_http_status"] == 200
        deliveries = (await rpc.call("list_webhook_deliveries", {
            "tenant_id": t, "webhook_id": hook["id"],
            "pagination": {"page_size": 100}}))["deliveries"]
        assert [(d["position"], d["status"], d["attempts"]) for d in deliveries] == [
            (e["position"], "delivered", 1) for e in expected]

        # redeliver one event: the same webhook-id and body, once more
        again = expected[2]["position"]
        queued = await rpc.call("redeliver", {"tenant_id": t, "webhook_id": hook["id"],
                                              "position": again})
        assert queued["delivery"]["status"] == "pending" and queued["delivery"]["redelivery"]
        await receiver.wait_for("/a", 7)
        headers, body = receiver.got["/a"][-1]
        assert headers["webhook-id"] == ids[2] and json.loads(body) == expected[2]
        with pytest.raises(InvalidParams) as err:  # not delivered yet: it comes in its turn
            await rpc.call("redeliver", {"tenant_id": t, "webhook_id": hook["id"],
                                         "position": expected[-1]["position"] + 100})
        assert "position" in str(err.value.data)


async def test_filters_apply_and_skipped_events_advance_the_position(rpc_hooks):
    rpc = rpc_hooks
    async with receiving() as receiver:
        t = (await make_tenant(rpc))["id"]
        hook = (await rpc.call("create_webhook", {
            "tenant_id": t, "url": receiver.base + "/f",
            "filter": {"kinds": ["node"], "operations": ["update"]}}))["webhook"]
        assert hook["filter"] == {"kinds": ["node"], "operations": ["update"]}
        nt = await make_node_type(rpc, t)
        node = await make_node(rpc, t, nt["id"], {"n": 1})
        await rpc.call("update_node", {"tenant_id": t, "id": node["id"], "data": {"n": 2}})
        await make_node(rpc, t, nt["id"])
        got = await receiver.wait_for("/f", 1)
        head = (await rpc.call("list_changes", {"tenant_id": t, "limit": 1}))["head"]
        await wait_webhook(rpc, t, hook["id"], lambda h: h["delivered_position"] == head)
        assert [(e["operation"], e["kind"]) for e in receiver.events("/f")] == [
            ("update", "node")] and got[0]["object"]["data"] == {"n": 2}


async def test_a_failing_receiver_gets_retries_and_the_order_holds(rpc_hooks):
    rpc = rpc_hooks
    async with receiving() as receiver:
        receiver.answers["/b"] = [500, 503]
        t = (await make_tenant(rpc))["id"]
        hook = (await rpc.call("create_webhook", {"tenant_id": t,
                                                  "url": receiver.base + "/b"}))["webhook"]
        nt = await make_node_type(rpc, t)
        await make_node(rpc, t, nt["id"])
        got = await receiver.wait_for("/b", 4)
        positions = [e["position"] for e in got]
        # the first event three times (two failures, then delivered), only then the next
        assert positions[:3] == [positions[0]] * 3 and positions[3] == positions[0] + 1
        ids = [h["webhook-id"] for h, _ in receiver.got["/b"][:3]]
        assert len(set(ids)) == 1  # stable across retries
        await wait_webhook(rpc, t, hook["id"],
                           lambda h: h["delivered_position"] == positions[3])
        deliveries = (await rpc.call("list_webhook_deliveries", {
            "tenant_id": t, "webhook_id": hook["id"]}))["deliveries"]
        first = deliveries[0]
        assert (first["position"], first["status"], first["attempts"]) == (
            positions[0], "delivered", 3)


async def test_a_receiver_that_keeps_failing_pauses_the_webhook_until_resumed(rpc_hooks):
    rpc = rpc_hooks
    async with receiving() as receiver:
        receiver.always["/c"] = 503
        t = (await make_tenant(rpc))["id"]
        hook = (await rpc.call("create_webhook", {"tenant_id": t,
                                                  "url": receiver.base + "/c"}))["webhook"]
        nt = await make_node_type(rpc, t)
        paused = await wait_webhook(rpc, t, hook["id"], lambda h: h["status"] == "paused")
        assert paused["paused_reason"] == "failing" and paused["failures"] == 4
        assert paused["last_http_status"] == 503 and paused["last_error"] == "HTTP 503"
        assert paused["delivered_position"] == hook["delivered_position"]
        attempts = len(receiver.got["/c"])
        assert attempts == 4
        await make_node(rpc, t, nt["id"])
        await asyncio.sleep(0.5)
        assert len(receiver.got["/c"]) == attempts  # paused: nothing is sent
        deliveries = (await rpc.call("list_webhook_deliveries", {
            "tenant_id": t, "webhook_id": hook["id"]}))["deliveries"]
        assert [(d["status"], d["attempts"], d["last_error"]) for d in deliveries] == [
            ("failed", 4, "HTTP 503")]

        receiver.always["/c"] = 200
        resumed = (await rpc.call("update_webhook", {
            "tenant_id": t, "id": hook["id"], "status": "active",
            "expected_version": paused["version"]}))["webhook"]
        assert resumed["status"] == "active" and resumed["paused_reason"] is None
        got = await receiver.wait_for("/c", attempts + 2)
        assert [e["kind"] for e in got[attempts:]] == ["node_type", "node"]
        await wait_webhook(rpc, t, hook["id"], lambda h: h["failures"] == 0
                           and h["delivered_position"] == got[-1]["position"])

        # paused by its admin: nothing is sent until resumed
        await rpc.call("update_webhook", {"tenant_id": t, "id": hook["id"],
                                          "status": "paused"})
        await make_node(rpc, t, nt["id"])
        await asyncio.sleep(0.5)
        assert len(receiver.got["/c"]) == attempts + 2
        hook = (await rpc.call("get_webhook", {"tenant_id": t, "id": hook["id"]}))["webhook"]
        assert hook["status"] == "paused" and hook["paused_reason"] == "paused"


async def test_redirects_are_not_followed(rpc_hooks):
    rpc = rpc_hooks
    async with receiving() as receiver:
        t = (await make_tenant(rpc))["id"]
        hook = (await rpc.call("create_webhook", {
            "tenant_id": t, "url": receiver.base + "/redirect"}))["webhook"]
        await make_node_type(rpc, t)
        failing = await wait_webhook(rpc, t, hook["id"], lambda h: h["failures"] >= 1)
        assert failing["last_http_status"] == 302
        assert "redirects are not followed" in failing["last_error"]
        assert failing["delivered_position"] == hook["delivered_position"]
        assert "/target" not in receiver.got


REFUSED = {
    "http://127.0.0.1:8080/hook": "a loopback address (127.0.0.1)",
    "http://localhost:8080/hook": "resolves to a loopback address",
    "http://[::1]/hook": "a loopback address (::1)",
    "http://10.1.2.3/hook": "a private address (10.1.2.3)",
    "https://192.168.0.10/hook": "a private address (192.168.0.10)",
    "http://169.254.169.254/latest/meta-data/": "cloud metadata",
    "http://[fd00:ec2::254]/": "cloud metadata",
    "http://[fe80::1]/": "a link-local address",
    "http://100.64.0.1/": "shared (carrier-grade NAT)",
    "http://0.0.0.0/": "an unspecified address",
    "http://[::ffff:10.0.0.1]/": "a private address (inside the IPv6 address)",
    "http://[64:ff9b::a9fe:a9fe]/": "cloud metadata",
    "http://224.0.0.1/": "a multicast address",
    "ftp://example.com/hook": "http:// or https://",
    "http://user:pw@example.com/": "credentials",
}


def test_a_tenants_slow_receivers_hold_at_most_its_share_of_the_delivery_slots(
        pg_server_url):
    """Two delivery slots, one per tenant at most: tenant A's three webhooks to a receiver
    that takes 4 s to answer (each answered: never paused) hold one of them, and tenant
    B's events still arrive at once through the other."""
    async def scenario(srv) -> None:
        async with receiving() as receiver, FlexDBClient(
                srv.url, api_key=srv.admin_key) as rpc:
            receiver.delay["/slow"] = 4.0
            a = (await make_tenant(rpc))["id"]
            for _ in range(3):
                await rpc.call("create_webhook", {"tenant_id": a,
                                                  "url": receiver.base + "/slow"})
            b = (await make_tenant(rpc))["id"]
            await rpc.call("create_webhook", {"tenant_id": b, "url": receiver.base + "/b"})
            a_type = await make_node_type(rpc, a)
            await make_node(rpc, a, a_type["id"], {"n": 1})
            await asyncio.sleep(0.5)  # A's deliveries have started, and hold their slots
            b_type = await make_node_type(rpc, b)
            started = time.monotonic()
            await make_node(rpc, b, b_type["id"], {"n": 1})
            await receiver.wait_for("/b", 2, timeout=10)  # its node type's and node's
            assert time.monotonic() - started < 2.0, "B waited for A's slow receivers"
            assert len(receiver.got.get("/slow", [])) <= 1  # one slot for A at a time

    with migrated_database(pg_server_url) as url, running_server({
            "FLEXDB_DATABASE_URL": url, **FAST_RETRIES, "FLEXDB_WEBHOOK_TIMEOUT_S": "10",
            "FLEXDB_WEBHOOK_LEASE_S": "30",
            "FLEXDB_WEBHOOK_CONCURRENCY": "2", "FLEXDB_WEBHOOK_TENANT_CONCURRENCY": "1"}) as srv:
        asyncio.run(scenario(srv))


async def test_private_loopback_and_metadata_destinations_are_refused(rpc):
    """With the default settings (the session's server)."""
    t = (await make_tenant(rpc))["id"]
    for url, why in REFUSED.items():
        with pytest.raises(InvalidParams) as err:
            await rpc.call("create_webhook", {"tenant_id": t, "url": url})
        assert err.value.data["errors"][0]["field"] == "url", url
        assert why in err.value.message, (url, err.value.message)
    hook = (await rpc.call("create_webhook", {"tenant_id": t, "url": NOWHERE}))["webhook"]
    with pytest.raises(InvalidParams) as err:
        await rpc.call("update_webhook", {"tenant_id": t, "id": hook["id"],
                                          "url": "http://127.0.0.2/"})
    assert "loopback" in err.value.message
    listed = (await rpc.call("list_webhooks", {"tenant_id": t}))["webhooks"]
    assert [h["url"] for h in listed] == [NOWHERE]


async def test_the_secret_is_shown_once_and_checked_when_given(rpc):
    t = (await make_tenant(rpc))["id"]
    created = await rpc.call("create_webhook", {"tenant_id": t, "url": NOWHERE})
    secret = created["secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) >= 24
    hook = created["webhook"]
    assert hook["secret_hint"] == "whsec_…" + secret[-4:]
    got = (await rpc.call("get_webhook", {"tenant_id": t, "id": hook["id"]}))["webhook"]
    listed = (await rpc.call("list_webhooks", {"tenant_id": t}))["webhooks"]
    for shown in (got, *listed):
        assert "secret" not in shown and secret not in json.dumps(shown)
    for bad in ("s3cret", "whsec_" + base64.b64encode(b"short").decode(), "whsec_!!!!"):
        with pytest.raises(InvalidParams) as err:
            await rpc.call("create_webhook", {"tenant_id": t, "url": NOWHERE, "secret": bad})
        assert err.value.data["errors"][0]["field"] == "secret"
    # and it is not in the audit trail either
    events = (await rpc.call("list_audit_events", {"tenant_id": t}))["audit_events"]
    assert events and secret not in json.dumps(events)


async def test_only_tenant_admins_manage_webhooks_and_other_tenants_see_none(rpc):
    t = (await make_tenant(rpc))["id"]
    hook = (await rpc.call("create_webhook", {"tenant_id": t, "url": NOWHERE}))["webhook"]
    for role in ("viewer", "member"):
        user, key = await new_user(rpc)
        await rpc.call("add_user_to_tenant", {"tenant_id": t, "user_id": user["id"],
                                              "role": role})
        async with FlexDBClient(rpc.url, api_key=key) as caller:
            for method, params in (
                    ("create_webhook", {"tenant_id": t, "url": NOWHERE}),
                    ("list_webhooks", {"tenant_id": t}),
                    ("get_webhook", {"tenant_id": t, "id": hook["id"]}),
                    ("update_webhook", {"tenant_id": t, "id": hook["id"], "status": "paused"}),
                    ("delete_webhook", {"tenant_id": t, "id": hook["id"]}),
                    ("list_webhook_deliveries", {"tenant_id": t, "webhook_id": hook["id"]})):
                with pytest.raises(Forbidden):
                    await caller.call(method, params)
    other = (await make_tenant(rpc))["id"]
    for method, params in (("get_webhook", {"tenant_id": other, "id": hook["id"]}),
                           ("delete_webhook", {"tenant_id": other, "id": hook["id"]}),
                           ("list_webhook_deliveries", {"tenant_id": other,
                                                        "webhook_id": hook["id"]})):
        with pytest.raises(NotFound):
            await rpc.call(method, params)
    assert (await rpc.call("list_webhooks", {"tenant_id": other}))["webhooks"] == []
    await rpc.call("delete_webhook", {"tenant_id": t, "id": hook["id"]})
    with pytest.raises(NotFound):
        await rpc.call("get_webhook", {"tenant_id": t, "id": hook["id"]})


def test_two_servers_deliver_each_event_once_in_order(pg_server_url):
    with migrated_database(pg_server_url) as url, \
            running_server({"FLEXDB_DATABASE_URL": url, **FAST_RETRIES}) as one, \
            running_server({"FLEXDB_DATABASE_URL": url, **FAST_RETRIES}) as two:
        asyncio.run(two_servers(one, two))


async def two_servers(one, two, events: int = 60) -> None:
    async with receiving() as receiver, \
            FlexDBClient(one.url, api_key=one.admin_key) as a, \
            FlexDBClient(two.url, api_key=one.admin_key) as b:
        t = (await make_tenant(a))["id"]
        hooks = [(await a.call("create_webhook", {"tenant_id": t,
                                                  "url": f"{receiver.base}/{n}"}))["webhook"]
                 for n in ("x", "y")]
        nt = await make_node_type(a, t)
        await asyncio.gather(*(make_node(client, t, nt["id"], {"i": i})
                               for i in range(events) for client in [(a, b)[i % 2]]))
        for path in ("/x", "/y"):
            got = await receiver.wait_for(path, events + 1)
            positions = [e["position"] for e in got]
            assert positions == sorted(set(positions)), positions  # once each, in order
            assert positions == list(range(positions[0], positions[0] + events + 1))
        await asyncio.sleep(0.5)  # nothing more comes
        assert [len(receiver.got[p]) for p in ("/x", "/y")] == [events + 1] * 2
        assert len(hooks) == 2
