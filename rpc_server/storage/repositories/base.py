"""Shared statement builders for the repositories: versioned update, delete by key."""
from __future__ import annotations

from typing import Any

import asyncpg

from rpc_server.errors import NotFound, VersionConflict
from rpc_server.storage.db import Connection


class Repository:
    table: str
    columns: str
    # What reads and RETURNING select: `columns`, or with documents as JSON text (see
    # api/shaping.py: passed through to the response without being parsed and re-encoded).
    read_columns: str = ""
    # The bytes of a row's documents, over its read columns: a list page stops early once
    # its rows would take more than it may read (pagination.within_bytes). None: rows
    # without documents, small and bounded.
    size_sql: str | None = None
    # The read column whose text size_sql measures, when it is one: a page is then read
    # first with each document within its share of the page's bytes, without the running
    # total (pagination.fetch_within).
    document: str | None = None
    kind: str
    key_columns: tuple[str, ...]

    def __init__(self, conn: Connection):
        self.conn = conn

    def _key_where(self, start: int = 1) -> str:
        return " AND ".join(f"{c} = ${i}" for i, c in enumerate(self.key_columns, start))

    async def _fetch_one(self, query: str, *args: Any) -> asyncpg.Record:
        """fetchrow for a statement that always returns a row (INSERT ... RETURNING, an
        aggregate, an UPDATE of a row the caller locked): the row, never None."""
        row = await self.conn.fetchrow(query, *args)
        if row is None:
            raise RuntimeError(f"{self.table}: the statement returned no row")
        return row

    async def _get(self, *key: Any) -> asyncpg.Record | None:
        return await self.conn.fetchrow(
            f"SELECT {self.read_columns or self.columns} FROM {self.table} "
            f"WHERE {self._key_where()}", *key)

    async def _update(self, key: tuple, changes: dict[str, Any],
                      expected_version: int | None) -> asyncpg.Record:
        """Apply `changes` (column -> value; column names come from code, never callers).
        Fails with NotFound or VersionConflict instead of silently losing an update."""
        sets = [f"{col} = ${i}" for i, col in enumerate(changes, len(key) + 1)]
        sets += ["updated_at = now()", "version = version + 1"]
        args = [*key, *changes.values()]
        where = self._key_where()
        if expected_version is not None:
            args.append(expected_version)
            where += f" AND version = ${len(args)}"
        row = await self.conn.fetchrow(
            f"UPDATE {self.table} SET {', '.join(sets)} WHERE {where} "
            f"RETURNING {self.read_columns or self.columns}",
            *args)
        if row is not None:
            return row
        current = await self.conn.fetchval(
            f"SELECT version FROM {self.table} WHERE {self._key_where()}", *key)
        if current is None:
            raise NotFound(self.kind, key[-1])
        raise VersionConflict(self.kind, key[-1], expected_version, current)

    async def _delete(self, *key: Any) -> None:
        deleted = await self.conn.fetchval(
            f"DELETE FROM {self.table} WHERE {self._key_where()} RETURNING 1", *key)
        if deleted is None:
            raise NotFound(self.kind, key[-1])

    async def _require(self, *key: Any) -> asyncpg.Record:
        row = await self._get(*key)
        if row is None:
            raise NotFound(self.kind, key[-1])
        return row
