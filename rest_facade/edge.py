"""ASGI middleware at the edge of the facade: a request id for every request, security
headers on every response, and a bound on the request body. Plain ASGI (not
BaseHTTPMiddleware) so it adds no task or stream copy per request."""
from __future__ import annotations

import logging
import re
import time
import uuid

from . import docs
from .errors import INTERNAL_ERROR, BodyTooLarge, body_too_large, error_for

log = logging.getLogger(__name__)
access_log = logging.getLogger("flexdb.access")

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
# /docs and the docs' files (docs.py): everything comes from this origin, nothing inline.
# img-src data: because Swagger UI's and ReDoc's styles draw their icons as data: images.
DOCS_CSP = (b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            b"font-src 'self'; connect-src 'self'; frame-ancestors 'none'")
# /redoc needs two more things (its scripts stay 'self' only):
# - 'unsafe-inline' styles: ReDoc (styled-components) writes its styles into <style>
#   elements as it renders; style-src 'self' refuses them and ReDoc fails to render at all;
# - worker-src blob: its search index runs in a Web Worker made from a blob: URL.
REDOC_CSP = (b"default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
             b"img-src 'self' data:; font-src 'self'; connect-src 'self'; worker-src blob:; "
             b"frame-ancestors 'none'")
_DOCS_COMMON = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
DOCS_HEADERS = _DOCS_COMMON + [(b"content-security-policy", DOCS_CSP)]
REDOC_HEADERS = _DOCS_COMMON + [(b"content-security-policy", REDOC_CSP)]


def headers_for(path: str) -> list[tuple[bytes, bytes]]:
    if path == "/redoc":
        return REDOC_HEADERS
    return DOCS_HEADERS if docs.is_docs(path) else API_HEADERS


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == b"x-request-id":
            given = value.decode("latin-1")
            if REQUEST_ID_RE.match(given):
                return given
            break
    return uuid.uuid4().hex


class EdgeMiddleware:
    def __init__(self, app, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = request_id_from(scope["headers"])
        scope.setdefault("state", {})["request_id"] = request_id
        extra = headers_for(scope["path"]) + [(b"x-request-id", request_id.encode())]

        started = False
        status = 500

        async def send_with_headers(message):
            nonlocal started, status
            if message["type"] == "http.response.start":
                started, status = True, message["status"]
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    h for h in extra if h[0] not in present]
            await send(message)

        limit = self.max_body_bytes
        declared = _content_length(scope["headers"])
        if declared is not None and declared > limit:
            return await body_too_large(request_id, limit)(scope, receive, send_with_headers)

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

        began = time.perf_counter()
        try:
            await self.app(scope, bounded_receive, send_with_headers)
        except Exception:  # noqa: BLE001 - answered here, in the error shape, with our headers
            log.exception("unexpected error in the REST facade (request_id=%s)", request_id)
            if started:
                raise  # too late for an error answer: the server closes the connection
            await error_for(request_id, 500, INTERNAL_ERROR, "Internal error",
                            {"type": "internal"})(scope, receive, send_with_headers)
        finally:
            # Health probes (load balancers, `flexdb up`) come every few seconds: not news.
            level = logging.DEBUG if scope["path"] == "/health" else logging.INFO
            access_log.log(level, "%s %s", scope["method"], scope["path"][:200], extra={
                "request_id": request_id, "http_method": scope["method"],
                "path": scope["path"][:200], "status": status,
                "duration_ms": round((time.perf_counter() - began) * 1000, 2)})


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
