"""Relationship methods, including the bulk create_relationships."""
from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field

from rpc_server.api import results
from rpc_server.api.context import Call
from rpc_server.api.params import (
    BULK_TIMEOUT_MS,
    EMPTY_MEANS_NONE,
    MAX_BULK,
    Id,
    JsonObject,
    OptionalId,
    PaginationParam,
    Params,
    RelationshipType,
    Version,
)
from rpc_server.api.registry import db_method, rpc_method
from rpc_server.errors import NotFound
from rpc_server.methods.common import (
    DELETED,
    changes_of,
    check_quota,
    json_size,
    read_one,
    read_page,
    require_changes,
    require_tenant,
)
from rpc_server.security.auth import tenant_role
from rpc_server.storage.ids import uuid7_sequence
from rpc_server.storage.repositories import NodeRepository, RelationshipRepository

UPDATABLE = ("relationship_type", "data")


class CreateRelationship(Params):
    tenant_id: Id
    source_node_id: Id
    target_node_id: Id
    relationship_type: RelationshipType
    data: JsonObject = Field(default_factory=dict)


class RelationshipId(Params):
    id: Id
    tenant_id: Id


class UpdateRelationship(Params):
    id: Id
    tenant_id: Id
    relationship_type: RelationshipType | None = None
    data: JsonObject | None = None
    expected_version: Version | None = None


class ListRelationships(Params):
    tenant_id: Id
    source_node_id: OptionalId = None
    target_node_id: OptionalId = None
    relationship_type: Annotated[RelationshipType | None,
                                 BeforeValidator(lambda v: None if v == "" else v),
                                 EMPTY_MEANS_NONE] = None
    pagination: PaginationParam


class RelationshipInput(Params):
    source_node_id: Id
    target_node_id: Id
    relationship_type: RelationshipType
    data: JsonObject = Field(default_factory=dict)


class CreateRelationships(Params):
    tenant_id: Id
    relationships: list[RelationshipInput] = Field(max_length=MAX_BULK)


@rpc_method(CreateRelationship, tenant_role("member"), result=results.RelationshipResult,
             run_db=db_method("source_node_id", "target_node_id", "relationship_type", "data"),
             tenant_must_exist=False)
async def create_relationship(ctx: Call, p: CreateRelationship) -> dict:
    """Link two nodes of the same tenant."""
    relationship_id = uuid7_sequence(1)[0]
    ctx.set_target("relationship", relationship_id)
    async with ctx.connection() as conn:
        await check_quota(ctx, conn, p.tenant_id, 0, [p.data])
        row = await ctx.write(RelationshipRepository.INSERT, p.tenant_id, relationship_id,
                              p.source_node_id, p.target_node_id, p.relationship_type, p.data,
                              conn=conn)
    assert row is not None  # an INSERT returns its row (or raises)
    return {"relationship": ctx.shaper.one(row)}


@rpc_method(RelationshipId, tenant_role("viewer"), result=results.RelationshipResult,
             run_db=db_method("id"), tenant_must_exist=False)
async def get_relationship(ctx: Call, p: RelationshipId) -> dict:
    """Get a relationship by id."""
    async with ctx.connection() as conn:
        row = await read_one(ctx, ctx.state.settings.max_body_bytes,
                             lambda: RelationshipRepository(conn).get(p.tenant_id, p.id),
                             lambda row: json_size(row["data"]))
    return {"relationship": ctx.shaper.one(row)}


@rpc_method(UpdateRelationship, tenant_role("member"), result=results.RelationshipResult,
             run_db=db_method("id"), tenant_must_exist=False)
async def update_relationship(ctx: Call, p: UpdateRelationship) -> dict:
    """Change a relationship's type or replace its data."""
    changes = changes_of(p, UPDATABLE)
    require_changes(changes, UPDATABLE)
    async with ctx.transaction() as conn:
        if "data" in changes:
            await check_quota(ctx, conn, p.tenant_id, 0, [changes["data"]])
        # The answer holds the stored data when the call sends none: within the budget.
        row = await read_one(ctx, 0 if "data" in changes else ctx.state.settings.max_body_bytes,
                             lambda: RelationshipRepository(conn).update(
                                 p.tenant_id, p.id, changes, p.expected_version),
                             lambda row: json_size(row["data"]))
    return {"relationship": ctx.shaper.one(row)}


@rpc_method(RelationshipId, tenant_role("member"), result=results.Deleted,
             run_db=db_method("id"), tenant_must_exist=False)
async def delete_relationship(ctx: Call, p: RelationshipId) -> dict:
    """Delete a relationship."""
    async with ctx.transaction() as conn:
        await RelationshipRepository(conn).delete(p.tenant_id, p.id)
    return DELETED


@rpc_method(ListRelationships, tenant_role("viewer"), result=results.RelationshipList,
             run_db=db_method(), tenant_must_exist=True)
async def list_relationships(ctx: Call, p: ListRelationships) -> dict:
    """List a tenant's relationships, filtered by source, target or type."""
    filters = ((p.source_node_id is not None) + (p.target_node_id is not None)
               + (p.relationship_type is not None))
    async with ctx.list_connection(filters > 1) as conn:
        page = await read_page(ctx, p.pagination, ctx.state.settings.max_body_bytes,
                               lambda max_bytes: RelationshipRepository(conn).list(
                                   p.tenant_id, p.pagination, p.source_node_id,
                                   p.target_node_id, p.relationship_type, max_bytes))
        if not page.rows:  # rows prove the tenant exists; no rows may mean it does not
            await require_tenant(ctx, conn, p.tenant_id)
    return ctx.shaper.page("relationships", page)


@rpc_method(CreateRelationships, tenant_role("member"), result=results.RelationshipsCreated,
             run_db=None, tenant_must_exist=True)
async def create_relationships(ctx: Call, p: CreateRelationships) -> dict:
    """Create up to 1,000 relationships in one transaction: all are created or none."""
    items = p.relationships
    async with ctx.heavy_transaction(BULK_TIMEOUT_MS, "The bulk create") as conn:
        if not items:
            await require_tenant(ctx, conn, p.tenant_id)
            return {"relationships": []}
        await check_quota(ctx, conn, p.tenant_id, 0, [i.data for i in items])
        wanted = list({i.source_node_id for i in items} | {i.target_node_id for i in items})
        existing = await NodeRepository(conn).existing_ids(p.tenant_id, wanted)
        for index, item in enumerate(items):
            for end in ("source_node", "target_node"):
                node_id = getattr(item, end + "_id")
                if node_id not in existing:
                    raise NotFound(end, node_id, index=index,
                                   message=f"relationships.{index}: {end} not found")
        ids = uuid7_sequence(len(items))
        rows = await RelationshipRepository(conn).create_many(
            p.tenant_id, ids, [i.source_node_id for i in items], [i.target_node_id for i in items],
            [i.relationship_type for i in items], [i.data for i in items])
    return {"relationships": ctx.shaper.many(rows)}
