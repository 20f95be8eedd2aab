"""/tenants/{tenant_id}/nodes"""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated
from uuid import UUID

from fastapi import Depends, Query, Request

from rpc_server.api.params import Params

from .. import forward
from ..documents import NodePatch, document_of, merge_patch
from ..models import body_of, paging, result_of, wire
from . import make_router

router = make_router("nodes")
if TYPE_CHECKING:  # a model made at run time is no type to mypy: see models.body_of
    CreateNodeBody = Params
    ReplaceNodeBody = Params
    CreateNodesBody = Params
else:
    CreateNodeBody = body_of("create_node", exclude=("tenant_id",))
    ReplaceNodeBody = body_of("update_node", exclude=("tenant_id", "id"), name="ReplaceNodeBody")
    CreateNodesBody = body_of("create_nodes", exclude=("tenant_id",))


def _ids(tenant_id: UUID, node_id: UUID) -> dict:
    return {"tenant_id": str(tenant_id), "id": str(node_id)}


@router.post("/tenants/{tenant_id}/nodes", status_code=201,
             response_model=result_of("create_node"))
async def create_node(request: Request, tenant_id: UUID, body: CreateNodeBody):
    """Create a node; its data must satisfy the node type's schema."""
    params = {"tenant_id": str(tenant_id), **wire(body)}
    result = await forward.call(request, "create_node", params)
    return forward.created(result, f"/tenants/{tenant_id}/nodes/{result['node']['id']}")


@router.post("/tenants/{tenant_id}/nodes/bulk", status_code=201,
             response_model=result_of("create_nodes"))
async def create_nodes(request: Request, tenant_id: UUID, body: CreateNodesBody):
    """Create up to 1,000 nodes in one transaction: all are created or none."""
    params = {"tenant_id": str(tenant_id), **wire(body)}
    return forward.json(await forward.call(request, "create_nodes", params), 201)


@router.get("/tenants/{tenant_id}/nodes", response_model=result_of("list_nodes"))
async def list_nodes(request: Request, tenant_id: UUID,
                     pagination: Annotated[dict, Depends(paging)],
                     node_type_id: Annotated[UUID | None, Query()] = None):
    """List a tenant's nodes, optionally of one node type."""
    params = {"tenant_id": str(tenant_id), "pagination": pagination}
    if node_type_id is not None:
        params["node_type_id"] = str(node_type_id)
    return forward.json(await forward.call(request, "list_nodes", params))


@router.get("/tenants/{tenant_id}/nodes/{node_id}", response_model=result_of("get_node"))
async def get_node(request: Request, tenant_id: UUID, node_id: UUID):
    return forward.json(await forward.call(request, "get_node", _ids(tenant_id, node_id)))


@router.put("/tenants/{tenant_id}/nodes/{node_id}", response_model=result_of("update_node"))
async def replace_node(request: Request, tenant_id: UUID, node_id: UUID,
                       body: ReplaceNodeBody):
    """Replace a node's data (validated against its type's schema)."""
    params = {**_ids(tenant_id, node_id), **wire(body)}
    return forward.json(await forward.call(request, "update_node", params))


@router.patch("/tenants/{tenant_id}/nodes/{node_id}", response_model=result_of("update_node"))
async def patch_node(request: Request, tenant_id: UUID, node_id: UUID, body: NodePatch):
    """Merge-patch a node's data (RFC 7396: null removes a key). A concurrent change
    between the read and the write answers 409; retry."""
    current = (await forward.call(request, "get_node", _ids(tenant_id, node_id)))["node"]
    # The caller's expected_version, else the version read: rpc_server refuses the write
    # (409) if the node changed, and checks the caller's role first, as for any update.
    params = {**_ids(tenant_id, node_id),
              "expected_version": body.expected_version or current["version"],
              "data": merge_patch(document_of(current), body.data)}
    return forward.json(await forward.call(request, "update_node", params))


@router.delete("/tenants/{tenant_id}/nodes/{node_id}", status_code=204,
               response_class=forward.Response)
async def delete_node(request: Request, tenant_id: UUID, node_id: UUID):
    """Delete a node and its relationships."""
    await forward.call(request, "delete_node", _ids(tenant_id, node_id))
    return forward.no_content()
