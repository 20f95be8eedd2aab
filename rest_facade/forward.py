"""Forward one REST request as one JSON-RPC call, with the caller's credentials and
request id, through the process's single pooled client; shape the HTTP answer."""
from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from starlette.responses import Response

from rpc_server.client import FlexDBClient, RpcError, TransportError, TransportTimeout

from .errors import INTERNAL_ERROR, ApiError


def rpc_client(request: Request) -> FlexDBClient:
    return request.app.state.rpc


async def call(request: Request, method: str, params: dict[str, Any]) -> Any:
    # As bytes: Authorization is forwarded as received (headers are latin-1), since httpx
    # would refuse non-ASCII text and rpc_server is the one to judge credentials. The
    # request id is ASCII (edge.REQUEST_ID_RE).
    headers = {b"X-Request-ID": request.state.request_id.encode()}
    authorization = (request.headers.get("authorization") or "").strip()
    if authorization:  # blank is absent: never let rpc_server read it as "anonymous"
        headers[b"Authorization"] = authorization.encode("latin-1")
    try:
        return await rpc_client(request).call(method, params, headers=headers)
    except RpcError as exc:
        raise ApiError.from_rpc(exc) from None
    except TransportTimeout:
        raise ApiError(504, INTERNAL_ERROR, "rpc_server did not answer in time",
                       {"type": "upstream_timeout"}) from None
    except TransportError as exc:
        if exc.status is not None:
            raise ApiError(502, INTERNAL_ERROR, f"rpc_server answered HTTP {exc.status} "
                           "without a JSON-RPC answer", {"type": "upstream_bad_answer",
                                                         "status": exc.status}) from None
        raise ApiError(502, INTERNAL_ERROR, "rpc_server cannot be reached",
                       {"type": "upstream_unavailable"}) from None


def json(result: Any, status: int = 200, location: str | None = None) -> Response:
    headers = {"Location": location} if location else None
    return Response(orjson.dumps(result), status_code=status, headers=headers,
                    media_type="application/json")


def created(result: Any, location: str) -> Response:
    return json(result, 201, location)


def no_content() -> Response:
    return Response(status_code=204)
