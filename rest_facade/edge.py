"""ASGI middleware at the edge of the facade: a request id for every request, security
headers on every response, and a bound on the request body. Plain ASGI (not
BaseHTTPMiddleware) so it adds no task or stream copy per request."""
from __future__ import annotations

import re
import uuid

import orjson

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")  # the same rule as rpc_server's

# An API answers JSON only: nothing may be framed, sniffed, cached or given a referrer.
API_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
# /docs and /redoc load their scripts and styles from a CDN and run inline setup code.
DOCS_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy",
     b"default-src 'none'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
     b"style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
     b"font-src https://fonts.gstatic.com; img-src 'self' data: https://fastapi.tiangolo.com "
     b"https://cdn.redoc.ly; connect-src 'self'; worker-src blob:; frame-ancestors 'none'"),
]
DOCS_PATHS = ("/docs", "/redoc")


class BodyTooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"request body exceeds {limit} bytes")
        self.limit = limit


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == b"x-request-id":
            given = value.decode("latin-1")
            if REQUEST_ID_RE.match(given):
                return given
            break
    return uuid.uuid4().hex


def too_large_response(request_id: str, limit: int) -> bytes:
    return orjson.dumps({"error": {
        "code": -32600, "message": f"Request body exceeds {limit} bytes",
        "details": {"type": "body_too_large", "max_bytes": limit}, "request_id": request_id}})


class EdgeMiddleware:
    def __init__(self, app, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = request_id_from(scope["headers"])
        scope.setdefault("state", {})["request_id"] = request_id
        extra = DOCS_HEADERS if scope["path"].startswith(DOCS_PATHS) else API_HEADERS
        extra = extra + [(b"x-request-id", request_id.encode())]

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    h for h in extra if h[0] not in present]
            await send(message)

        limit = self.max_body_bytes
        declared = _content_length(scope["headers"])
        if declared is not None and declared > limit:
            return await self._refuse(send_with_headers, request_id, limit)

        received = 0

        async def bounded_receive():
            # A chunked body has no Content-Length: count what arrives.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, bounded_receive, send_with_headers)

    @staticmethod
    async def _refuse(send, request_id: str, limit: int) -> None:
        body = too_large_response(request_id, limit)
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
