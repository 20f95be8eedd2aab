"""Users and tenant membership: CRUD, validation, email uniqueness, roles, optimistic
concurrency and what deleting a user takes with it. Tenants: test_tenants.py."""
from __future__ import annotations

import asyncio

import pytest

from rpc_server.client import Conflict, FlexDBClient, Forbidden, InvalidParams, NotFound

from .auth_helpers import World
from .conftest import (
    email,
    error_fields,
    list_all,
    make_tenant,
    make_user,
    members,
    missing_id,
    own_user_id,
    unique,
)

# ---------------------------------------------------------------- users

async def test_create_and_get_user(rpc):
    address = email()
    user = await make_user(rpc, address, "Ada Lovelace")
    assert user["email"] == address and user["display_name"] == "Ada Lovelace"
    assert user["version"] == 1
    assert (await rpc.call("get_user", {"id": user["id"]}))["user"] == user


async def test_duplicate_email_is_a_conflict_regardless_of_case(rpc):
    local = unique("Ada")
    await make_user(rpc, f"{local}@Example.com")
    with pytest.raises(Conflict) as exc:
        await make_user(rpc, f"{local.upper()}@EXAMPLE.COM")
    assert exc.value.code == -32004
    assert exc.value.data["type"] == "conflict" and exc.value.data["field"] == "email"


async def test_update_to_a_taken_email_is_a_conflict(rpc):
    taken = (await make_user(rpc))["email"]
    user = await make_user(rpc)
    with pytest.raises(Conflict) as exc:
        await rpc.call("update_user", {"id": user["id"], "email": taken.upper()})
    assert exc.value.data["field"] == "email"


@pytest.mark.parametrize("address", ["no-at-sign", "two@@example.com", "a b@example.com",
                                     "nodot@example", "@example.com", "x@.com", ""])
async def test_bad_email_is_invalid_params(rpc, address):
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("create_user", {"email": address, "display_name": "Ada"})
    assert error_fields(exc) == ["email"]


@pytest.mark.parametrize("display_name", ["", "d" * 201])
async def test_bad_display_name_is_invalid_params(rpc, display_name):
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("create_user", {"email": email(), "display_name": display_name})
    assert error_fields(exc) == ["display_name"]


async def test_unknown_param_is_invalid_params(rpc):
    with pytest.raises(InvalidParams):
        await rpc.call("create_user", {"email": email(), "display_name": "Ada", "age": 3})


@pytest.mark.parametrize("method", ["get_user", "delete_user"])
async def test_missing_user_is_not_found(rpc, method):
    with pytest.raises(NotFound) as exc:
        await rpc.call(method, {"id": missing_id()})
    assert exc.value.data["kind"] == "user"


async def test_update_user_versions(rpc):
    user = await make_user(rpc)
    new_email = email()
    updated = (await rpc.call("update_user", {"id": user["id"], "email": new_email,
                                              "display_name": "Grace",
                                              "expected_version": 1}))["user"]
    assert (updated["email"], updated["display_name"], updated["version"]) == (new_email,
                                                                              "Grace", 2)
    with pytest.raises(Conflict) as exc:
        await rpc.call("update_user", {"id": user["id"], "display_name": "Lost",
                                       "expected_version": 1})
    assert exc.value.data["type"] == "version_conflict"
    assert exc.value.data["current_version"] == 2
    assert (await rpc.call("get_user", {"id": user["id"]}))["user"]["display_name"] == "Grace"


async def test_user_may_change_the_case_of_its_own_email(rpc):
    user = await make_user(rpc, f"{unique('case')}@example.com")
    updated = (await rpc.call("update_user", {"id": user["id"],
                                              "email": user["email"].upper()}))["user"]
    assert updated["email"] == user["email"].upper()


async def test_update_user_with_nothing_to_change_is_invalid_params(rpc):
    user = await make_user(rpc)
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("update_user", {"id": user["id"], "expected_version": 1})
    assert error_fields(exc) == ["params"]


async def test_update_missing_user_is_not_found(rpc):
    with pytest.raises(NotFound) as exc:
        await rpc.call("update_user", {"id": missing_id(), "display_name": "X"})
    assert exc.value.data["kind"] == "user"


async def test_delete_and_list_users(rpc):
    a, b = await make_user(rpc), await make_user(rpc)
    ids = [u["id"] for u in await list_all(rpc, "list_users", "users")]
    assert ids.index(a["id"]) < ids.index(b["id"])
    assert await rpc.call("delete_user", {"id": a["id"]}) == {"success": True}
    with pytest.raises(NotFound):
        await rpc.call("get_user", {"id": a["id"]})
    assert (await rpc.call("get_user", {"id": b["id"]}))["user"] == b


async def test_list_users_marks_the_platform_admin_flexdb_made_as_internal(rpc):
    person = await make_user(rpc)
    users = await list_all(rpc, "list_users", "users")
    internal = [u for u in users if u["internal"]]
    # The admin made at the first start (with a placeholder address), and nobody else.
    assert len(internal) == 1 and internal[0]["email"].endswith("@flexdb.invalid")
    assert internal[0]["id"] == await own_user_id(rpc)
    assert next(u for u in users if u["id"] == person["id"])["internal"] is False
    assert (await rpc.call("get_user", {"id": person["id"]}))["user"]["internal"] is False


# ---------------------------------------------------------------- membership

async def test_add_user_to_tenant_defaults_to_member(rpc, tenant):
    user = await make_user(rpc)
    membership = (await rpc.call("add_user_to_tenant", {"tenant_id": tenant["id"],
                                                        "user_id": user["id"]}))["tenant_user"]
    assert membership["tenant_id"] == tenant["id"] and membership["user_id"] == user["id"]
    assert membership["role"] == "member" and membership["status"] == "active"
    assert await members(rpc, tenant["id"]) == {user["id"]: "member"}


@pytest.mark.parametrize("role", ["owner", "admin", "member", "viewer"])
async def test_add_user_with_each_role(rpc, tenant, role):
    user = await make_user(rpc)
    membership = (await rpc.call("add_user_to_tenant", {"tenant_id": tenant["id"],
                                                        "user_id": user["id"],
                                                        "role": role}))["tenant_user"]
    assert membership["role"] == role


@pytest.mark.parametrize("role", ["superuser", "", "Owner"])
async def test_bad_role_is_invalid_params(rpc, tenant, role):
    user = await make_user(rpc)
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("add_user_to_tenant", {"tenant_id": tenant["id"], "user_id": user["id"],
                                              "role": role})
    assert error_fields(exc) == ["role"]
    assert await members(rpc, tenant["id"]) == {}


async def test_adding_a_member_again_changes_the_role(rpc, tenant):
    """flex-db upserts: a second add_user_to_tenant sets the role (with its audit event)."""
    user = await make_user(rpc)
    args = {"tenant_id": tenant["id"], "user_id": user["id"]}
    first = (await rpc.call("add_user_to_tenant", {**args, "role": "admin"}))["tenant_user"]
    again = (await rpc.call("add_user_to_tenant", {**args, "role": "viewer"}))["tenant_user"]
    assert again["role"] == "viewer" and again["created_at"] == first["created_at"]
    assert await members(rpc, tenant["id"]) == {user["id"]: "viewer"}
    trail = (await rpc.call("list_audit_events", {"tenant_id": tenant["id"],
                                                  "method": "add_user_to_tenant"}))["audit_events"]
    assert [(e["target_id"], e["summary"]["role"]) for e in trail] == [
        (user["id"], "admin"), (user["id"], "viewer")]


async def test_adding_a_member_again_keeps_the_role_rules(server, rpc):
    world = await World.build(rpc)
    owner, member = world.users["owner"]["id"], world.users["member"]["id"]
    async with FlexDBClient(server.url, api_key=world.keys["admin"]) as admin:
        with pytest.raises(Forbidden) as exc:  # an admin demoting the owner
            await admin.call("add_user_to_tenant", {"tenant_id": world.tid, "user_id": owner,
                                                    "role": "viewer"})
        assert "cannot change a member with the owner role" in exc.value.message
        with pytest.raises(Forbidden) as exc:  # an admin promoting a member to owner
            await admin.call("add_user_to_tenant", {"tenant_id": world.tid, "user_id": member,
                                                    "role": "owner"})
        assert "cannot grant the owner role" in exc.value.message
    me = await own_user_id(rpc)  # the platform admin created the tenant: an owner too
    await rpc.call("remove_user_from_tenant", {"tenant_id": world.tid, "user_id": me})
    async with FlexDBClient(server.url, api_key=world.keys["owner"]) as o:
        with pytest.raises(Conflict) as exc:  # the last owner demoting themselves
            await o.call("add_user_to_tenant", {"tenant_id": world.tid, "user_id": owner,
                                                "role": "admin"})
        assert "at least one owner" in exc.value.message
    assert (await members(rpc, world.tid))[owner] == "owner"
    assert (await members(rpc, world.tid))[member] == "member"


async def test_a_role_changed_by_adding_again_applies_to_the_next_call(server, rpc):
    world = await World.build(rpc)
    member = world.users["member"]["id"]
    async with FlexDBClient(server.url, api_key=world.keys["member"]) as m:
        await m.call("create_node", {"tenant_id": world.tid, "node_type_id": world.nt["id"]})
        await rpc.call("add_user_to_tenant", {"tenant_id": world.tid, "user_id": member,
                                              "role": "viewer"})
        with pytest.raises(Forbidden) as exc:
            await m.call("create_node", {"tenant_id": world.tid, "node_type_id": world.nt["id"]})
        assert exc.value.data["required_role"] == "member"


async def test_add_to_missing_tenant_is_not_found(rpc):
    user = await make_user(rpc)
    with pytest.raises(NotFound) as exc:
        await rpc.call("add_user_to_tenant", {"tenant_id": missing_id(), "user_id": user["id"]})
    assert exc.value.data["kind"] == "tenant"


async def test_add_missing_user_is_not_found(rpc, tenant):
    with pytest.raises(NotFound) as exc:
        await rpc.call("add_user_to_tenant", {"tenant_id": tenant["id"], "user_id": missing_id()})
    assert exc.value.data["kind"] == "user"


async def test_remove_user_from_tenant(rpc, tenant):
    stays, leaves = await make_user(rpc), await make_user(rpc)
    for user in (stays, leaves):
        await rpc.call("add_user_to_tenant", {"tenant_id": tenant["id"], "user_id": user["id"]})
    args = {"tenant_id": tenant["id"], "user_id": leaves["id"]}
    assert await rpc.call("remove_user_from_tenant", args) == {"success": True}
    assert await members(rpc, tenant["id"]) == {stays["id"]: "member"}
    with pytest.raises(NotFound) as exc:
        await rpc.call("remove_user_from_tenant", args)
    assert exc.value.data["kind"] == "tenant_user"
    # the user itself is untouched
    assert (await rpc.call("get_user", {"id": leaves["id"]}))["user"] == leaves


async def test_remove_non_member_is_not_found(rpc, tenant):
    user = await make_user(rpc)
    with pytest.raises(NotFound):
        await rpc.call("remove_user_from_tenant", {"tenant_id": tenant["id"],
                                                   "user_id": user["id"]})


async def test_list_tenant_users_only_lists_that_tenant(rpc):
    t1, t2 = await make_tenant(rpc), await make_tenant(rpc)
    u1, u2, both = await make_user(rpc), await make_user(rpc), await make_user(rpc)
    await rpc.call("add_user_to_tenant", {"tenant_id": t1["id"], "user_id": u1["id"],
                                          "role": "owner"})
    await rpc.call("add_user_to_tenant", {"tenant_id": t2["id"], "user_id": u2["id"]})
    await rpc.call("add_user_to_tenant", {"tenant_id": t1["id"], "user_id": both["id"],
                                          "role": "viewer"})
    await rpc.call("add_user_to_tenant", {"tenant_id": t2["id"], "user_id": both["id"],
                                          "role": "admin"})
    result = await rpc.call("list_tenant_users", {"tenant_id": t1["id"]})
    me = await own_user_id(rpc)  # the creator is the first owner
    assert [m["user_id"] for m in result["tenant_users"]] == [me, u1["id"], both["id"]]
    assert result["pagination"]["total_count"] == 3
    assert await members(rpc, t2["id"]) == {u2["id"]: "member", both["id"]: "admin"}


async def test_list_tenant_users_of_missing_tenant_is_not_found(rpc):
    with pytest.raises(NotFound) as exc:
        await rpc.call("list_tenant_users", {"tenant_id": missing_id()})
    assert exc.value.data["kind"] == "tenant"


async def test_delete_user_removes_their_memberships(rpc):
    t1, t2 = await make_tenant(rpc), await make_tenant(rpc)
    gone, stays = await make_user(rpc), await make_user(rpc)
    for t in (t1, t2):
        for u in (gone, stays):
            await rpc.call("add_user_to_tenant", {"tenant_id": t["id"], "user_id": u["id"]})
    await rpc.call("delete_user", {"id": gone["id"]})
    assert await members(rpc, t1["id"]) == {stays["id"]: "member"}
    assert await members(rpc, t2["id"]) == {stays["id"]: "member"}
    with pytest.raises(NotFound):
        await rpc.call("remove_user_from_tenant", {"tenant_id": t1["id"],
                                                   "user_id": gone["id"]})


# ---------------------------------------------------------------- races on unique keys

async def test_concurrent_adds_of_one_user_make_one_membership(rpc, tenant):
    user = await make_user(rpc)
    results = await asyncio.gather(*(
        rpc.call("add_user_to_tenant", {"tenant_id": tenant["id"], "user_id": user["id"]})
        for _ in range(10)), return_exceptions=True)
    assert all(isinstance(r, dict) for r in results), results
    assert await members(rpc, tenant["id"]) == {user["id"]: "member"}
