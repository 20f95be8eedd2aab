"""/tenants"""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated
from uuid import UUID

from fastapi import Depends, Request

from rpc_server.api.params import Params

from .. import forward
from ..models import body_of, paging, result_of, wire
from . import make_router

router = make_router("tenants")
if TYPE_CHECKING:  # a model made at run time is no type to mypy: see models.body_of
    CreateTenantBody = Params
    UpdateTenantBody = Params
else:
    CreateTenantBody = body_of("create_tenant")
    UpdateTenantBody = body_of("update_tenant", exclude=("id",))


@router.post("/tenants", status_code=201, response_model=result_of("create_tenant"))
async def create_tenant(request: Request, body: CreateTenantBody):
    """Create a tenant; the caller becomes its owner."""
    result = await forward.call(request, "create_tenant", wire(body))
    return forward.created(result, f"/tenants/{result['tenant']['id']}")


@router.get("/tenants", response_model=result_of("list_tenants"))
async def list_tenants(request: Request, pagination: Annotated[dict, Depends(paging)]):
    """The tenants the caller is a member of (all of them for a platform admin)."""
    return forward.json(await forward.call(request, "list_tenants", {"pagination": pagination}))


@router.get("/tenants/{tenant_id}", response_model=result_of("get_tenant"))
async def get_tenant(request: Request, tenant_id: UUID):
    return forward.json(await forward.call(request, "get_tenant", {"id": str(tenant_id)}))


@router.get("/tenants/{tenant_id}/usage", response_model=result_of("get_tenant_usage"))
async def get_tenant_usage(request: Request, tenant_id: UUID):
    """What the tenant stores (nodes, bytes of documents) against its caps (admins)."""
    return forward.json(await forward.call(request, "get_tenant_usage",
                                           {"tenant_id": str(tenant_id)}))


@router.put("/tenants/{tenant_id}", response_model=result_of("update_tenant"))
@router.patch("/tenants/{tenant_id}", response_model=result_of("update_tenant"))
async def update_tenant(request: Request, tenant_id: UUID, body: UpdateTenantBody):
    """Change the given fields (absent = unchanged); `expected_version` guards against
    lost updates (409 when it does not match)."""
    params = {"id": str(tenant_id), **wire(body)}
    return forward.json(await forward.call(request, "update_tenant", params))


@router.delete("/tenants/{tenant_id}", status_code=204, response_class=forward.Response)
async def delete_tenant(request: Request, tenant_id: UUID):
    """Delete a tenant and everything in it."""
    await forward.call(request, "delete_tenant", {"id": str(tenant_id)})
    return forward.no_content()
