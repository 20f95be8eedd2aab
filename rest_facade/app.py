"""The REST facade: a FastAPI app that turns REST routes into JSON-RPC calls to rpc_server.
It holds no database credentials and no SQL; the caller's Authorization goes along."""
from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from rpc_server.api.params import set_document_limits
from rpc_server.client import FlexDBClient
from rpc_server.config import Settings

from . import docs, errors
from .callers import CallerGuard
from .edge import EdgeMiddleware
from .routes import all_routers

DESCRIPTION = """REST routes over the flexdb JSON-RPC API: each route is one RPC call
(PATCH of a node's or relationship's data: a read and a versioned write).

Authenticate with `Authorization: Bearer <API key>`. Errors share one body,
`{"error": {"code", "message", "details", "request_id"}}`, where `code` is the JSON-RPC error
code. Send `X-Request-ID` to trace a request through the services (one is made if absent)."""


def cors_origins(settings: Settings) -> list[str]:
    return [o.strip() for o in settings.cors_origins.split(",") if o.strip()]


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # One pooled client for the process: connections to rpc_server are reused.
        app.state.rpc = FlexDBClient(settings.rpc_url, timeout=settings.facade_rpc_timeout_s,
                                     max_connections=settings.facade_max_connections)
        try:
            yield
        finally:
            await app.state.rpc.aclose()

    app = FastAPI(title="flexdb REST API", version="1.0.0", description=DESCRIPTION,
                  lifespan=lifespan, openapi_url="/openapi.json", redirect_slashes=False,
                  # /docs and /redoc are ours (docs.py): FastAPI's load from a CDN. No OAuth2
                  # flow, so no oauth2-redirect page.
                  docs_url=None, redoc_url=None, swagger_ui_oauth2_redirect_url=None)
    app.state.settings = settings
    set_document_limits(settings)  # as rpc_server: one limit, both surfaces
    errors.install(app)
    docs.install(app)
    for router in all_routers():
        app.include_router(router)

    @app.get("/health", tags=["service"], include_in_schema=False)
    async def health():
        return {"status": "ok"}

    origins = cors_origins(settings)
    if origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=origins, allow_credentials="*" not in origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["Location", "X-Request-ID", "Retry-After"], max_age=600)
    app.add_middleware(CallerGuard, anonymous_allowed=settings.anonymous_role != "none",
                       max_in_flight=settings.facade_max_in_flight_per_caller)
    # Outermost: request ids, security headers and the body limit apply to every answer.
    app.add_middleware(EdgeMiddleware, max_body_bytes=settings.facade_body_limit)
    return app
