"""One router per resource; each route is one (or, for PATCH of a document, two) RPC calls."""
from __future__ import annotations

import orjson
from fastapi import APIRouter, Request, Security
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from rpc_server.errors import Unauthenticated

from ..errors import ERROR_RESPONSES, ApiError

# Documents the scheme in /openapi.json (the "Authorize" button of /docs). The facade does
# not check credentials itself: it forwards Authorization and rpc_server decides.
bearer = HTTPBearer(auto_error=False, description="An API key: Authorization: Bearer <key>")


async def credentials_present(
        request: Request,
        _credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> None:
    """A request without credentials gets 401 before its body is looked at (rpc_server
    would refuse it anyway), unless the servers let anonymous callers in."""
    if "authorization" not in request.headers and \
            request.app.state.settings.anonymous_role == "none":
        raise ApiError.from_rpc(Unauthenticated())


class StrictJsonRequest(Request):
    """Bodies are parsed as rpc_server parses them (orjson): NaN, Infinity, numbers out of
    range, lone surrogates and absurd nesting are malformed JSON (400), not data that
    changes on the way (the standard parser would let NaN through to be stored as null)."""

    async def json(self):
        if not hasattr(self, "_json"):
            self._json = orjson.loads(await self.body())
        return self._json


class StrictJsonRoute(APIRoute):
    def get_route_handler(self):
        handler = super().get_route_handler()

        async def strict_json_handler(request: Request):
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict_json_handler


def make_router(tag: str) -> APIRouter:
    return APIRouter(tags=[tag], responses=ERROR_RESPONSES, route_class=StrictJsonRoute,
                     dependencies=[Security(credentials_present)])


def all_routers() -> list[APIRouter]:
    from . import (api_keys, audit, node_types, nodes, pipelines, query, relationships,
                   tenants, users)
    return [tenants.router, users.router, node_types.router, nodes.router,
            relationships.router, query.router, pipelines.router, api_keys.router,
            audit.router]
