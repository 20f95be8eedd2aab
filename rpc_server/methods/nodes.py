"""Node methods, including the bulk create_nodes (one transaction, one INSERT)."""
from __future__ import annotations

from pydantic import Field

from rpc_server.api import results
from rpc_server.api.context import Call
from rpc_server.api.params import (
    BULK_TIMEOUT_MS,
    MAX_BULK,
    Id,
    JsonObject,
    OptionalId,
    PaginationParam,
    Params,
    Version,
)
from rpc_server.api.registry import db_method, rpc_method
from rpc_server.errors import Conflict, InvalidParams, NotFound, VersionConflict
from rpc_server.methods.common import (
    DELETED,
    check_quota,
    read_one,
    read_page,
    require_tenant,
)
from rpc_server.security.auth import tenant_role
from rpc_server.storage.ids import uuid7_sequence
from rpc_server.storage.repositories import NodeRepository, NodeTypeRepository
from rpc_server.storage.response_budget import ROW_OVERHEAD, text_bytes

NOT_READ = object()
WRITE_ATTEMPTS = 3  # validations against a node or node type that changes meanwhile


class CreateNode(Params):
    tenant_id: Id
    node_type_id: Id
    data: JsonObject = Field(default_factory=dict)


class NodeId(Params):
    id: Id
    tenant_id: Id


class UpdateNode(Params):
    id: Id
    tenant_id: Id
    data: JsonObject | None = None  # omitted: the data stays as it is (as in flex-db)
    expected_version: Version | None = None


class ListNodes(Params):
    tenant_id: Id
    node_type_id: OptionalId = None
    pagination: PaginationParam


class NodeInput(Params):
    node_type_id: Id
    data: JsonObject = Field(default_factory=dict)


class CreateNodes(Params):
    tenant_id: Id
    nodes: list[NodeInput] = Field(max_length=MAX_BULK)


@rpc_method(CreateNode, tenant_role("member"), result=results.NodeResult,
             run_db=db_method("node_type_id", "data"), tenant_must_exist=False)
async def create_node(ctx: Call, p: CreateNode) -> dict:
    """Create a node; its data must satisfy the node type's schema."""
    node_id = uuid7_sequence(1)[0]
    ctx.set_target("node", node_id)
    async with ctx.connection() as conn:
        await check_quota(ctx, conn, p.tenant_id, 1, [p.data])
        node_type = await ctx.state.node_types.get(conn, p.tenant_id, p.node_type_id)
        for _ in range(WRITE_ATTEMPTS):
            await check_data(ctx, node_type, p.data)
            row = await ctx.write(NodeRepository.INSERT_CHECKED, p.tenant_id, node_id,
                                  p.node_type_id, p.data, node_type["version"], conn=conn)
            if row is not None:
                return {"node": ctx.shaper.one(row)}
            # The cached node type was stale (changed or deleted): validate against the
            # database's (NotFound when it is gone).
            node_type = await ctx.state.node_types.read(conn, p.tenant_id, p.node_type_id)
    raise node_type_kept_changing(p.node_type_id)


@rpc_method(NodeId, tenant_role("viewer"), result=results.NodeResult,
             run_db=db_method("id"), tenant_must_exist=False)
async def get_node(ctx: Call, p: NodeId) -> dict:
    """Get a node by id."""
    row = ctx.request.prefetched_nodes.get((p.tenant_id, p.id), NOT_READ)
    if row is NOT_READ:
        # One document (FLEXDB_MAX_RESPONSE_BYTES is at least FLEXDB_MAX_BODY_BYTES): alone
        # in its response it needs no grant first (RequestContext.grant_alone).
        worst_case = ctx.state.settings.max_body_bytes + ROW_OVERHEAD
        if ctx.request.grant_alone(p.tenant_id, worst_case):
            row = await ctx.state.node_reads.get(p.tenant_id, p.id)  # coalesced
            if row is not None:
                await ctx.settle_alone(text_bytes(row["data"]) + ROW_OVERHEAD)
        else:
            granted = await ctx.reserve(worst_case)
            row = await ctx.state.node_reads.get(p.tenant_id, p.id)  # coalesced
            await ctx.settle(granted,
                             0 if row is None else text_bytes(row["data"]) + ROW_OVERHEAD)
    if row is None:
        raise NotFound("node", p.id)
    return {"node": ctx.shaper.one(row)}


@rpc_method(UpdateNode, tenant_role("member"), result=results.NodeResult,
             run_db=db_method("id", "data"), tenant_must_exist=False)
async def update_node(ctx: Call, p: UpdateNode) -> dict:
    """Replace a node's data (validated); `expected_version` guards against lost updates.
    Without `data` nothing changes: the node is answered as it is."""
    if p.data is None:
        return await unchanged_node(ctx, p)
    async with ctx.connection() as conn:
        await check_quota(ctx, conn, p.tenant_id, 0, [p.data])
        for _ in range(WRITE_ATTEMPTS):
            current = await NodeRepository(conn).versions_of(p.tenant_id, p.id)
            if current is None:
                raise NotFound("node", p.id)
            node_type_id = current["node_type_id"]
            if p.expected_version is not None and current["version"] != p.expected_version:
                raise VersionConflict("node", p.id, p.expected_version, current["version"])
            node_type = await ctx.state.node_types.get(
                conn, p.tenant_id, current["node_type_id"], version=current["type_version"])
            await check_data(ctx, node_type, p.data)
            row = await ctx.write(NodeRepository.UPDATE_CHECKED, p.tenant_id, p.id,
                                  current["node_type_id"], p.data, node_type["version"],
                                  p.expected_version, conn=conn)
            if row is not None:
                return {"node": ctx.shaper.one(row)}
            # Something changed in between (the node, its version, or its node type's
            # schema): look again.
    raise node_type_kept_changing(node_type_id)


async def unchanged_node(ctx: Call, p: UpdateNode) -> dict:
    """update_node without data: no write and no audit event, but the same answers (the
    node, NotFound, or a version conflict)."""
    async with ctx.connection() as conn:  # (a stored document: within the response's budget)
        row = await read_one(ctx, ctx.state.settings.max_body_bytes,
                             lambda: NodeRepository(conn).get(p.tenant_id, p.id),
                             lambda row: text_bytes(row["data"]))
    if p.expected_version is not None and row["version"] != p.expected_version:
        raise VersionConflict("node", p.id, p.expected_version, row["version"])
    return {"node": ctx.shaper.one(row)}


async def check_nodes(ctx: Call, nodes: list[NodeInput], node_types: dict) -> None:
    """Each node's type exists and its data satisfies that type's schema."""
    checks = []
    for index, node in enumerate(nodes):
        node_type = node_types.get(node.node_type_id)
        if node_type is None:
            raise NotFound("node_type", node.node_type_id, index=index,
                           message=f"nodes.{index}: node_type not found")
        checks.append((node_type, node.data, f"nodes.{index}.data", {"index": index}))
    errors = await ctx.validators.errors_of_many(checks)
    if errors:
        raise InvalidParams(errors=errors)


async def check_data(ctx: Call, node_type, data: dict) -> None:
    errors = await ctx.validators.errors(node_type, data)
    if errors:
        raise InvalidParams(errors=errors)


def node_type_kept_changing(node_type_id) -> Conflict:
    return Conflict("the node or its node type kept changing during the write; retry",
                    kind="node_type", id=str(node_type_id))


@rpc_method(NodeId, tenant_role("member"), result=results.Deleted,
             run_db=db_method("id"), tenant_must_exist=False)
async def delete_node(ctx: Call, p: NodeId) -> dict:
    """Delete a node and its relationships."""
    async with ctx.transaction() as conn:
        await NodeRepository(conn).delete(p.tenant_id, p.id)
    return DELETED


@rpc_method(ListNodes, tenant_role("viewer"), result=results.NodeList,
             run_db=db_method(), tenant_must_exist=True)
async def list_nodes(ctx: Call, p: ListNodes) -> dict:
    """List a tenant's nodes, optionally of one node type."""
    async with ctx.connection() as conn:
        page = await read_page(ctx, p.pagination, ctx.state.settings.max_body_bytes,
                               lambda max_bytes: NodeRepository(conn).list(
                                   p.tenant_id, p.node_type_id, p.pagination, max_bytes))
        if not page.rows:  # rows prove the tenant exists; no rows may mean it does not
            await require_tenant(ctx, conn, p.tenant_id)
    return ctx.shaper.page("nodes", page)


@rpc_method(CreateNodes, tenant_role("member"), result=results.NodesCreated,
             run_db=db_method("nodes"), tenant_must_exist=True)
async def create_nodes(ctx: Call, p: CreateNodes) -> dict:
    """Create up to 1,000 nodes in one transaction: all are created or none."""
    async with ctx.heavy_transaction(BULK_TIMEOUT_MS, "The bulk create") as conn:
        if not p.nodes:
            await require_tenant(ctx, conn, p.tenant_id)
            return {"nodes": []}
        await check_quota(ctx, conn, p.tenant_id, len(p.nodes), [n.data for n in p.nodes])
        type_ids = list({n.node_type_id for n in p.nodes})
        types = NodeTypeRepository(conn)
        node_types = await types.get_many(p.tenant_id, type_ids)
        await check_nodes(ctx, p.nodes, node_types)
        # As create_node's checked INSERT: no node is stored against a node type version
        # that is not current at commit. The lock makes update_node_type wait for this
        # commit; a node type that changed while the data was validated is validated again.
        versions = {type_id: row["version"] for type_id, row in node_types.items()}
        if await types.lock_versions(p.tenant_id, type_ids) != versions:
            await check_nodes(ctx, p.nodes, await types.get_many(p.tenant_id, type_ids))
        ids = uuid7_sequence(len(p.nodes))
        rows = await NodeRepository(conn).create_many(
            p.tenant_id, ids, [n.node_type_id for n in p.nodes], [n.data for n in p.nodes])
    return {"nodes": ctx.shaper.many(rows)}
