"""/users and a tenant's members (/tenants/{tenant_id}/users)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated
from uuid import UUID

from fastapi import Depends, Request

from rpc_server.api.params import Params

from .. import forward
from ..models import body_of, paging, result_of, wire
from . import make_router

router = make_router("users")
if TYPE_CHECKING:  # a model made at run time is no type to mypy: see models.body_of
    CreateUserBody = Params
    UpdateUserBody = Params
    AddMemberBody = Params
    UpdateMemberBody = Params
else:
    CreateUserBody = body_of("create_user")
    UpdateUserBody = body_of("update_user", exclude=("id",))
    AddMemberBody = body_of("add_user_to_tenant", exclude=("tenant_id",), name="AddMemberBody")
    UpdateMemberBody = body_of("update_tenant_user_role", exclude=("tenant_id", "user_id"),
                               name="UpdateMemberBody")


@router.post("/users", status_code=201, response_model=result_of("create_user"))
async def create_user(request: Request, body: CreateUserBody):
    """Create a user (platform admin)."""
    result = await forward.call(request, "create_user", wire(body))
    return forward.created(result, f"/users/{result['user']['id']}")


@router.get("/users", response_model=result_of("list_users"))
async def list_users(request: Request, pagination: Annotated[dict, Depends(paging)]):
    """Every user (platform admin)."""
    return forward.json(await forward.call(request, "list_users", {"pagination": pagination}))


@router.get("/users/{user_id}", response_model=result_of("get_user"))
async def get_user(request: Request, user_id: UUID):
    return forward.json(await forward.call(request, "get_user", {"id": str(user_id)}))


@router.put("/users/{user_id}", response_model=result_of("update_user"))
@router.patch("/users/{user_id}", response_model=result_of("update_user"))
async def update_user(request: Request, user_id: UUID, body: UpdateUserBody):
    """Change the given fields (platform admin)."""
    params = {"id": str(user_id), **wire(body)}
    return forward.json(await forward.call(request, "update_user", params))


@router.delete("/users/{user_id}", status_code=204, response_class=forward.Response)
async def delete_user(request: Request, user_id: UUID):
    await forward.call(request, "delete_user", {"id": str(user_id)})
    return forward.no_content()


@router.post("/tenants/{tenant_id}/users", status_code=201,
             response_model=result_of("add_user_to_tenant"))
async def add_user_to_tenant(request: Request, tenant_id: UUID, body: AddMemberBody):
    """Make a user a member of the tenant with a role (default member)."""
    params = {"tenant_id": str(tenant_id), **wire(body)}
    result = await forward.call(request, "add_user_to_tenant", params)
    return forward.created(result, f"/tenants/{tenant_id}/users/{params['user_id']}")


@router.get("/tenants/{tenant_id}/users", response_model=result_of("list_tenant_users"))
async def list_tenant_users(request: Request, tenant_id: UUID,
                            pagination: Annotated[dict, Depends(paging)]):
    params = {"tenant_id": str(tenant_id), "pagination": pagination}
    return forward.json(await forward.call(request, "list_tenant_users", params))


@router.get("/tenants/{tenant_id}/users/{user_id}", response_model=result_of("get_tenant_user"))
async def get_tenant_user(request: Request, tenant_id: UUID, user_id: UUID):
    """One member of the tenant: the user id and role."""
    params = {"tenant_id": str(tenant_id), "user_id": str(user_id)}
    return forward.json(await forward.call(request, "get_tenant_user", params))


@router.put("/tenants/{tenant_id}/users/{user_id}",
            response_model=result_of("update_tenant_user_role"))
@router.patch("/tenants/{tenant_id}/users/{user_id}",
              response_model=result_of("update_tenant_user_role"))
async def update_tenant_user_role(request: Request, tenant_id: UUID, user_id: UUID,
                                  body: UpdateMemberBody):
    """Change a member's role."""
    params = {"tenant_id": str(tenant_id), "user_id": str(user_id), **wire(body)}
    return forward.json(await forward.call(request, "update_tenant_user_role", params))


@router.delete("/tenants/{tenant_id}/users/{user_id}", status_code=204,
               response_class=forward.Response)
async def remove_user_from_tenant(request: Request, tenant_id: UUID, user_id: UUID):
    """End a membership (a tenant keeps at least one owner)."""
    params = {"tenant_id": str(tenant_id), "user_id": str(user_id)}
    await forward.call(request, "remove_user_from_tenant", params)
    return forward.no_content()
