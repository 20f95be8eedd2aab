"""One router per resource; each route is one (or, for PATCH of a document, two) RPC calls."""
from __future__ import annotations

import json

from fastapi import APIRouter, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer

from rpc_server.transport.json_codec import JSONError, JSONTooDeep, loads

from ..errors import ERROR_RESPONSES, INVALID_REQUEST, ApiError

# Documents the scheme in /openapi.json (the "Authorize" button of /docs). The facade does
# not check credentials itself: it forwards Authorization and rpc_server decides.
bearer = HTTPBearer(auto_error=False, description="An API key: Authorization: Bearer <key>")
SEND_JSON = "Send the body as JSON, with Content-Type: application/json"


class StrictJsonRequest(Request):
    """Bodies are parsed as rpc_server parses them (json_codec.loads): NaN, Infinity, lone
    surrogates are malformed JSON (400); numbers out of range are read as such, for the
    field holding one to refuse (422), never rounded; nesting is each document's to limit
    (rpc_server.params.Documents), as over JSON-RPC."""

    async def json(self):
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = loads(body)
            except JSONTooDeep:
                raise  # FastAPI wraps it in a 400; errors.on_http_error words the answer
            except JSONError as exc:
                raise json.JSONDecodeError(str(exc), body.decode("utf-8", "replace")[:100],
                                           0) from None
        return self._json


def _is_json(content_type: str | None) -> bool:
    # What FastAPI reads as JSON: application/json or application/*+json, with parameters.
    media = (content_type or "").split(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/")
                                            and media.endswith("+json"))


def _query_names(dependant) -> frozenset[str]:
    """The query parameters a route declares, its dependencies' (paging) included."""
    names: set[str] = set()
    stack = [dependant]
    while stack:
        current = stack.pop()
        names.update(param.alias for param in current.query_params)
        stack.extend(current.dependencies)
    return frozenset(names)


def _has_body(headers) -> bool:
    length = headers.get("content-length")
    return "transfer-encoding" in headers or (length is not None and length.strip() != "0")


class StrictJsonRoute(APIRoute):
    """Every route of the facade: a body only as JSON (else 415; FastAPI would read a form
    or a body without Content-Type as a value of the wrong type, a confusing 422), read as
    rpc_server reads it; and only the query parameters the route declares (else 422, as
    JSON-RPC refuses unknown params)."""

    def get_route_handler(self):
        handler = super().get_route_handler()
        takes_body = self.body_field is not None
        query_names = _query_names(self.dependant)

        async def strict_json_handler(request: Request):
            unknown = sorted(set(request.query_params) - query_names)
            if unknown:
                raise RequestValidationError([
                    {"type": "extra_forbidden", "loc": ("query", name),
                     "msg": "is not a parameter of this route"} for name in unknown])
            content_type = request.headers.get("content-type")
            if takes_body and not _is_json(content_type) and _has_body(request.headers):
                raise ApiError(415, INVALID_REQUEST, SEND_JSON, {
                    "type": "unsupported_media_type",
                    "content_type": (content_type or "")[:100] or None})
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict_json_handler


def make_router(tag: str) -> APIRouter:
    # Security(bearer) documents the scheme; CallerGuard refuses requests without it.
    return APIRouter(tags=[tag], responses=ERROR_RESPONSES, route_class=StrictJsonRoute,
                     dependencies=[Security(bearer)])


def all_routers() -> list[APIRouter]:
    from . import (
        api_keys,
        audit,
        changes,
        jobs,
        node_types,
        nodes,
        pipelines,
        query,
        relationships,
        tenants,
        users,
    )
    return [tenants.router, users.router, node_types.router, nodes.router,
            relationships.router, query.router, pipelines.router, api_keys.router,
            audit.router, changes.router, jobs.router]
