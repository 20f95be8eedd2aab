"""One router per resource; each route is one (or, for PATCH of a document, two) RPC calls."""
from __future__ import annotations

import json

import orjson
from fastapi import APIRouter, Request, Security
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer

from rpc_server.json_codec import json_depth_exceeds

from ..errors import ERROR_RESPONSES

# Documents the scheme in /openapi.json (the "Authorize" button of /docs). The facade does
# not check credentials itself: it forwards Authorization and rpc_server decides.
bearer = HTTPBearer(auto_error=False, description="An API key: Authorization: Bearer <key>")


class StrictJsonRequest(Request):
    """Bodies are parsed as rpc_server parses them (orjson): NaN, Infinity, numbers out of
    range, lone surrogates and absurd nesting are malformed JSON (400), not data that
    changes on the way (the standard parser would let NaN through to be stored as null)."""

    async def json(self):
        if not hasattr(self, "_json"):
            body = await self.body()
            parsed = orjson.loads(body)
            # rpc_server's nesting limit, less the two levels of the JSON-RPC envelope.
            depth = self.app.state.settings.max_json_depth - 2
            if json_depth_exceeds(parsed, depth):
                raise json.JSONDecodeError(f"nested deeper than {depth} levels",
                                           body.decode("utf-8", "replace")[:100], 0)
            self._json = parsed
        return self._json


class StrictJsonRoute(APIRoute):
    def get_route_handler(self):
        handler = super().get_route_handler()

        async def strict_json_handler(request: Request):
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict_json_handler


def make_router(tag: str) -> APIRouter:
    # Security(bearer) documents the scheme; CallerGuard refuses requests without it.
    return APIRouter(tags=[tag], responses=ERROR_RESPONSES, route_class=StrictJsonRoute,
                     dependencies=[Security(bearer)])


def all_routers() -> list[APIRouter]:
    from . import (api_keys, audit, node_types, nodes, pipelines, query, relationships,
                   tenants, users)
    return [tenants.router, users.router, node_types.router, nodes.router,
            relationships.router, query.router, pipelines.router, api_keys.router,
            audit.router]
