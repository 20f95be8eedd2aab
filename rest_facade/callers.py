"""Per-caller checks before any route runs: credentials present (rpc_server judges them),
and a cap on one caller's requests in flight, so one key cannot take every connection the
facade has to rpc_server and starve the others."""
from __future__ import annotations

import hashlib

from rpc_server.errors import Unauthenticated
from rpc_server.security.credentials import bearer_credential

from . import docs
from .errors import STATUS_BY_CODE, error_for

OPEN_PATHS = docs.OPEN | {"/openapi.json", "/health"}
MAX_AUTHORIZATION = 4096  # far above any key or token; rpc_server's header limit is 8190
RATE_LIMITED = -32005


def _authorization(headers: list[tuple[bytes, bytes]]) -> bytes:
    for name, value in headers:
        if name == b"authorization":
            return value.strip()
    return b""


def _caller(authorization: bytes) -> bytes:
    """Who the credentials are, for the in-flight cap: a Bearer credential however its
    scheme is spelled, else the header as sent (rpc_server refuses other schemes)."""
    text = authorization.decode("latin-1")  # (headers are latin-1)
    credential = bearer_credential(text)
    identity = f"bearer {credential}" if credential is not None else text
    return hashlib.blake2b(identity.encode("latin-1"), digest_size=16).digest()


class CallerGuard:
    def __init__(self, app, *, anonymous_allowed: bool, max_in_flight: int):
        self.app = app
        self.anonymous_allowed = anonymous_allowed
        self.max_in_flight = max_in_flight
        self.in_flight: dict[bytes, int] = {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS \
                or scope["path"].startswith(docs.ASSETS):
            return await self.app(scope, receive, send)
        request_id = scope.get("state", {}).get("request_id", "")
        authorization = _authorization(scope["headers"])
        if (not authorization and not self.anonymous_allowed) \
                or len(authorization) > MAX_AUTHORIZATION:
            refusal = Unauthenticated() if not authorization else Unauthenticated(
                "Invalid credentials: the Authorization header is too long")
            response = error_for(request_id, 401, refusal.code, refusal.message, refusal.data,
                                 {"WWW-Authenticate": 'Bearer realm="flexdb"'})
            return await response(scope, receive, send)
        caller = _caller(authorization)
        if self.in_flight.get(caller, 0) >= self.max_in_flight:
            response = error_for(
                request_id, STATUS_BY_CODE[RATE_LIMITED], RATE_LIMITED,
                f"More than {self.max_in_flight} requests of these credentials are in "
                "flight; retry when one has finished",
                {"type": "too_many_in_flight", "max_in_flight": self.max_in_flight,
                 "retry_after": 1}, {"Retry-After": "1"})
            return await response(scope, receive, send)
        self.in_flight[caller] = self.in_flight.get(caller, 0) + 1
        try:
            await self.app(scope, receive, send)
        finally:
            left = self.in_flight[caller] - 1
            if left:
                self.in_flight[caller] = left
            else:
                del self.in_flight[caller]
