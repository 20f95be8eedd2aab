"""Tenants, users and tenant membership: CRUD, validation, uniqueness, optimistic
concurrency and what deleting a tenant or a user takes with it."""
from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from rpc_server.client import Conflict, FlexDBClient, Forbidden, InvalidParams, NotFound

from .conftest import error_fields, missing_id, own_user_id, unique
from .test_auth import World

# ---------------------------------------------------------------- helpers

def email() -> str:
    return f"{unique('u')}@example.com"


async def make_tenant(rpc, slug=None, name="Acme") -> dict:
    return (await rpc.call("create_tenant", {"slug": slug or unique("t"), "name": name}))["tenant"]


async def make_user(rpc, address=None, display_name="Ada") -> dict:
    return (await rpc.call("create_user", {"email": address or email(),
                                           "display_name": display_name}))["user"]


async def list_all(rpc, method, key, params=None) -> list[dict]:
    """Every item of a paginated list, walking all pages."""
    items, token = [], ""
    while True:
        page = await rpc.call(method, {**(params or {}),
                                       "pagination": {"page_size": 1000, "page_token": token}})
        items += page[key]
        token = page["pagination"]["next_page_token"]
        if not token:
            return items


async def members(rpc, tenant_id) -> dict[str, str]:
    """user_id -> role of a tenant's members, other than its creator (the caller, owner)."""
    listed = await list_all(rpc, "list_tenant_users", "tenant_users", {"tenant_id": tenant_id})
    me = await own_user_id(rpc)
    return {m["user_id"]: m["role"] for m in listed if m["user_id"] != me}


# ---------------------------------------------------------------- tenants

async def test_create_and_get_tenant(rpc):
    slug = unique("acme")
    created = await make_tenant(rpc, slug, "Acme Inc")
    assert created["slug"] == slug and created["name"] == "Acme Inc"
    assert created["status"] == "active" and created["version"] == 1
    uuid.UUID(created["id"])
    fetched = (await rpc.call("get_tenant", {"id": created["id"]}))["tenant"]
    assert fetched == created


async def test_duplicate_slug_is_a_conflict(rpc):
    slug = unique("dup")
    await make_tenant(rpc, slug)
    with pytest.raises(Conflict) as exc:
        await make_tenant(rpc, slug, "Other")
    assert exc.value.code == -32004
    assert exc.value.data["type"] == "conflict" and exc.value.data["field"] == "slug"


async def test_update_to_a_taken_slug_is_a_conflict(rpc):
    taken = (await make_tenant(rpc))["slug"]
    tenant = await make_tenant(rpc)
    with pytest.raises(Conflict) as exc:
        await rpc.call("update_tenant", {"id": tenant["id"], "slug": taken})
    assert exc.value.data["type"] == "conflict" and exc.value.data["field"] == "slug"
    assert (await rpc.call("get_tenant", {"id": tenant["id"]}))["tenant"] == tenant


@pytest.mark.parametrize("slug", ["Upper", "has space", "-leading", "trailing-", "", "x" * 64,
                                  "dots.not.allowed"])
async def test_bad_slug_is_invalid_params(rpc, slug):
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("create_tenant", {"slug": slug, "name": "Acme"})
    assert exc.value.code == -32602
    assert error_fields(exc) == ["slug"]


@pytest.mark.parametrize("name", ["", "n" * 201, " padded", "tab\there"])
async def test_bad_tenant_name_is_invalid_params(rpc, name):
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("create_tenant", {"slug": unique("t"), "name": name})
    assert error_fields(exc) == ["name"]


async def test_longest_allowed_name_is_accepted(rpc):
    tenant = await make_tenant(rpc, name="n" * 200)
    assert tenant["name"] == "n" * 200


@pytest.mark.parametrize("method", ["get_tenant", "delete_tenant", "get_user", "delete_user"])
async def test_non_uuid_id_is_invalid_params(rpc, method):
    with pytest.raises(InvalidParams) as exc:
        await rpc.call(method, {"id": "not-a-uuid"})
    assert error_fields(exc) == ["id"]


@pytest.mark.parametrize("method", ["get_tenant", "delete_tenant"])
async def test_missing_tenant_is_not_found(rpc, method):
    with pytest.raises(NotFound) as exc:
        await rpc.call(method, {"id": missing_id()})
    assert exc.value.code == -32001
    assert exc.value.data["type"] == "not_found" and exc.value.data["kind"] == "tenant"


async def test_update_missing_tenant_is_not_found(rpc):
    with pytest.raises(NotFound) as exc:
        await rpc.call("update_tenant", {"id": missing_id(), "name": "X"})
    assert exc.value.data["kind"] == "tenant"


async def test_update_tenant_with_matching_version_bumps_version(rpc):
    tenant = await make_tenant(rpc)
    new_slug = unique("renamed")
    updated = (await rpc.call("update_tenant", {"id": tenant["id"], "name": "Renamed",
                                                "slug": new_slug, "status": "suspended",
                                                "expected_version": 1}))["tenant"]
    assert updated["version"] == 2
    assert (updated["name"], updated["slug"], updated["status"]) == ("Renamed", new_slug,
                                                                     "suspended")
    again = (await rpc.call("update_tenant", {"id": tenant["id"], "name": "Again",
                                              "expected_version": 2}))["tenant"]
    assert again["version"] == 3 and again["slug"] == new_slug
    assert (await rpc.call("get_tenant", {"id": tenant["id"]}))["tenant"] == again


async def test_update_tenant_without_expected_version_still_bumps_version(rpc):
    tenant = await make_tenant(rpc)
    updated = (await rpc.call("update_tenant", {"id": tenant["id"], "name": "Plain"}))["tenant"]
    assert updated["version"] == 2 and updated["name"] == "Plain"


async def test_update_tenant_with_stale_version_is_a_version_conflict(rpc):
    tenant = await make_tenant(rpc)
    await rpc.call("update_tenant", {"id": tenant["id"], "name": "First"})
    with pytest.raises(Conflict) as exc:
        await rpc.call("update_tenant", {"id": tenant["id"], "name": "Lost",
                                         "expected_version": 1})
    assert exc.value.code == -32004
    data = exc.value.data
    assert data["type"] == "version_conflict"
    assert data["expected_version"] == 1 and data["current_version"] == 2
    current = (await rpc.call("get_tenant", {"id": tenant["id"]}))["tenant"]
    assert current["name"] == "First" and current["version"] == 2


@pytest.mark.parametrize("extra", [{}, {"expected_version": 1}, {"name": None}])
async def test_update_tenant_with_nothing_to_change_is_invalid_params(rpc, extra):
    tenant = await make_tenant(rpc)
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("update_tenant", {"id": tenant["id"], **extra})
    assert error_fields(exc) == ["params"]
    assert (await rpc.call("get_tenant", {"id": tenant["id"]}))["tenant"]["version"] == 1


async def test_update_tenant_validates_fields(rpc):
    tenant = await make_tenant(rpc)
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("update_tenant", {"id": tenant["id"], "slug": "Bad Slug"})
    assert error_fields(exc) == ["slug"]
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("update_tenant", {"id": tenant["id"], "expected_version": 0})
    assert error_fields(exc) == ["expected_version"]


async def test_delete_tenant(rpc):
    tenant = await make_tenant(rpc)
    assert await rpc.call("delete_tenant", {"id": tenant["id"]}) == {"success": True}
    with pytest.raises(NotFound):
        await rpc.call("get_tenant", {"id": tenant["id"]})
    with pytest.raises(NotFound):
        await rpc.call("delete_tenant", {"id": tenant["id"]})


async def test_list_tenants_contains_created_ones_oldest_first(rpc):
    a, b = await make_tenant(rpc), await make_tenant(rpc)
    seen = [t["id"] for t in await list_all(rpc, "list_tenants", "tenants")]
    assert seen.index(a["id"]) < seen.index(b["id"])
    assert len(seen) == len(set(seen))


async def test_list_tenants_page_size(rpc):
    await make_tenant(rpc)
    await make_tenant(rpc)
    page = await rpc.call("list_tenants", {"pagination": {"page_size": 1}})
    assert len(page["tenants"]) == 1 and page["pagination"]["next_page_token"]
    assert page["pagination"]["total_count"] >= 2
    following = await rpc.call("list_tenants", {"pagination": {
        "page_size": 1, "page_token": page["pagination"]["next_page_token"]}})
    assert following["tenants"][0]["id"] != page["tenants"][0]["id"]


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


# ---------------------------------------------------------------- deleting a tenant

async def test_delete_tenant_removes_everything_it_owns(rpc, database_url):
    doomed, other = await make_tenant(rpc), await make_tenant(rpc)
    user = await make_user(rpc)
    owned = {}
    for t in (doomed, other):
        tid = t["id"]
        await rpc.call("add_user_to_tenant", {"tenant_id": tid, "user_id": user["id"]})
        nt = (await rpc.call("create_node_type", {"tenant_id": tid, "name": "Thing"}))["node_type"]
        a = (await rpc.call("create_node", {"tenant_id": tid, "node_type_id": nt["id"]}))["node"]
        b = (await rpc.call("create_node", {"tenant_id": tid, "node_type_id": nt["id"]}))["node"]
        rel = (await rpc.call("create_relationship", {
            "tenant_id": tid, "source_node_id": a["id"], "target_node_id": b["id"],
            "relationship_type": "links"}))["relationship"]
        owned[tid] = {"node_type": nt["id"], "node": a["id"], "relationship": rel["id"]}

    assert await rpc.call("delete_tenant", {"id": doomed["id"]}) == {"success": True}

    gone = owned[doomed["id"]]
    for kind, item_id in gone.items():
        with pytest.raises(NotFound) as exc:
            await rpc.call(f"get_{kind}", {"tenant_id": doomed["id"], "id": item_id})
        assert exc.value.data["kind"] == kind
    with pytest.raises(NotFound) as exc:
        await rpc.call("list_tenant_users", {"tenant_id": doomed["id"]})
    assert exc.value.data["kind"] == "tenant"
    with pytest.raises(NotFound):
        await rpc.call("remove_user_from_tenant", {"tenant_id": doomed["id"],
                                                   "user_id": user["id"]})

    # The other tenant and the user are untouched.
    kept = owned[other["id"]]
    for kind, item_id in kept.items():
        await rpc.call(f"get_{kind}", {"tenant_id": other["id"], "id": item_id})
    assert await members(rpc, other["id"]) == {user["id"]: "member"}
    await rpc.call("get_user", {"id": user["id"]})

    # And no row of the deleted tenant is left anywhere.
    conn = await asyncpg.connect(database_url)
    try:
        for table in ("tenant_users", "node_types", "nodes", "relationships"):
            count = await conn.fetchval(f"SELECT count(*) FROM {table} WHERE tenant_id = $1",
                                        uuid.UUID(doomed["id"]))
            assert count == 0, table
    finally:
        await conn.close()


# ---------------------------------------------------------------- races on unique keys

async def test_concurrent_creates_with_one_slug_exactly_one_wins(rpc):
    slug = unique("race")
    results = await asyncio.gather(*(rpc.call("create_tenant", {"slug": slug, "name": f"n{i}"})
                                     for i in range(10)), return_exceptions=True)
    winners = [r for r in results if isinstance(r, dict)]
    losers = [r for r in results if not isinstance(r, dict)]
    assert len(winners) == 1, results
    assert all(isinstance(e, Conflict) and e.data["field"] == "slug" for e in losers), losers


async def test_concurrent_adds_of_one_user_make_one_membership(rpc, tenant):
    user = await make_user(rpc)
    results = await asyncio.gather(*(
        rpc.call("add_user_to_tenant", {"tenant_id": tenant["id"], "user_id": user["id"]})
        for _ in range(10)), return_exceptions=True)
    assert all(isinstance(r, dict) for r in results), results
    assert await members(rpc, tenant["id"]) == {user["id"]: "member"}
