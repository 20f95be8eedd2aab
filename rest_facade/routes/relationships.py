"""/tenants/{tenant_id}/relationships"""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated
from uuid import UUID

from fastapi import Depends, Query, Request

from rpc_server.api.params import Params

from .. import forward
from ..documents import RelationshipPatch, document_of, merge_patch
from ..models import body_of, paging, result_of, wire
from . import make_router

router = make_router("relationships")
if TYPE_CHECKING:  # a model made at run time is no type to mypy: see models.body_of
    CreateRelationshipBody = Params
    UpdateRelationshipBody = Params
    CreateRelationshipsBody = Params
else:
    CreateRelationshipBody = body_of("create_relationship", exclude=("tenant_id",))
    UpdateRelationshipBody = body_of("update_relationship", exclude=("tenant_id", "id"))
    CreateRelationshipsBody = body_of("create_relationships", exclude=("tenant_id",))
RelationshipTypeQuery = Annotated[str | None, Query(min_length=1, max_length=100)]


def _ids(tenant_id: UUID, relationship_id: UUID) -> dict:
    return {"tenant_id": str(tenant_id), "id": str(relationship_id)}


@router.post("/tenants/{tenant_id}/relationships", status_code=201,
             response_model=result_of("create_relationship"))
async def create_relationship(request: Request, tenant_id: UUID, body: CreateRelationshipBody):
    """Link two nodes of the tenant with a typed relationship."""
    params = {"tenant_id": str(tenant_id), **wire(body)}
    result = await forward.call(request, "create_relationship", params)
    return forward.created(
        result, f"/tenants/{tenant_id}/relationships/{result['relationship']['id']}")


@router.post("/tenants/{tenant_id}/relationships/bulk", status_code=201,
             response_model=result_of("create_relationships"))
async def create_relationships(request: Request, tenant_id: UUID,
                               body: CreateRelationshipsBody):
    """Create up to 1,000 relationships in one transaction: all are created or none."""
    params = {"tenant_id": str(tenant_id), **wire(body)}
    return forward.json(await forward.call(request, "create_relationships", params), 201)


@router.get("/tenants/{tenant_id}/relationships",
            response_model=result_of("list_relationships"))
async def list_relationships(request: Request, tenant_id: UUID,
                             pagination: Annotated[dict, Depends(paging)],
                             source_node_id: Annotated[UUID | None, Query()] = None,
                             target_node_id: Annotated[UUID | None, Query()] = None,
                             relationship_type: RelationshipTypeQuery = None):
    """List relationships, optionally from a source, to a target and/or of a type."""
    params = {"tenant_id": str(tenant_id), "pagination": pagination}
    filters = {"source_node_id": source_node_id, "target_node_id": target_node_id,
               "relationship_type": relationship_type}
    params.update((k, str(v)) for k, v in filters.items() if v is not None)
    return forward.json(await forward.call(request, "list_relationships", params))


@router.get("/tenants/{tenant_id}/relationships/{relationship_id}",
            response_model=result_of("get_relationship"))
async def get_relationship(request: Request, tenant_id: UUID, relationship_id: UUID):
    params = _ids(tenant_id, relationship_id)
    return forward.json(await forward.call(request, "get_relationship", params))


@router.put("/tenants/{tenant_id}/relationships/{relationship_id}",
            response_model=result_of("update_relationship"))
async def update_relationship(request: Request, tenant_id: UUID, relationship_id: UUID,
                              body: UpdateRelationshipBody):
    """Change the type and/or replace the data of a relationship."""
    params = {**_ids(tenant_id, relationship_id), **wire(body)}
    return forward.json(await forward.call(request, "update_relationship", params))


@router.patch("/tenants/{tenant_id}/relationships/{relationship_id}",
              response_model=result_of("update_relationship"))
async def patch_relationship(request: Request, tenant_id: UUID, relationship_id: UUID,
                             body: RelationshipPatch):
    """Change the type and/or merge-patch the data (RFC 7396: null removes a key). A
    concurrent change between the read and the write answers 409; retry."""
    params = {**_ids(tenant_id, relationship_id), **wire(body)}
    if body.data is not None:
        current = (await forward.call(request, "get_relationship",
                                      _ids(tenant_id, relationship_id)))["relationship"]
        params["expected_version"] = body.expected_version or current["version"]
        params["data"] = merge_patch(document_of(current), body.data)
    return forward.json(await forward.call(request, "update_relationship", params))


@router.delete("/tenants/{tenant_id}/relationships/{relationship_id}", status_code=204,
               response_class=forward.Response)
async def delete_relationship(request: Request, tenant_id: UUID, relationship_id: UUID):
    await forward.call(request, "delete_relationship", _ids(tenant_id, relationship_id))
    return forward.no_content()
