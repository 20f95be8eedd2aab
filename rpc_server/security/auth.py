"""API keys, principals, and the permission every method declares.

Keys look like `fdb_<43 url-safe chars>` (256 random bits; the prefix lets secret scanners
find leaked keys). Only HMAC-SHA256(server secret, key) is stored. A verified key and a
membership are cached for FLEXDB_AUTH_CACHE_TTL_S seconds (default 5), so the hot path
makes no database round trip; revocation and role changes take effect within that time
on other instances, and at once on the instance that made them, whatever Redis does (see
caching/shared_cache.py: the shared entries live no longer than that either)."""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Literal
from uuid import UUID

import asyncpg

from rpc_server.caching.shared_cache import (
    MISSING,
    SharedCache,
    principal_from_json,
    principal_to_json,
)
from rpc_server.caching.shared_cache import UNTRUSTED as UNSHARED
from rpc_server.caching.ttl_cache import TTLCache
from rpc_server.errors import Unauthenticated
from rpc_server.security.credentials import bearer_credential
from rpc_server.security.execution_tokens import PREFIX as EXECUTION_PREFIX
from rpc_server.security.execution_tokens import ExecutionClaims, InvalidToken
from rpc_server.security.execution_tokens import verify as verify_execution_token
from rpc_server.security.roles import ROLE_RANK
from rpc_server.storage.repositories import credentials

KEY_PREFIX = "fdb_"
PREFIX_SHOWN = len(KEY_PREFIX) + 6  # what lists show of a key
MAX_KEY_LENGTH = 200


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(secret: bytes, key: str) -> bytes:
    return hmac.new(secret, key.encode(), hashlib.sha256).digest()


@dataclass(frozen=True)
class Principal:
    user_id: UUID | None
    is_platform_admin: bool
    key_id: UUID | None = None
    expires_at: datetime | None = None
    # Set for a pipeline run's execution token: one tenant, a capped role, a few methods.
    run: ExecutionClaims | None = None


ANONYMOUS_ADMIN = Principal(user_id=None, is_platform_admin=True)


@dataclass(frozen=True)
class Permission:
    """Who may call a method. `tenant` permissions name the minimum role and the param that
    holds the tenant id; platform admins pass every check."""
    kind: Literal["authenticated", "platform_admin", "tenant"]
    role: str | None = None
    tenant_param: str = "tenant_id"


AUTHENTICATED = Permission("authenticated")
PLATFORM_ADMIN = Permission("platform_admin")


def tenant_role(role: str, tenant_param: str = "tenant_id") -> Permission:
    if role not in ROLE_RANK:
        raise ValueError(f"unknown role {role}")
    return Permission("tenant", role, tenant_param)


class Authenticator:
    def __init__(self, secret: bytes, anonymous_role: str, ttl: float):
        self.secret = secret
        self.anonymous_role = anonymous_role
        self._keys = TTLCache(ttl)
        self._roles = TTLCache(ttl)
        self.shared: SharedCache | None = None  # set when Redis is configured
        self._forgets = 0  # how many forget_* have been applied here

    async def principal(self, pool: asyncpg.Pool, authorization: str | None) -> Principal:
        if not authorization:
            if self.anonymous_role == "platform_admin":
                return ANONYMOUS_ADMIN
            raise Unauthenticated()
        key = bearer_credential(authorization) or ""
        if key.startswith(EXECUTION_PREFIX):
            return await self._run_principal(pool, key)
        if not key.startswith(KEY_PREFIX) or len(key) > MAX_KEY_LENGTH:
            raise Unauthenticated("Invalid credentials: expected Authorization: Bearer fdb_…")
        digest = hash_key(self.secret, key)
        cached = self._keys.get(digest)
        if cached is not None:
            found = cached[0]
        else:
            forgets = self._forgets
            found, ttl = await self._shared_lookup(pool, digest)
            # Unknown keys too (random keys cannot hammer the db); not a lookup that raced
            # a revocation here.
            if forgets == self._forgets:
                self._keys.put(digest, found, ttl)
        if found is None:
            raise Unauthenticated("Invalid, unknown or revoked API key")
        if found.expires_at is not None and found.expires_at <= datetime.now(timezone.utc):
            raise Unauthenticated("API key expired")
        return found

    async def _run_principal(self, pool: asyncpg.Pool, token: str) -> Principal:
        """A pipeline run's token: valid signature, not expired, and its run still running
        (checked on every call, so the token dies with the run)."""
        try:
            claims = verify_execution_token(self.secret, token)
        except InvalidToken as exc:
            raise Unauthenticated(f"Invalid execution token: {exc}") from None
        # The run must still be running, and the caller still hold the key and the role:
        # a key revoked or a member removed mid-run stops the run's access at once.
        row = await credentials.run_standing(pool, claims.tenant_id, claims.run_id,
                                             claims.key_id, claims.user_id)
        if row is None or row["status"] != "running":
            raise Unauthenticated("Execution token refused: its run is not running")
        if claims.key_id is not None and not row["key_ok"]:
            raise Unauthenticated("Execution token refused: the caller's API key was revoked "
                                  "or has expired")
        if claims.user_id is not None and not row["is_admin"]:
            current = row["role"]
            if current is None:
                raise Unauthenticated("Execution token refused: the caller is no longer a "
                                      "member of the tenant")
            if ROLE_RANK[current] < ROLE_RANK[claims.role]:
                claims = replace(claims, role=current)  # demoted mid-run: the lower role
        return Principal(claims.user_id, False, claims.key_id,
                         datetime.fromtimestamp(claims.expires_at, timezone.utc), run=claims)

    @staticmethod
    async def _lookup(pool: asyncpg.Pool, digest: bytes) -> Principal | None:
        row = await credentials.key_holder(pool, digest)
        if row is None or not hmac.compare_digest(row["key_hash"], digest):
            return None
        return Principal(row["user_id"], row["is_platform_admin"], row["id"], row["expires_at"])

    async def _shared_lookup(self, pool: asyncpg.Pool,
                             digest: bytes) -> tuple[Principal | None, float | None]:
        """The key's caller (None if unknown) and, when it came from the shared cache, how
        long that entry has left (a copy here must not outlive it)."""
        if self.shared is None:
            return await self._lookup(pool, digest), None
        shared = await self.shared.get("key", digest.hex())
        if shared.value is not MISSING:
            return principal_from_json(shared.value, Principal), shared.expires_in
        found = await self._lookup(pool, digest)
        await self.shared.put("key", digest.hex(), principal_to_json(found), shared.generation)
        return found, None

    async def role_in(self, pool: asyncpg.Pool, user_id: UUID, tenant_id: UUID) -> str | None:
        cached = self._roles.get((user_id, tenant_id))
        if cached is not None:
            return cached[0]
        forgets, ident = self._forgets, f"{user_id}:{tenant_id}"
        shared = await self.shared.get("role", ident) if self.shared else UNSHARED
        role = shared.value
        if role is MISSING:
            role = await credentials.active_role(pool, tenant_id, user_id)
            if self.shared:
                await self.shared.put("role", ident, role, shared.generation)
        if forgets == self._forgets:
            self._roles.put((user_id, tenant_id), role, shared.expires_in)
        return role

    # Each forget_* drops cached entries here and, through `announce` (set when Redis is
    # configured), on every other instance; `apply` is the receiving end.
    announce = None
    kinds = frozenset({"key", "user", "membership", "tenant"})

    def forget_key(self, key_id: UUID) -> None:
        self._forget("key", key_id)

    def forget_user(self, user_id: UUID) -> None:
        self._forget("user", user_id)

    def forget_membership(self, user_id: UUID, tenant_id: UUID) -> None:
        self._forget("membership", user_id, tenant_id)

    def forget_tenant(self, tenant_id: UUID) -> None:
        self._forget("tenant", tenant_id)

    def _forget(self, kind: str, *ids: UUID) -> None:
        self.apply(kind, *ids)
        if self.announce is not None:
            self.announce(kind, *ids)

    def apply(self, kind: str, *ids: UUID) -> None:
        self._forgets += 1  # lookups in flight now may have read the old state
        if kind == "key":
            self._keys.drop_where(lambda _, p: p is not None and p.key_id == ids[0])
        elif kind == "user":
            self._keys.drop_where(lambda _, p: p is not None and p.user_id == ids[0])
            self._roles.drop_where(lambda k, _: k[0] == ids[0])
        elif kind == "membership":
            self._roles.drop_where(lambda k, _: k == (ids[0], ids[1]))
        elif kind == "tenant":
            self._roles.drop_where(lambda k, _: k[1] == ids[0])
