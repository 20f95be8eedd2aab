"""/tenants/{tenant_id}/node-types"""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated
from uuid import UUID

from fastapi import Depends, Query, Request

from rpc_server.api.params import Params

from .. import forward
from ..models import body_of, paging, result_of, wire
from . import make_router

router = make_router("node types")
if TYPE_CHECKING:  # a model made at run time is no type to mypy: see models.body_of
    CreateNodeTypeBody = Params
    UpdateNodeTypeBody = Params
    SchemaCheckBody = Params
else:
    CreateNodeTypeBody = body_of("create_node_type", exclude=("tenant_id",))
    UpdateNodeTypeBody = body_of("update_node_type", exclude=("tenant_id", "id"))
    SchemaCheckBody = body_of("check_node_type_schema", exclude=("tenant_id", "id"))
SchemaVersion = Annotated[int | None, Query(ge=1, le=2**31 - 1,
                                            description="A schema version: the node type "
                                                        "with that version's schema.")]


def _ids(tenant_id: UUID, node_type_id: UUID) -> dict:
    return {"tenant_id": str(tenant_id), "id": str(node_type_id)}


@router.post("/tenants/{tenant_id}/node-types", status_code=201,
             response_model=result_of("create_node_type"))
async def create_node_type(request: Request, tenant_id: UUID, body: CreateNodeTypeBody):
    """Create a node type; `schema` (JSON Schema draft 2020-12) validates its nodes' data."""
    params = {"tenant_id": str(tenant_id), **wire(body)}
    result = await forward.call(request, "create_node_type", params)
    return forward.created(
        result, f"/tenants/{tenant_id}/node-types/{result['node_type']['id']}")


@router.get("/tenants/{tenant_id}/node-types", response_model=result_of("list_node_types"))
async def list_node_types(request: Request, tenant_id: UUID,
                          pagination: Annotated[dict, Depends(paging)]):
    params = {"tenant_id": str(tenant_id), "pagination": pagination}
    return forward.json(await forward.call(request, "list_node_types", params))


@router.get("/tenants/{tenant_id}/node-types/{node_type_id}",
            response_model=result_of("get_node_type"))
async def get_node_type(request: Request, tenant_id: UUID, node_type_id: UUID,
                        version: SchemaVersion = None):
    params: dict = _ids(tenant_id, node_type_id)
    if version is not None:
        params["version"] = version
    return forward.json(await forward.call(request, "get_node_type", params))


@router.get("/tenants/{tenant_id}/node-types/{node_type_id}/versions",
            response_model=result_of("list_node_type_versions"))
async def list_node_type_versions(request: Request, tenant_id: UUID, node_type_id: UUID,
                                  pagination: Annotated[dict, Depends(paging)]):
    """The node type's schema versions, oldest first."""
    params = {**_ids(tenant_id, node_type_id), "pagination": pagination}
    return forward.json(await forward.call(request, "list_node_type_versions", params))


@router.post("/tenants/{tenant_id}/node-types/{node_type_id}/schema-check",
             response_model=result_of("check_node_type_schema"))
async def check_node_type_schema(request: Request, tenant_id: UUID, node_type_id: UUID,
                                 body: SchemaCheckBody):
    """A dry run: check every existing node of the type against a proposed schema."""
    params = {**_ids(tenant_id, node_type_id), **wire(body)}
    return forward.json(await forward.call(request, "check_node_type_schema", params))


@router.put("/tenants/{tenant_id}/node-types/{node_type_id}",
            response_model=result_of("update_node_type"))
@router.patch("/tenants/{tenant_id}/node-types/{node_type_id}",
              response_model=result_of("update_node_type"))
async def update_node_type(request: Request, tenant_id: UUID, node_type_id: UUID,
                           body: UpdateNodeTypeBody):
    """Change the given fields. A new `schema` (null or "" removes it) is a new schema
    version, checked against the existing nodes first (`mode`: validate or allow_invalid)."""
    params = {**_ids(tenant_id, node_type_id), **wire(body)}
    return forward.json(await forward.call(request, "update_node_type", params))


@router.delete("/tenants/{tenant_id}/node-types/{node_type_id}", status_code=204,
               response_class=forward.Response)
async def delete_node_type(request: Request, tenant_id: UUID, node_type_id: UUID):
    """Delete a node type, its nodes and their relationships."""
    await forward.call(request, "delete_node_type", _ids(tenant_id, node_type_id))
    return forward.no_content()
