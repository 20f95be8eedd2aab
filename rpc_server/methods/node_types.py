"""Node type methods. A node type's optional JSON Schema (Draft 2020-12) validates the
data of its nodes on every create and update."""
from __future__ import annotations

from pydantic import Field

from rpc_server.api import results
from rpc_server.api.context import Call
from rpc_server.api.params import (
    MAX_DESCRIPTION,
    Description,
    Id,
    JsonSchemaDoc,
    Name,
    PaginationParam,
    Params,
    Version,
)
from rpc_server.api.registry import rpc_method
from rpc_server.methods.common import (
    DELETED,
    changes_of,
    json_size,
    read_one,
    read_page,
    require_changes,
    require_tenant,
)
from rpc_server.security.auth import tenant_role
from rpc_server.storage.repositories import NodeTypeRepository

UPDATABLE = ("name", "description", "schema")


class CreateNodeType(Params):
    tenant_id: Id
    name: Name
    description: Description = ""
    schema_: JsonSchemaDoc = Field(None, alias="schema")


class NodeTypeId(Params):
    id: Id
    tenant_id: Id


class UpdateNodeType(Params):
    id: Id
    tenant_id: Id
    name: Name | None = None
    description: Description | None = None
    schema_: JsonSchemaDoc = Field(None, alias="schema")
    expected_version: Version | None = None


class ListNodeTypes(Params):
    tenant_id: Id
    pagination: PaginationParam


@rpc_method(CreateNodeType, tenant_role("admin"), result=results.NodeTypeResult,
             run_db=None, tenant_must_exist=False)
async def create_node_type(ctx: Call, p: CreateNodeType) -> dict:
    """Create a node type; `schema` (object or JSON string) validates its nodes' data."""
    await ctx.validators.check_schema(p.tenant_id, p.schema_)
    async with ctx.transaction() as conn:
        principal = await ctx.principal()
        row = await NodeTypeRepository(conn).create(p.tenant_id, p.name, p.description, p.schema_,
                                                    principal.user_id)
        ctx.set_target("node_type", row["id"])
    return {"node_type": ctx.shaper.one(row)}


@rpc_method(NodeTypeId, tenant_role("viewer"), result=results.NodeTypeResult,
             run_db=None, tenant_must_exist=False)
async def get_node_type(ctx: Call, p: NodeTypeId) -> dict:
    """Get a node type by id."""
    async with ctx.connection() as conn:
        row = await read_one(ctx, ctx.state.settings.max_schema_bytes + MAX_DESCRIPTION,
                             lambda: NodeTypeRepository(conn).get(p.tenant_id, p.id),
                             lambda row: json_size(row["schema"], row["description"]))
    return {"node_type": ctx.shaper.one(row)}


@rpc_method(UpdateNodeType, tenant_role("admin"), result=results.NodeTypeResult,
             run_db=None, tenant_must_exist=False)
async def update_node_type(ctx: Call, p: UpdateNodeType) -> dict:
    """Update a node type. `schema` null or "" removes the schema. Existing nodes are not
    re-validated; later creates and updates are."""
    changes = changes_of(p, ("name", "description"))
    if "schema_" in p.model_fields_set:  # null or "" removes the schema
        await ctx.validators.check_schema(p.tenant_id, p.schema_)
        changes["schema"] = p.schema_
    require_changes(changes, UPDATABLE)
    async with ctx.transaction() as conn:
        row = await NodeTypeRepository(conn).update(p.tenant_id, p.id, changes,
                                                    p.expected_version)
    ctx.state.node_types.forget(p.tenant_id, p.id)
    return {"node_type": ctx.shaper.one(row)}


@rpc_method(NodeTypeId, tenant_role("admin"), result=results.Deleted,
             run_db=None, tenant_must_exist=False)
async def delete_node_type(ctx: Call, p: NodeTypeId) -> dict:
    """Delete a node type, its nodes and their relationships."""
    async with ctx.transaction() as conn:
        await NodeTypeRepository(conn).delete(p.tenant_id, p.id)
    ctx.state.node_types.forget(p.tenant_id, p.id)
    return DELETED


@rpc_method(ListNodeTypes, tenant_role("viewer"), result=results.NodeTypeList,
             run_db=None, tenant_must_exist=True)
async def list_node_types(ctx: Call, p: ListNodeTypes) -> dict:
    """List a tenant's node types."""
    async with ctx.connection() as conn:
        await require_tenant(ctx, conn, p.tenant_id)
        page = await read_page(ctx, p.pagination,
                               ctx.state.settings.max_schema_bytes + MAX_DESCRIPTION,
                               lambda max_bytes: NodeTypeRepository(conn).list(
                                   p.tenant_id, p.pagination, max_bytes))
    return ctx.shaper.page("node_types", page)
