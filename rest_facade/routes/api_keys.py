"""/api-keys: the caller's own keys (platform admins: anyone's, with user_id)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated
from uuid import UUID

from fastapi import Depends, Query, Request

from rpc_server.api.params import Params

from .. import forward
from ..models import body_of, paging, result_of, wire
from . import make_router

router = make_router("api keys")
if TYPE_CHECKING:  # a model made at run time is no type to mypy: see models.body_of
    CreateApiKeyBody = Params
else:
    CreateApiKeyBody = body_of("create_api_key")


@router.post("/api-keys", status_code=201, response_model=result_of("create_api_key"))
async def create_api_key(request: Request, body: CreateApiKeyBody):
    """Create an API key; the secret is in this response only, never again."""
    result = await forward.call(request, "create_api_key", wire(body))
    return forward.created(result, f"/api-keys/{result['api_key']['id']}")


@router.get("/api-keys", response_model=result_of("list_api_keys"))
async def list_api_keys(request: Request, pagination: Annotated[dict, Depends(paging)],
                        user_id: Annotated[UUID | None, Query()] = None):
    """Keys without secrets: the caller's own; a platform admin sees every user's keys, or
    one user's with `user_id`."""
    params: dict[str, object] = {"pagination": pagination}
    if user_id is not None:
        params["user_id"] = str(user_id)
    return forward.json(await forward.call(request, "list_api_keys", params))


@router.delete("/api-keys/{key_id}", status_code=204, response_class=forward.Response)
async def revoke_api_key(request: Request, key_id: UUID):
    """Revoke a key; it stops working at once on this server (within the auth cache TTL
    on others)."""
    await forward.call(request, "revoke_api_key", {"id": str(key_id)})
    return forward.no_content()
