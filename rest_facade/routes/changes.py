"""/tenants/{tenant_id}/changes (list_changes) and /tenants/{tenant_id}/events (the same
events streamed: rpc_server's GET /events relayed as it comes), for tenant viewers."""
from __future__ import annotations

from typing import Annotated, AsyncIterator
from uuid import UUID

import orjson
from fastapi import Header, Query, Request
from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse

from rpc_server.client import TransportError, error_from
from rpc_server.methods.changes import MAX_CHANGES

from .. import forward
from ..errors import INTERNAL_ERROR, ApiError
from ..models import result_of
from . import make_router

router = make_router("changes")

Listed = Annotated[str | None, Query(max_length=200, description="Comma-separated.")]
TypeName = Annotated[str | None, Query(min_length=1, max_length=100)]


def event_filter(kinds: str | None, operations: str | None, node_type_id: UUID | None,
                 relationship_type: str | None) -> dict:
    found: dict = {}
    if kinds is not None:
        found["kinds"] = [k.strip() for k in kinds.split(",")]
    if operations is not None:
        found["operations"] = [o.strip() for o in operations.split(",")]
    if node_type_id is not None:
        found["node_type_id"] = str(node_type_id)
    if relationship_type is not None:
        found["relationship_type"] = relationship_type
    return found


@router.get("/tenants/{tenant_id}/changes", response_model=result_of("list_changes"))
async def list_changes(request: Request, tenant_id: UUID,
                       after: Annotated[int | None, Query(ge=0, le=2**62)] = None,
                       limit: Annotated[int, Query(ge=1, le=MAX_CHANGES)] = 100,
                       kinds: Listed = None, operations: Listed = None,
                       node_type_id: UUID | None = None, relationship_type: TypeName = None):
    """The tenant's change events after a position (`after`: the previous answer's
    `last_position`), oldest first, filtered by kind, operation, node type or relationship
    type."""
    params: dict = {"tenant_id": str(tenant_id), "limit": limit}
    if after is not None:
        params["after"] = after
    only = event_filter(kinds, operations, node_type_id, relationship_type)
    if only:
        params["filter"] = only
    return forward.json(await forward.call(request, "list_changes", params))


@router.get("/tenants/{tenant_id}/events", response_class=StreamingResponse, responses={
    200: {"content": {"text/event-stream": {}},
          "description": "Server-Sent Events: `id: <position>`, `event: change`, "
                         "`data: <the event>`; `: keep-alive` comments while idle."}})
async def stream_changes(request: Request, tenant_id: UUID,
                         after: Annotated[int | None, Query(ge=0, le=2**62)] = None,
                         kinds: Listed = None, operations: Listed = None,
                         node_type_id: UUID | None = None,
                         relationship_type: TypeName = None,
                         last_event_id: Annotated[str | None, Header(max_length=20)] = None):
    """The tenant's change events as they commit, as a Server-Sent Events stream (resume
    with `Last-Event-ID` or `after`; without either, from now on)."""
    params = {"tenant_id": str(tenant_id)}
    for name, value in (("after", after), ("kinds", kinds), ("operations", operations),
                        ("node_type_id", node_type_id),
                        ("relationship_type", relationship_type)):
        if value is not None:
            params[name] = str(value)
    headers = {b"X-Request-ID": request.state.request_id.encode()}
    authorization = (request.headers.get("authorization") or "").strip()
    if authorization:
        headers[b"Authorization"] = authorization.encode("latin-1")
    if last_event_id:
        headers[b"Last-Event-ID"] = last_event_id.encode("latin-1")
    try:
        upstream = await forward.rpc_client(request).open_events(params, headers)
    except TransportError:
        raise ApiError(502, INTERNAL_ERROR, "rpc_server cannot be reached",
                       {"type": "upstream_unavailable"}) from None
    if upstream.status_code != 200:  # an error answer: {"error": {code, message, data}}
        body = await upstream.aread()
        await upstream.aclose()
        try:
            reply = orjson.loads(body)
            refused = ApiError.from_rpc(error_from(reply))
        except (orjson.JSONDecodeError, AttributeError, TypeError):
            raise ApiError(502, INTERNAL_ERROR, f"rpc_server answered HTTP "
                           f"{upstream.status_code} without an error",
                           {"type": "upstream_bad_answer",
                            "status": upstream.status_code}) from None
        if (refused.details or {}).get("type") == "position_expired":
            refused.status = 410  # gone: resynchronise from the lists
        raise refused

    async def relay() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.aiter_raw():
                yield chunk
        finally:  # the client left (or rpc_server ended it): rpc_server's stream ends too
            await upstream.aclose()

    return StreamingResponse(relay(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                             background=BackgroundTask(upstream.aclose))
