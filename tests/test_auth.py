"""Authentication and the permission matrix. Every attack must fail, for the right reason."""
from __future__ import annotations

import asyncio
import os
import stat
import tempfile
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import httpx
import pytest

import rpc_server.methods  # noqa: F401  (registers every method)
from rpc_server.api.registry import REGISTRY, DbMethod, MethodSpec
from rpc_server.client import (
    Conflict,
    FlexDBClient,
    Forbidden,
    InvalidParams,
    NotFound,
    RpcError,
    Unauthenticated,
)

from .auth_helpers import RANK, ROLES, World, new_user
from .conftest import missing_id, running_facade, running_server, unique

# What each method needs: a reviewed copy of the registrations' roles, so that a change to
# who may call a method must change this table too (the server reads only the registry; the
# matrix below derives what it expects from the registry, and this table checks the registry).
EXPECTED = {
    "create_tenant": "authenticated", "list_tenants": "authenticated",
    "get_user": "authenticated", "create_api_key": "authenticated",
    "list_api_keys": "authenticated", "revoke_api_key": "authenticated",
    "create_user": "platform_admin", "update_user": "platform_admin",
    "delete_user": "platform_admin", "list_users": "platform_admin",
    "get_tenant": "viewer", "update_tenant": "owner", "delete_tenant": "owner",
    "get_tenant_usage": "admin",
    "list_tenant_users": "viewer", "get_tenant_user": "viewer", "add_user_to_tenant": "admin",
    "remove_user_from_tenant": "admin", "update_tenant_user_role": "admin",
    "get_node_type": "viewer", "list_node_types": "viewer", "create_node_type": "admin",
    "update_node_type": "admin", "delete_node_type": "admin",
    "check_node_type_schema": "admin", "list_node_type_versions": "viewer",
    "get_node": "viewer", "list_nodes": "viewer", "create_node": "member",
    "update_node": "member", "delete_node": "member", "create_nodes": "member",
    "get_relationship": "viewer", "list_relationships": "viewer",
    "create_relationship": "member", "update_relationship": "member",
    "delete_relationship": "member", "create_relationships": "member",
    "list_audit_events": "admin", "verify_audit_chain": "admin", "list_changes": "viewer",
    "list_denied_calls": "platform_admin",
    "execute_query": "viewer", "query_nodes": "viewer", "traverse": "viewer",
    "shortest_path": "viewer",
    "create_pipeline": "admin", "get_pipeline": "viewer", "update_pipeline": "admin",
    "delete_pipeline": "admin", "list_pipelines": "viewer", "run_pipeline": "member",
    "get_pipeline_run": "viewer", "list_pipeline_runs": "viewer",
    "cancel_pipeline_run": "member",
    "create_webhook": "admin", "get_webhook": "admin", "list_webhooks": "admin",
    "update_webhook": "admin", "delete_webhook": "admin", "list_webhook_deliveries": "admin",
    "redeliver": "admin",
    "migrate_nodes": "admin", "get_job": "admin", "list_jobs": "admin", "cancel_job": "admin",
}


async def outcome(client, method, params) -> str:
    try:
        await client.call(method, params)
        return "allowed"
    except Unauthenticated:
        return "unauthenticated"
    except Forbidden:
        return "forbidden"
    except NotFound as exc:
        return "hidden" if exc.data.get("kind") == "tenant" else "allowed"
    except RpcError:
        return "allowed"  # a business error: the permission check let the call through


def expected_outcome(required: str, caller: str) -> str:
    """caller: 'anonymous', 'outsider' (a user of another tenant), or a role."""
    if caller == "anonymous":
        return "unauthenticated"
    if required == "authenticated":
        return "allowed"
    if required == "platform_admin":
        return "forbidden"
    if caller == "outsider":
        return "hidden"
    return "allowed" if RANK[caller] >= RANK[required] else "forbidden"


# Reviewed like EXPECTED: the methods a pipeline run's db may call (data of its tenant).
EXPECTED_TOKEN_CALLABLE = {
    "get_node", "list_nodes", "create_node", "create_nodes", "update_node", "delete_node",
    "get_relationship", "list_relationships", "create_relationship", "update_relationship",
    "delete_relationship", "query_nodes", "traverse", "shortest_path", "execute_query"}


def required_of(spec: MethodSpec) -> str:
    """What the registry says a method needs, in EXPECTED's terms."""
    return spec.permission.role if spec.permission.kind == "tenant" else spec.permission.kind


def test_every_registered_method_declares_who_may_call_it():
    """Walks the registry: every method declares its role, whether a run's token may call it
    and whether a missing tenant must answer not found, and the declarations agree with the
    reviewed tables."""
    for name, spec in REGISTRY.items():
        tenant_scoped = spec.permission.kind == "tenant"
        assert spec.permission.kind in ("authenticated", "platform_admin", "tenant"), name
        assert not tenant_scoped or spec.permission.role in ROLES, name
        assert spec.run_db is None or isinstance(spec.run_db, DbMethod), name
        assert isinstance(spec.tenant_must_exist, bool), name
        assert tenant_scoped or (spec.run_db is None and not spec.tenant_must_exist), name
    assert {name: required_of(spec) for name, spec in REGISTRY.items()} == EXPECTED
    assert {name for name, spec in REGISTRY.items() if spec.run_db} == EXPECTED_TOKEN_CALLABLE


MODULE_HEAD = """
from pydantic import BaseModel
from rpc_server.api.params import Params
from rpc_server.api.registry import db_method, rpc_method
from rpc_server.security.auth import AUTHENTICATED, PLATFORM_ADMIN, tenant_role

class P(Params):
    tenant_id: str
    id: str

class R(BaseModel):
    pass

"""
# case -> (the registration, what the refusal names)
UNDECLARED = {
    "no permission": ("@rpc_method(P, result=R, run_db=None, tenant_must_exist=False)",
                      "permission"),
    "permission None": (
        "@rpc_method(P, None, result=R, run_db=None, tenant_must_exist=False)", "Permission"),
    "no run_db": ("@rpc_method(P, tenant_role('viewer'), result=R, tenant_must_exist=False)",
                  "run_db"),
    "no tenant_must_exist": ("@rpc_method(P, tenant_role('viewer'), result=R, run_db=None)",
                             "tenant_must_exist"),
    "no result": ("@rpc_method(P, tenant_role('viewer'), run_db=None, tenant_must_exist=False)",
                  "result"),
    "run_db not declared with db_method": (
        "@rpc_method(P, tenant_role('viewer'), result=R, run_db=True, tenant_must_exist=False)",
        "run_db=db_method"),
    "tenant_must_exist not a bool": (
        "@rpc_method(P, tenant_role('viewer'), result=R, run_db=None, tenant_must_exist=1)",
        "tenant_must_exist=True or False"),
    "a token outside a tenant": (
        "@rpc_method(P, PLATFORM_ADMIN, result=R, run_db=db_method(), tenant_must_exist=False)",
        "run_db needs a tenant_role"),
    "a tenant check without a tenant": (
        "@rpc_method(P, AUTHENTICATED, result=R, run_db=None, tenant_must_exist=True)",
        "tenant_must_exist needs a tenant-scoped permission"),
    "a positional param the model lacks": (
        "@rpc_method(P, tenant_role('viewer'), result=R, run_db=db_method('idd'), "
        "tenant_must_exist=False)", "['idd']"),
    "tenant_id by position": (
        "@rpc_method(P, tenant_role('viewer'), result=R, run_db=db_method('tenant_id'), "
        "tenant_must_exist=False)", "['tenant_id']"),
}


@pytest.mark.parametrize("case", sorted(UNDECLARED))
def test_a_method_without_a_full_declaration_fails_at_import(tmp_path, monkeypatch, case):
    """Registration refuses it, so the module that registers it does not import (and the
    server does not start)."""
    import importlib

    registration, named = UNDECLARED[case]
    name = f"undeclared_{abs(hash(case))}"
    (tmp_path / f"{name}.py").write_text(
        f"{MODULE_HEAD}{registration}\nasync def {name}(ctx, p):\n    return {{}}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TypeError) as exc:
        importlib.import_module(name)
    assert named in str(exc.value)
    assert name not in REGISTRY


def test_a_fully_declared_method_registers(tmp_path, monkeypatch):
    """The benign counterpart of the refusals above (removed again from the registry)."""
    import importlib

    (tmp_path / "declared_ok.py").write_text(
        MODULE_HEAD + "@rpc_method(P, tenant_role('viewer'), result=R, "
        "run_db=db_method('id'), tenant_must_exist=True)\n"
        "async def declared_ok(ctx, p):\n    return {}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        importlib.import_module("declared_ok")
        spec = REGISTRY["declared_ok"]
        assert (spec.run_db, spec.tenant_must_exist) == (DbMethod(("id",)), True)
    finally:
        REGISTRY.pop("declared_ok", None)


async def test_require_tenant_only_in_methods_that_declare_it():
    """A handler cannot check its tenant's existence behind the registry's back."""
    from types import SimpleNamespace

    from rpc_server.methods.common import require_tenant

    with pytest.raises(RuntimeError, match="tenant_must_exist=True"):
        await require_tenant(SimpleNamespace(method="get_node"), None, None)


async def test_a_missing_tenant_is_not_found_even_for_a_platform_admin(rpc):
    """Every method declared tenant_must_exist answers not found (kind tenant) when a
    platform admin, whom no membership check stops, names a tenant that does not exist."""
    world = await World.build(rpc)
    declared = sorted(n for n, s in REGISTRY.items() if s.tenant_must_exist)
    assert declared, "no method declares tenant_must_exist"
    nothing_to_create = {"create_nodes": {"nodes": []},  # else an item answers first
                         "create_relationships": {"relationships": []}}
    failures = []
    for method in declared:
        params = {**await world.params(method, None), "tenant_id": missing_id(),
                  **nothing_to_create.get(method, {})}
        try:
            await rpc.call(method, params)
            failures.append(f"{method}: answered")
        except NotFound as exc:
            if exc.code != -32001 or exc.data.get("kind") != "tenant":
                failures.append(f"{method}: {exc.data}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("caller", ["anonymous", "outsider", *ROLES])
async def test_permission_matrix(server, rpc, caller):
    world = await World.build(rpc)
    if caller == "anonymous":
        key = None
    elif caller == "outsider":
        outsider, key = await new_user(rpc)
        async with FlexDBClient(server.url, api_key=key) as own:
            await own.call("create_tenant", {"slug": unique("o"), "name": "Own"})
    else:
        key = world.keys[caller]
    failures = []
    async with FlexDBClient(server.url, api_key=key) as client:
        # delete_tenant last: it removes the world.
        for method in sorted(REGISTRY, key=lambda m: m == "delete_tenant"):
            params = await world.params(method, caller if caller in ROLES else None)
            got = await outcome(client, method, params)
            want = expected_outcome(required_of(REGISTRY[method]), caller)
            if got != want:
                failures.append(f"{method}: expected {want}, got {got}")
    assert not failures, "\n".join(failures)


async def test_foreign_tenant_answers_exactly_like_a_missing_one(server, rpc):
    world = await World.build(rpc)
    _, key = await new_user(rpc)
    node = await world.node()
    missing = "00000000-0000-0000-0000-0000000000ff"
    async with FlexDBClient(server.url, api_key=key) as outsider:
        for tenant_id in (world.tid, missing):
            with pytest.raises(NotFound) as exc:
                await outsider.call("get_node", {"tenant_id": tenant_id, "id": node["id"]})
            shape = (exc.value.code, exc.value.message, sorted(exc.value.data))
            assert shape == (-32001, "tenant not found", ["id", "kind", "type"])


async def test_missing_malformed_expired_and_revoked_keys(server, rpc):
    user, key = await new_user(rpc)
    cases = {None: "Authentication required", "Bearer fdb_" + "x" * 43: "unknown",
             "Basic dXNlcjpwYXNz": "expected Authorization", "Bearer": "expected",
             "Bearer sk_live_abc": "expected", "Bearer fdb_" + "x" * 500: "expected"}
    for header, words in cases.items():
        headers = {"Authorization": header} if header else None
        async with FlexDBClient(server.url, headers=headers) as c:
            with pytest.raises(Unauthenticated) as exc:
                await c.call("list_tenants", {})
            assert exc.value.code == -32002 and words in exc.value.message

    expiry = datetime.now(timezone.utc) + timedelta(seconds=4)
    expiring = (await rpc.call("create_api_key", {"name": "short", "user_id": user["id"],
                                                  "expires_at": expiry.isoformat()}))["secret"]
    async with FlexDBClient(server.url, api_key=expiring) as c:
        await c.call("list_tenants", {})
        remaining = (expiry - datetime.now(timezone.utc)).total_seconds()
        await asyncio.sleep(max(0.0, remaining) + 0.2)
        with pytest.raises(Unauthenticated) as exc:
            await c.call("list_tenants", {})
        assert "expired" in exc.value.message

    async with FlexDBClient(server.url, api_key=key) as c:
        await c.call("list_tenants", {})
        listed = await c.call("list_api_keys", {})
        own_key = listed["api_keys"][0]
        await c.call("revoke_api_key", {"id": own_key["id"]})
        with pytest.raises(Unauthenticated):  # at once, on the instance that revoked it
            await c.call("list_tenants", {})


async def test_past_expiry_is_refused(rpc):
    user, _ = await new_user(rpc)
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("create_api_key", {"name": "x", "user_id": user["id"],
                                          "expires_at": "2001-01-01T00:00:00Z"})
    assert exc.value.data["errors"][0]["field"] == "expires_at"


async def test_an_expiring_key_cannot_make_a_key_that_outlives_it(server, rpc):
    user, _ = await new_user(rpc)
    expiry = datetime.now(timezone.utc) + timedelta(hours=1)
    expiring = (await rpc.call("create_api_key", {"name": "expiring", "user_id": user["id"],
                                                  "expires_at": expiry.isoformat()}))["secret"]
    later = (expiry + timedelta(seconds=1)).isoformat()
    async with FlexDBClient(server.url, api_key=expiring) as c:
        for params in ({}, {"expires_at": later}):  # never expiring; expiring after it
            with pytest.raises(InvalidParams) as exc:
                await c.call("create_api_key", {"name": "escape", **params})
            assert exc.value.code == -32602
            assert [e["field"] for e in exc.value.data["errors"]] == ["expires_at"]
            assert "no later than" in exc.value.data["errors"][0]["message"]
            assert datetime.fromisoformat(exc.value.data["max_expires_at"]) == expiry
        sooner = (expiry - timedelta(minutes=1)).isoformat()
        made = await c.call("create_api_key", {"name": "shorter", "expires_at": sooner})
        assert datetime.fromisoformat(made["api_key"]["expires_at"]) \
            == datetime.fromisoformat(sooner)
        same = await c.call("create_api_key", {"name": "as long", "expires_at":
                                               expiry.isoformat()})
        assert same["secret"].startswith("fdb_")
        names = {k["name"] for k in (await c.call("list_api_keys", {}))["api_keys"]}
    assert "escape" not in names and {"shorter", "as long"} <= names


async def test_keys_are_stored_only_as_keyed_hashes(rpc, database_url):
    user, key = await new_user(rpc)
    assert key.startswith("fdb_") and len(key) >= 4 + 43  # 256 random bits
    listed = await rpc.call("list_api_keys", {"user_id": user["id"]})
    assert key not in str(listed) and "key_hash" not in str(listed)
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT * FROM api_keys WHERE user_id = $1",
                                uuid.UUID(user["id"]))
    finally:
        await conn.close()
    assert len(rows) == 1 and key not in str(dict(rows[0])) and len(rows[0]["key_hash"]) == 32


async def test_users_manage_only_their_own_keys(server, rpc):
    alice, alice_key = await new_user(rpc)
    bob, bob_key = await new_user(rpc)
    bobs = await rpc.call("list_api_keys", {"user_id": bob["id"]})
    async with FlexDBClient(server.url, api_key=alice_key) as alice_c:
        with pytest.raises(Forbidden):
            await alice_c.call("create_api_key", {"name": "x", "user_id": bob["id"]})
        with pytest.raises(Forbidden):
            await alice_c.call("list_api_keys", {"user_id": bob["id"]})
        with pytest.raises(NotFound):
            await alice_c.call("revoke_api_key", {"id": bobs["api_keys"][0]["id"]})
        own = await alice_c.call("list_api_keys", {})
        assert {k["user_id"] for k in own["api_keys"]} == {alice["id"]}
        created = await alice_c.call("create_api_key", {"name": "second"})
        assert created["api_key"]["user_id"] == alice["id"] and created["secret"].startswith("fdb_")
        with pytest.raises(NotFound):
            await alice_c.call("get_user", {"id": bob["id"]})
    async with FlexDBClient(server.url, api_key=bob_key) as bob_c:
        await bob_c.call("list_tenants", {})  # still valid


async def test_a_key_for_a_user_that_does_not_exist_is_not_found(rpc):
    # Found by the schemathesis run of the REST facade: this used to be an internal error.
    with pytest.raises(NotFound) as exc:
        await rpc.call("create_api_key", {"name": "k", "user_id": missing_id()})
    assert exc.value.data["kind"] == "user"


async def test_users_see_only_their_tenants_and_own_what_they_create(server, rpc):
    _, key = await new_user(rpc)
    other = (await rpc.call("create_tenant", {"slug": unique("x"), "name": "X"}))["tenant"]
    async with FlexDBClient(server.url, api_key=key) as user:
        mine = (await user.call("create_tenant", {"slug": unique("m"), "name": "Mine"}))["tenant"]
        listed = await user.call("list_tenants", {})
        assert [t["id"] for t in listed["tenants"]] == [mine["id"]]
        assert listed["pagination"]["total_count"] == 1
        members = await user.call("list_tenant_users", {"tenant_id": mine["id"]})
        assert [m["role"] for m in members["tenant_users"]] == ["owner"]
        with pytest.raises(NotFound):
            await user.call("get_tenant", {"id": other["id"]})
    everything = await rpc.call("list_tenants", {"pagination": {"page_size": 1000}})
    assert {mine["id"], other["id"]} <= {t["id"] for t in everything["tenants"]}


async def test_nobody_grants_above_their_own_role(server, rpc):
    world = await World.build(rpc)
    async with FlexDBClient(server.url, api_key=world.keys["admin"]) as admin:
        newcomer, _ = await new_user(rpc)
        with pytest.raises(Forbidden):
            await admin.call("add_user_to_tenant", {"tenant_id": world.tid,
                                                    "user_id": newcomer["id"], "role": "owner"})
        await admin.call("add_user_to_tenant", {"tenant_id": world.tid,
                                                "user_id": newcomer["id"], "role": "admin"})
        with pytest.raises(Forbidden):  # promote someone to owner
            await admin.call("update_tenant_user_role", {
                "tenant_id": world.tid, "user_id": world.users["member"]["id"], "role": "owner"})
        with pytest.raises(Forbidden):  # demote the owner
            await admin.call("update_tenant_user_role", {
                "tenant_id": world.tid, "user_id": world.users["owner"]["id"], "role": "viewer"})
        with pytest.raises(Forbidden):  # remove the owner
            await admin.call("remove_user_from_tenant", {
                "tenant_id": world.tid, "user_id": world.users["owner"]["id"]})
        with pytest.raises(Forbidden):  # promote oneself
            await admin.call("update_tenant_user_role", {
                "tenant_id": world.tid, "user_id": world.users["admin"]["id"], "role": "owner"})
    async with FlexDBClient(server.url, api_key=world.keys["member"]) as member:
        with pytest.raises(Forbidden):
            await member.call("add_user_to_tenant", {"tenant_id": world.tid,
                                                     "user_id": newcomer["id"], "role": "viewer"})


async def test_last_owner_cannot_leave_or_be_demoted(server, rpc):
    world = await World.build(rpc)
    me = (await rpc.call("list_tenant_users", {"tenant_id": world.tid}))["tenant_users"][0]
    await rpc.call("remove_user_from_tenant", {"tenant_id": world.tid, "user_id": me["user_id"]})
    owner = world.users["owner"]["id"]
    async with FlexDBClient(server.url, api_key=world.keys["owner"]) as o:
        with pytest.raises(Conflict) as exc:
            await o.call("update_tenant_user_role", {"tenant_id": world.tid, "user_id": owner,
                                                     "role": "admin"})
        assert "at least one owner" in exc.value.message
        with pytest.raises(Conflict):
            await o.call("remove_user_from_tenant", {"tenant_id": world.tid, "user_id": owner})
        second = world.users["admin"]["id"]
        await o.call("update_tenant_user_role", {"tenant_id": world.tid, "user_id": second,
                                                 "role": "owner"})
    # Two owners demoting each other at once: exactly one succeeds, one owner remains.
    async with FlexDBClient(server.url, api_key=world.keys["owner"]) as a, \
            FlexDBClient(server.url, api_key=world.keys["admin"]) as b:
        results = await asyncio.gather(
            a.call("update_tenant_user_role",
                   {"tenant_id": world.tid, "user_id": second, "role": "viewer"}),
            b.call("update_tenant_user_role",
                   {"tenant_id": world.tid, "user_id": owner, "role": "viewer"}),
            return_exceptions=True)
    winners = [r for r in results if isinstance(r, dict)]
    losers = [r for r in results if not isinstance(r, dict)]
    assert len(winners) == 1, results
    # The loser was demoted first (no longer may change roles) or was the last owner.
    [loser] = losers
    assert isinstance(loser, Forbidden) or (
        isinstance(loser, Conflict) and "at least one owner" in loser.message), repr(loser)
    members = (await rpc.call("list_tenant_users", {"tenant_id": world.tid}))["tenant_users"]
    assert sum(m["role"] == "owner" for m in members) == 1


async def test_role_changes_apply_to_the_next_call(server, rpc):
    world = await World.build(rpc)
    member = world.users["member"]["id"]
    async with FlexDBClient(server.url, api_key=world.keys["member"]) as m:
        await m.call("create_node", {"tenant_id": world.tid, "node_type_id": world.nt["id"]})
        await rpc.call("update_tenant_user_role", {"tenant_id": world.tid, "user_id": member,
                                                   "role": "viewer"})
        with pytest.raises(Forbidden):
            await m.call("create_node", {"tenant_id": world.tid, "node_type_id": world.nt["id"]})
        await rpc.call("remove_user_from_tenant", {"tenant_id": world.tid, "user_id": member})
        with pytest.raises(NotFound):
            await m.call("list_nodes", {"tenant_id": world.tid})


@pytest.fixture(scope="module")
def open_server(database_url):
    with running_server({"FLEXDB_DATABASE_URL": database_url,
                         "FLEXDB_ANONYMOUS_ROLE": "platform_admin"}) as srv:
        yield srv


async def test_anonymous_role_platform_admin(open_server, server):
    async with FlexDBClient(open_server.url) as anonymous:
        created = await anonymous.call("create_tenant", {"slug": unique("anon"), "name": "A"})
        tenant = created["tenant"]
        await anonymous.call("list_users", {})
        with pytest.raises(InvalidParams):  # no user to own a key
            await anonymous.call("create_api_key", {"name": "x"})
    assert "WARNING: FLEXDB_ANONYMOUS_ROLE=platform_admin" in open_server.output()
    async with FlexDBClient(server.url) as anonymous:  # the default server: none
        with pytest.raises(Unauthenticated):
            await anonymous.call("get_tenant", {"id": tenant["id"]})
    assert "FLEXDB_ANONYMOUS_ROLE" not in server.output()


def test_a_facade_that_lets_everyone_in_says_so_loudly_at_start(open_server, server):
    with running_facade(open_server.url, FLEXDB_ANONYMOUS_ROLE="platform_admin") as facade:
        answer = httpx.get(facade.base + "/tenants", timeout=10)  # no credentials
        assert answer.status_code == 200
        warning = facade.output()
    assert "WARNING: FLEXDB_ANONYMOUS_ROLE=platform_admin: the REST facade serves every " \
           "caller" in warning
    with running_facade(server.url) as facade:
        assert httpx.get(facade.base + "/tenants", timeout=10).status_code == 401
        assert "FLEXDB_ANONYMOUS_ROLE" not in facade.output()


def test_secret_is_generated_once_with_owner_only_permissions(database_url):
    data_dir = Path(tempfile.mkdtemp(prefix="flexdb-secret-"))
    env = {"FLEXDB_DATABASE_URL": database_url, "FLEXDB_SECRET_KEY": "",
           "FLEXDB_DATA_DIR": str(data_dir)}
    with running_server(env):
        secret_file = data_dir / "secret_key"
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        first = secret_file.read_text()
    with running_server(env):
        assert secret_file.read_text() == first
    os.chmod(secret_file, 0o644)
    from .cli_helpers import flexdb
    result = flexdb("serve", env={**env, "FLEXDB_PORT": "5998"})
    assert result.returncode == 2 and "chmod 600" in result.stderr
