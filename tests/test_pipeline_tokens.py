"""Execution tokens: what a running run's token may call (exactly the registry's db methods,
in its own tenant, with its role capped at member), and which tokens are refused (another
secret, expired, tampered, a run that is not running)."""
from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from datetime import datetime, timedelta, timezone
from functools import partial

import pytest

import rpc_server.methods  # noqa: F401  (registers every method)
from rpc_server.api.registry import REGISTRY, run_db_methods
from rpc_server.client import FlexDBClient, Forbidden, NotFound, Unauthenticated
from rpc_server.pipelines.runner import PipelineRunner
from rpc_server.security.execution_tokens import (
    ExecutionClaims,
    mint,
    run_token,
    token_role,
    verify,
)

from .auth_helpers import World
from .conftest import TEST_SECRET, missing_id, own_user_id, unique
from .pipeline_helpers import ECHO, audit_events, get_run, make_pipeline, run, sql

# ---------------------------------------------------------------- execution tokens

def _claims(tenant_id, run_id, user_id=None, role="member", expires_in=60.0, key_id=None):
    return ExecutionClaims(uuid.UUID(tenant_id), uuid.UUID(user_id) if user_id else None,
                           uuid.UUID(key_id) if key_id else None, uuid.UUID(run_id), role,
                           time.time() + expires_in)


def token_for(claims: ExecutionClaims, secret: str = TEST_SECRET) -> str:
    return mint(secret.encode(), claims)


class Scene:
    """On the idle server: tenants A and B with a node each, and a queued run of A marked
    'running' in SQL (so that its token is accepted)."""


@pytest.fixture(scope="module")
def scene(idle):
    return asyncio.run(_build_scene(idle))


async def _build_scene(idle) -> Scene:
    s = Scene()
    s.server = idle
    async with FlexDBClient(idle.url, api_key=idle.admin_key) as c:
        s.user_id = await own_user_id(c)
        s.a = (await c.call("create_tenant", {"slug": unique("a"), "name": "A"}))["tenant"]["id"]
        s.b = (await c.call("create_tenant", {"slug": unique("b"), "name": "B"}))["tenant"]["id"]
        s.nt = {}
        s.node = {}
        for t in (s.a, s.b):
            s.nt[t] = (await c.call("create_node_type", {"tenant_id": t, "name": "N"}))[
                "node_type"]["id"]
            s.node[t] = (await c.call("create_node", {"tenant_id": t, "node_type_id": s.nt[t],
                                                      "data": {"t": t}}))["node"]["id"]
        s.pipeline = await make_pipeline(c, s.a)
        s.run = (await run(c, s.a, s.pipeline["id"], wait=False))["id"]
        s.queued = (await run(c, s.a, s.pipeline["id"], wait=False))["id"]
        s.finished = (await run(c, s.a, s.pipeline["id"], "done"))["id"]
        pipeline_b = await make_pipeline(c, s.b)
        s.run_b = (await run(c, s.b, pipeline_b["id"], wait=False))["id"]
    await sql(idle.database_url,
              "UPDATE pipeline_runs SET status = 'running', started_at = now(), "
              "deadline = now() + interval '10 minutes' WHERE id = ANY($1::uuid[])",
              [uuid.UUID(s.run), uuid.UUID(s.run_b)])
    return s


async def token_call(scene, token: str, method: str, params: dict):
    async with FlexDBClient(scene.server.url, api_key=token) as c:
        return await c.call(method, params)


async def test_a_running_runs_token_reads_and_writes_its_tenant(scene):
    token = token_for(_claims(scene.a, scene.run, scene.user_id))
    node = await token_call(scene, token, "get_node", {"tenant_id": scene.a,
                                                       "id": scene.node[scene.a]})
    assert node["node"]["data"] == {"t": scene.a}
    created = await token_call(scene, token, "create_node", {
        "tenant_id": scene.a, "node_type_id": scene.nt[scene.a], "data": {"by": "token"}})
    listed = await token_call(scene, token, "execute_query", {
        "tenant_id": scene.a, "sql": "SELECT count(*) FROM nodes"})
    assert listed["rows"][0][0] >= 2
    await token_call(scene, token, "delete_node", {"tenant_id": scene.a,
                                                   "id": created["node"]["id"]})
    async with FlexDBClient(scene.server.url, api_key=scene.server.admin_key) as c:
        events = await audit_events(c, scene.a, target_id=created["node"]["id"])
    assert [(e["method"], e["actor_user_id"]) for e in events] == [
        ("create_node", scene.user_id), ("delete_node", scene.user_id)]


async def test_a_token_is_confined_to_its_tenant(scene):
    token = token_for(_claims(scene.a, scene.run, scene.user_id))
    for method, params in (("get_node", {"id": scene.node[scene.b]}),
                           ("list_nodes", {}),
                           ("create_node", {"node_type_id": scene.nt[scene.b]}),
                           ("execute_query", {"sql": "SELECT 1"})):
        with pytest.raises(NotFound) as exc:
            await token_call(scene, token, method, {"tenant_id": scene.b, **params})
        assert exc.value.code == -32001 and exc.value.data["kind"] == "tenant", method
    with pytest.raises(NotFound) as exc:  # B's node asked for in A: no such node in A
        await token_call(scene, token, "get_node", {"tenant_id": scene.a,
                                                    "id": scene.node[scene.b]})
    assert exc.value.data["kind"] == "node"
    # A token naming tenant B with a run of tenant A: no such running run in B.
    with pytest.raises(Unauthenticated):
        await token_call(scene, token_for(_claims(scene.b, scene.run, scene.user_id)),
                         "get_node", {"tenant_id": scene.b, "id": scene.node[scene.b]})
    token_b = token_for(_claims(scene.b, scene.run_b, scene.user_id))
    assert (await token_call(scene, token_b, "get_node", {
        "tenant_id": scene.b, "id": scene.node[scene.b]}))["node"]["data"] == {"t": scene.b}
    with pytest.raises(NotFound) as exc:
        await token_call(scene, token_b, "get_node", {"tenant_id": scene.a,
                                                      "id": scene.node[scene.a]})
    assert exc.value.data["kind"] == "tenant"


def another_tenants_params(s: Scene) -> dict[str, dict]:
    """Valid params for every db method, each naming tenant B's objects."""
    node, missing = s.node[s.b], missing_id()
    return {
        "get_node": {"id": node}, "list_nodes": {},
        "create_node": {"node_type_id": s.nt[s.b], "data": {"by": "a's run"}},
        "create_nodes": {"nodes": [{"node_type_id": s.nt[s.b], "data": {"by": "a's run"}}]},
        "update_node": {"id": node, "data": {"t": "overwritten"}}, "delete_node": {"id": node},
        "get_relationship": {"id": missing}, "list_relationships": {},
        "create_relationship": {"source_node_id": node, "target_node_id": node,
                                "relationship_type": "knows", "data": {}},
        "update_relationship": {"id": missing, "data": {}},
        "delete_relationship": {"id": missing},
        "query_nodes": {"filter": {"field": "data.t", "op": "eq", "value": s.b}},
        "traverse": {"start_node_id": node},
        "shortest_path": {"source_node_id": node, "target_node_id": node},
        "execute_query": {"sql": "SELECT count(*) FROM nodes"},
    }


async def test_every_db_method_refuses_another_tenant_at_the_server(scene):
    """What the sandbox worker refuses (a db call naming another tenant, see
    test_sandbox_escapes.py) the server refuses too, for each method a run's token may call:
    the token is bound to its tenant, whatever the params say."""
    token = token_for(_claims(scene.a, scene.run, scene.user_id))
    calls = another_tenants_params(scene)
    assert set(calls) == set(run_db_methods())
    for method, params in calls.items():
        with pytest.raises(NotFound) as exc:
            await token_call(scene, token, method, {"tenant_id": scene.b, **params})
        assert exc.value.code == -32001 and exc.value.data["kind"] == "tenant", method
    async with FlexDBClient(scene.server.url, api_key=scene.server.admin_key) as c:
        nodes = (await c.call("list_nodes", {"tenant_id": scene.b}))["nodes"]
    assert [(n["id"], n["data"], n["version"]) for n in nodes] == \
        [(scene.node[scene.b], {"t": scene.b}, 1)]


OUTSIDE_METHODS = [
    ("create_api_key", lambda s: {"name": "stolen"}),
    ("create_tenant", lambda s: {"slug": unique("x"), "name": "X"}),
    ("delete_tenant", lambda s: {"id": s.a}),
    ("update_tenant", lambda s: {"id": s.a, "name": "taken"}),
    ("create_node_type", lambda s: {"tenant_id": s.a, "name": unique("T")}),
    ("add_user_to_tenant", lambda s: {"tenant_id": s.a, "user_id": s.user_id,
                                      "role": "viewer"}),
    ("run_pipeline", lambda s: {"tenant_id": s.a, "pipeline_id": s.pipeline["id"]}),
    ("create_pipeline", lambda s: {"tenant_id": s.a, "name": unique("p"), "code": ECHO}),
    ("get_pipeline", lambda s: {"tenant_id": s.a, "id": s.pipeline["id"]}),
    ("get_pipeline_run", lambda s: {"tenant_id": s.a, "id": s.run}),
    ("cancel_pipeline_run", lambda s: {"tenant_id": s.a, "id": s.queued}),
    ("list_audit_events", lambda s: {"tenant_id": s.a}),
    ("list_tenants", lambda s: {}),
    ("list_users", lambda s: {}),
    ("get_user", lambda s: {"id": s.user_id}),
    ("list_api_keys", lambda s: {}),
    ("create_relationships", lambda s: {"tenant_id": s.a, "relationships": []}),
]


@pytest.mark.parametrize("role", ["member", "owner"])
async def test_a_token_calls_only_the_db_methods(scene, role):
    token = token_for(_claims(scene.a, scene.run, scene.user_id, role=role))
    for method, params in OUTSIDE_METHODS:
        assert REGISTRY[method].run_db is None
        with pytest.raises(Forbidden) as exc:
            await token_call(scene, token, method, params(scene))
        assert exc.value.code == -32003, method
        assert exc.value.data["required_role"] == "api_key", method
    async with FlexDBClient(scene.server.url, api_key=scene.server.admin_key) as c:
        assert (await c.call("get_tenant", {"id": scene.a}))["tenant"]["name"] == "A"
        assert (await get_run(c, scene.a, scene.queued))["status"] == "queued"


async def test_a_token_calls_exactly_the_methods_registered_for_it(idle):
    """Walks the registry with a running run's token: every method registered without
    run_db is refused for that reason (forbidden, required_role api_key, before any role or
    tenant check), and every method registered with it is let through."""
    async with FlexDBClient(idle.url, api_key=idle.admin_key) as admin:
        world = await World.build(admin)
        pipeline = await make_pipeline(admin, world.tid)
        run_id = (await run(admin, world.tid, pipeline["id"], wait=False))["id"]
        await sql(idle.database_url, "UPDATE pipeline_runs SET status = 'running', started_at "
                  "= now(), deadline = now() + interval '10 minutes' WHERE id = $1",
                  uuid.UUID(run_id))
        token = token_for(_claims(world.tid, run_id, await own_user_id(admin)))
        refused, failures = [], []
        async with FlexDBClient(idle.url, api_key=token) as c:
            for method, spec in sorted(REGISTRY.items()):
                params = await world.params(method, None)
                try:
                    await c.call(method, params)
                    if spec.run_db is None:
                        failures.append(f"{method}: answered a token")
                except Forbidden as exc:
                    if spec.run_db is not None:
                        failures.append(f"{method}: refused ({exc.message})")
                    elif exc.code != -32003 or exc.data.get("required_role") != "api_key" \
                            or exc.message != f"A pipeline run's db object cannot call {method}":
                        failures.append(f"{method}: refused for another reason: {exc.data}")
                    else:
                        refused.append(method)
    assert not failures, "\n".join(failures)
    assert set(refused) == {n for n, s in REGISTRY.items() if s.run_db is None}


DB_SURFACE = """
def run(input, db):
    offered = {}
    for name in input:
        if hasattr(db, name):
            try:
                getattr(db, name)(1, 2, 3, 4, 5, 6, 7, 8, 9)
            except TypeError as e:
                offered[name] = str(e)
    return offered
"""


async def test_the_sandbox_db_offers_exactly_the_registry_token_methods(rpc, tenant):
    """What a run's `db` object has (methods, and how many params each takes by position)
    is what the registry declares token-callable: the sandbox worker keeps no list."""
    pipeline = await make_pipeline(rpc, tenant["id"], DB_SURFACE)
    asked = sorted(REGISTRY) + ["call", "channel", "send", "rpc.discover"]
    done = await run(rpc, tenant["id"], pipeline["id"], asked)
    assert done["status"] == "succeeded" and done["db_operations"] == []
    assert done["result"] == {
        name: f"{name}() takes at most {len(positional)} positional arguments"
        for name, positional in run_db_methods().items()}


async def test_a_tokens_role_is_enforced(scene):
    viewer = token_for(_claims(scene.a, scene.run, scene.user_id, role="viewer"))
    await token_call(scene, viewer, "get_node", {"tenant_id": scene.a, "id": scene.node[scene.a]})
    with pytest.raises(Forbidden) as exc:
        await token_call(scene, viewer, "create_node", {"tenant_id": scene.a,
                                                        "node_type_id": scene.nt[scene.a]})
    assert exc.value.data["role"] == "viewer"


def test_the_runner_caps_the_tokens_role_at_member():
    assert [token_role(r) for r in ("viewer", "member", "admin", "owner")] == \
        ["viewer", "member", "member", "member"]
    tenant_id, run_id, user_id, key_id = (uuid.uuid4() for _ in range(4))
    deadline = datetime.now(timezone.utc) + timedelta(seconds=30)
    record = {"id": run_id, "tenant_id": tenant_id, "actor_user_id": user_id,
              "actor_key_id": key_id, "actor_role": "owner", "deadline": deadline,
              "code": ECHO, "input": {"a": 1}, "timeout_ms": 30_000, "memory_mb": 64,
              "request_id": "r-1", "debug_level": "basic"}
    job = PipelineRunner(None, None, partial(run_token, TEST_SECRET.encode()), 0, 1,
                         db_methods=run_db_methods()).job(record)
    assert job["db_methods"] == run_db_methods()
    claims = verify(TEST_SECRET.encode(), job["token"])
    assert claims == ExecutionClaims(tenant_id, user_id, key_id, run_id, "member",
                                     claims.expires_at)
    assert abs(claims.expires_at - (deadline.timestamp() + 2.0)) < 0.01
    assert (job["run_id"], job["tenant_id"], job["input"], job["timeout_ms"]) == \
        (str(run_id), str(tenant_id), {"a": 1}, 30_000)
    with pytest.raises(ValueError):
        verify(b"another secret", job["token"])


async def test_refused_tokens(scene, idle):
    good = _claims(scene.a, scene.run, scene.user_id)
    params = {"tenant_id": scene.a, "id": scene.node[scene.a]}
    header, payload = token_for(good).split(".")

    def tampered_role() -> str:  # the claims say owner, the signature is the member's
        encoded = header[len("fdbx_"):]
        body = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
        body["role"] = "owner"
        raw = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
        return f"fdbx_{raw}.{payload}"

    cases = {
        "finished run": (token_for(_claims(scene.a, scene.finished, scene.user_id)),
                         "not running"),
        "queued run": (token_for(_claims(scene.a, scene.queued, scene.user_id)), "not running"),
        "unknown run": (token_for(_claims(scene.a, missing_id(), scene.user_id)), "not running"),
        "other secret": (token_for(good, secret="another-secret-of-the-same-length-0123456789"),
                         "signature"),
        "expired": (token_for(_claims(scene.a, scene.run, scene.user_id, expires_in=-1)),
                    "expired"),
        "tampered": (tampered_role(), "signature"),
        "truncated": (token_for(good)[:-4], "signature"),
        "malformed": ("fdbx_not-a-token", "malformed"),
        "too long": ("fdbx_" + "a" * 2000, "not an execution token"),
    }
    for name, (token, words) in cases.items():
        with pytest.raises(Unauthenticated) as exc:
            await token_call(scene, token, "get_node", params)
        assert exc.value.code == -32002, name
        assert words in exc.value.message, (name, exc.value.message)
    await token_call(scene, token_for(good), "get_node", params)  # the good one still works


async def test_a_token_dies_with_its_run(idle, scene):
    async with FlexDBClient(idle.url, api_key=idle.admin_key) as c:
        queued = (await run(c, scene.a, scene.pipeline["id"], wait=False))["id"]
    await sql(idle.database_url, "UPDATE pipeline_runs SET status = 'running', "
              "started_at = now(), deadline = now() + interval '1 minute' WHERE id = $1",
              uuid.UUID(queued))
    token = token_for(_claims(scene.a, queued, scene.user_id))
    params = {"tenant_id": scene.a, "id": scene.node[scene.a]}
    await token_call(scene, token, "get_node", params)
    async with FlexDBClient(idle.url, api_key=idle.admin_key) as c:
        await c.call("cancel_pipeline_run", {"tenant_id": scene.a, "id": queued})
    with pytest.raises(Unauthenticated) as exc:
        await token_call(scene, token, "get_node", params)
    assert "not running" in exc.value.message


async def test_a_real_finished_runs_token_is_refused(server, rpc, tenant):
    pipeline = await make_pipeline(rpc, tenant["id"])
    done = await run(rpc, tenant["id"], pipeline["id"], 1)
    user_id = await own_user_id(rpc)
    token = token_for(_claims(tenant["id"], done["id"], user_id))
    async with FlexDBClient(server.url, api_key=token) as c:
        with pytest.raises(Unauthenticated) as exc:
            await c.call("list_nodes", {"tenant_id": tenant["id"]})
    assert exc.value.code == -32002
