"""Execution tokens: the credential a pipeline run's db calls carry (held by the sandbox
worker, never by user code).

    fdbx_<base64url(JSON claims)>.<base64url(HMAC-SHA256(key, claims))>

The claims bind the token to one tenant, the caller (user and key), one run, a role no higher
than the caller's, and an expiry at the run's deadline. The key is derived from the server
secret, so every instance sharing FLEXDB_SECRET_KEY accepts the tokens of the others. The
token is also refused once its run is no longer running (checked on every call). Which
methods a token may call is declared at each method's registration (`run_db`, see
api/registry.py)."""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any, Mapping
from uuid import UUID

import orjson
from asyncpg import Record

from rpc_server.security.roles import ROLE_RANK

PREFIX = "fdbx_"
MAX_LENGTH = 1024


class InvalidToken(ValueError):
    pass


@dataclass(frozen=True)
class ExecutionClaims:
    tenant_id: UUID
    user_id: UUID | None
    key_id: UUID | None
    run_id: UUID
    role: str
    expires_at: float  # unix seconds


def _key(secret: bytes) -> bytes:
    return hmac.new(secret, b"flexdb execution token v1", hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint(secret: bytes, claims: ExecutionClaims) -> str:
    body = orjson.dumps({"t": str(claims.tenant_id),
                         "u": str(claims.user_id) if claims.user_id else None,
                         "k": str(claims.key_id) if claims.key_id else None,
                         "r": str(claims.run_id), "role": claims.role,
                         "exp": round(claims.expires_at, 3)})
    mac = hmac.new(_key(secret), body, hashlib.sha256).digest()
    return f"{PREFIX}{_b64(body)}.{_b64(mac)}"


def verify(secret: bytes, token: str, now: float | None = None) -> ExecutionClaims:
    if not token.startswith(PREFIX) or len(token) > MAX_LENGTH:
        raise InvalidToken("not an execution token")
    try:
        body_text, mac_text = token[len(PREFIX):].split(".")
        body, mac = _unb64(body_text), _unb64(mac_text)
    except (ValueError, binascii.Error):
        raise InvalidToken("malformed execution token") from None
    if not hmac.compare_digest(mac, hmac.new(_key(secret), body, hashlib.sha256).digest()):
        raise InvalidToken("execution token signature does not match")
    try:
        raw = orjson.loads(body)
        claims = ExecutionClaims(UUID(raw["t"]), UUID(raw["u"]) if raw["u"] else None,
                                 UUID(raw["k"]) if raw["k"] else None, UUID(raw["r"]),
                                 str(raw["role"]), float(raw["exp"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise InvalidToken("malformed execution token") from None
    if claims.expires_at <= (time.time() if now is None else now):
        raise InvalidToken("execution token expired")
    return claims


# A run's db object reads and writes data, nothing more.
TOKEN_ROLE_CEILING = "member"
TOKEN_GRACE_S = 2.0  # clock skew between starting the run and the worker's first call


def token_role(caller_role: str) -> str:
    """The caller's role, capped: a token never carries more than a run needs."""
    return min(caller_role, TOKEN_ROLE_CEILING, key=ROLE_RANK.__getitem__)


def run_token(secret: bytes, run: Mapping[str, Any] | Record) -> str:
    """The token a pipeline run's db calls carry (a pipeline_runs row): its tenant, actor
    and run, the actor's role capped, valid until the run's deadline."""
    return mint(secret, ExecutionClaims(
        run["tenant_id"], run["actor_user_id"], run["actor_key_id"], run["id"],
        token_role(run["actor_role"]), run["deadline"].timestamp() + TOKEN_GRACE_S))
