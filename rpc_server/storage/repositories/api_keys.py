from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg

from rpc_server.errors import NotFound
from rpc_server.storage.pagination import Page, PageRequest, fetch_page
from rpc_server.storage.repositories.base import Repository


class ApiKeyRepository(Repository):
    table = "api_keys"
    kind = "api_key"
    key_columns = ("id",)
    # Never the hash: nothing that leaves this repository can verify a key.
    columns = "id, user_id, name, prefix, created_at, expires_at, revoked_at"

    async def create(self, user_id: UUID, name: str, prefix: str, key_hash: bytes,
                     expires_at: datetime | None) -> asyncpg.Record:
        return await self._fetch_one(
            "INSERT INTO api_keys (user_id, name, prefix, key_hash, expires_at) "
            f"VALUES ($1, $2, $3, $4, $5) RETURNING {self.columns}",
            user_id, name, prefix, key_hash, expires_at)

    async def get(self, key_id: UUID) -> asyncpg.Record:
        return await self._require(key_id)

    async def revoke(self, key_id: UUID) -> asyncpg.Record:
        row = await self.conn.fetchrow(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 "
            f"RETURNING {self.columns}", key_id)
        if row is None:
            raise NotFound(self.kind, key_id)
        return row

    async def list(self, user_id: UUID | None, pagination: PageRequest) -> Page:
        where, args = ([], []) if user_id is None else (["user_id = $1"], [user_id])
        return await fetch_page(self.conn, scope="api_keys", select=self.columns,
                                table="api_keys", where=where, args=args, pagination=pagination)
