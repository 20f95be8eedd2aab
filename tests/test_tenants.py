"""Tenants: CRUD, validation, slug uniqueness (also under concurrent creates),
optimistic concurrency and what deleting a tenant takes with it. Users and membership:
test_users.py."""
from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from rpc_server.client import Conflict, InvalidParams, NotFound

from .conftest import (
    error_fields,
    list_all,
    make_tenant,
    make_user,
    members,
    missing_id,
    unique,
)

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
