"""One error shape for every REST failure, and the JSON-RPC code -> HTTP status mapping.

    {"error": {"code": -32001, "message": "node not found",
               "details": {"type": "not_found", "kind": "node", "id": "..."},
               "request_id": "..."}}

`code` is the JSON-RPC error code (clients of both APIs handle errors the same way),
`details` is the RPC error's data (its `type` names the error for machines)."""
from __future__ import annotations

import logging
import math
from typing import Any

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from rpc_server.api.params import error_message
from rpc_server.client import RpcError
from rpc_server.transport.json_codec import JSONTooDeep

log = logging.getLogger(__name__)

STATUS_BY_CODE = {
    -32700: 400,  # parse error
    -32600: 400,  # invalid request
    -32601: 500,  # method not found: the facade asked for something rpc_server lacks
    -32602: 422,  # invalid params
    -32603: 500,  # internal
    -32001: 404,  # not found
    -32002: 401,  # unauthenticated
    -32003: 403,  # forbidden
    -32004: 409,  # conflict
    -32005: 429,  # rate limited / busy
    -32006: 400,  # query rejected
    -32007: 422,  # pipeline run failed (details.run holds the record)
}
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR = (
    -32700, -32600, -32601, -32602, -32603)


class BodyTooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"request body exceeds {limit} bytes")
        self.limit = limit


class ErrorDetail(BaseModel):
    code: int = Field(description="The JSON-RPC error code (e.g. -32001 not found)")
    message: str = Field(description="What went wrong, for people")
    details: dict[str, Any] | None = Field(
        None, description="Machine-readable details; `type` names the error "
        "(invalid_params errors list each bad field)")
    request_id: str = Field(description="Quote it when reporting a problem; it is in the logs")


class ErrorBody(BaseModel):
    """The body of every error response."""
    error: ErrorDetail


class ApiError(Exception):
    def __init__(self, status: int, code: int, message: str, details: dict | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details, self.headers = details, headers or {}

    @classmethod
    def from_rpc(cls, exc: RpcError) -> "ApiError":
        status = STATUS_BY_CODE.get(exc.code, 500)
        details = exc.data if isinstance(exc.data, dict) else None
        headers = {}
        if exc.code == INVALID_REQUEST and details and "max_bytes" in details:
            status = 413  # rpc_server's body limit (the JSON-RPC envelope adds a few bytes)
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="flexdb"'
        elif status == 429:
            retry_after = (details or {}).get("retry_after", 1)
            try:  # whole seconds, never earlier than the server asked
                headers["Retry-After"] = str(max(1, math.ceil(float(retry_after))))
            except (TypeError, ValueError, OverflowError):
                headers["Retry-After"] = "1"
        return cls(status, exc.code, exc.message, details, headers)


def error_response(request: Request | None, status: int, code: int, message: str,
                   details: dict | None = None, headers: dict[str, str] | None = None) -> Response:
    request_id = getattr(request.state, "request_id", "") if request is not None else ""
    return error_for(request_id, status, code, message, details, headers)


def error_for(request_id: str, status: int, code: int, message: str,
              details: dict | None = None, headers: dict[str, str] | None = None) -> Response:
    body = {"error": {"code": code, "message": message, "details": details,
                      "request_id": request_id}}
    return Response(orjson.dumps(body), status_code=status, headers=headers,
                    media_type="application/json")


def body_too_large(request_id: str, limit: int) -> Response:
    return error_for(request_id, 413, INVALID_REQUEST, f"Request body exceeds {limit} bytes",
                     {"type": "body_too_large", "max_bytes": limit}, {"Connection": "close"})


def validation_details(exc: RequestValidationError) -> tuple[int, int, str, dict]:
    """FastAPI's validation errors in the RPC invalid_params shape; unreadable JSON is 400."""
    errors = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            return 400, PARSE_ERROR, "The request body is not valid JSON", {
                "type": "parse_error", "reason": str(err.get("ctx", {}).get("error", ""))}
        loc = [str(p) for p in err.get("loc", ())]
        where = loc[0] if loc else "body"
        field = ".".join(loc[1:]) or where
        errors.append({"field": field, "in": where, "message": error_message(err)})
    first = errors[0] if errors else {"field": "body", "message": "invalid"}
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    message = f"Invalid params: {first['field']}: {first['message']}{more}"
    return 422, INVALID_PARAMS, message, {"type": "invalid_params", "errors": errors[:50]}


async def on_api_error(request: Request, exc: ApiError) -> Response:
    return error_response(request, exc.status, exc.code, exc.message, exc.details, exc.headers)


async def on_validation_error(request: Request, exc: RequestValidationError) -> Response:
    return error_response(request, *validation_details(exc))


async def on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
    if isinstance(exc.__cause__, BodyTooLarge):  # FastAPI wraps errors while reading a body
        return body_too_large(request.state.request_id, exc.__cause__.limit)
    if isinstance(exc.__cause__, JSONTooDeep):  # as rpc_server answers it (-32600)
        return error_response(request, 400, INVALID_REQUEST,
                              f"The request body is JSON {exc.__cause__}",
                              {"type": "invalid_request", "reason": f"JSON {exc.__cause__}"})
    if exc.status_code == 404:
        return error_response(request, 404, METHOD_NOT_FOUND, "No such route",
                              {"type": "route_not_found", "path": request.url.path[:200]})
    if exc.status_code == 405:
        allowed = allowed_methods(request)
        return error_response(request, 405, METHOD_NOT_FOUND,
                              f"{request.method} is not allowed on this route",
                              {"type": "method_not_allowed", "allowed": allowed},
                              {"Allow": ", ".join(allowed)})
    code = INVALID_REQUEST if exc.status_code < 500 else INTERNAL_ERROR
    return error_response(request, exc.status_code, code, str(exc.detail),
                          {"type": "http_error"}, dict(exc.headers or {}))


def _flat_routes(routes):
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI's include_router node
        if included is not None:
            yield from _flat_routes(included.routes)
        else:
            yield route


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette's Allow names only the first
    route that matched the path)."""
    path = request.url.path
    matching = [r for r in _flat_routes(request.app.routes)
                if getattr(r, "methods", None) and r.path_regex.match(path)]
    if not matching:
        return []
    # /nodes/bulk also matches /nodes/{node_id}; the literal route is the resource.
    fewest = min(len(r.param_convertors) for r in matching)
    return sorted(set().union(*(r.methods for r in matching
                                if len(r.param_convertors) == fewest)))


def install(app) -> None:
    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    # Anything else is answered by EdgeMiddleware (inside it, so the answer keeps the
    # request id and the security headers).


def _described(text: str) -> dict:
    return {"model": ErrorBody, "description": text}


# Declared on every route, so /openapi.json documents each error a caller can get.
ERROR_RESPONSES: dict[int | str, dict] = {
    400: _described("Malformed JSON body (or nested too deeply to read); a query refused, "
                     "or a query or graph walk over its time or size limit"),
    401: _described("No or invalid credentials (WWW-Authenticate: Bearer)"),
    403: _described("Authenticated, but the role is too low"),
    404: _described("No such resource (or not visible to the caller)"),
    409: _described("Conflict: duplicate, or expected_version does not match"),
    413: _described("Request body larger than the facade accepts"),
    415: _described("A body not sent as JSON (Content-Type: application/json)"),
    422: _described("Invalid parameters (details.errors lists each field: a document "
                     "nested too deeply, a number out of range, an unknown query "
                     "parameter...)"),
    429: _described("Busy, rate limited, or too many requests of these credentials in "
                     "flight; see Retry-After"),
    500: _described("Internal error (details.request_id finds it in the logs)"),
    502: _described("rpc_server could not be reached"),
    504: _described("rpc_server did not answer in time"),
}
