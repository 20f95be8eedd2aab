"""Keyset pagination on (created_at, id) with opaque, validated page tokens.

A page costs the same at any depth: the token carries the last row's sort key and the
query seeks past it through a (tenant, ..., created_at, id) index."""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime, timezone
from uuid import UUID

import asyncpg
import orjson

from .errors import InvalidParams
from .params import Pagination

TOKEN_FIELD = "pagination.page_token"
TOTAL_COLUMN = "_total_count"


@dataclass(frozen=True)
class Page:
    rows: list  # of asyncpg.Record or dict
    next_page_token: str
    total_count: int | None


def encode_token(scope: str, created_at: datetime, key: UUID) -> str:
    raw = orjson.dumps([scope, created_at.isoformat(), str(key)])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, scope: str) -> tuple[datetime, UUID]:
    """Tokens are not secret (they hold a timestamp and an id the caller has seen) but they
    come from callers, so every part is checked."""
    try:
        padded = token + "=" * (-len(token) % 4)
        decoded = orjson.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        if not isinstance(decoded, list) or len(decoded) != 3 \
                or not all(isinstance(part, str) for part in decoded):
            raise ValueError
        token_scope, created_at, key = decoded
        if token_scope != scope:
            raise ValueError
        created = datetime.fromisoformat(created_at)
        if created.tzinfo is None:
            raise ValueError
        return created.astimezone(timezone.utc), UUID(key)
    except (ValueError, TypeError, OverflowError, binascii.Error, UnicodeEncodeError):
        raise InvalidParams.field(
            TOKEN_FIELD, "is not a valid page token for this list "
            "(use the next_page_token of a previous page, or \"\" for the first page)") from None


async def fetch_page(conn: asyncpg.Connection, *, scope: str, select: str, table: str,
                     where: list[str], args: list, pagination: Pagination,
                     key_column: str = "id") -> Page:
    """`select`, `table`, `where` and `key_column` are code constants; values go in `args`
    and are referenced from `where` as $1..$n."""
    filters = list(where)
    query_args = list(args)
    if pagination.page_token:
        created_at, key = decode_token(pagination.page_token, scope)
        n = len(query_args)
        filters.append(f"(created_at, {key_column}) > (${n + 1}, ${n + 2})")
        query_args += [created_at, key]
    where_sql = " AND ".join(filters) or "TRUE"
    base_where = " AND ".join(where) or "TRUE"
    count_sql = f"SELECT count(*) FROM {table} WHERE {base_where}"
    # The count rides along as an uncorrelated subquery: one round trip, and the same
    # snapshot as the page, so the total agrees with the rows returned.
    counted = f", ({count_sql}) AS {TOTAL_COLUMN}" if pagination.include_total else ""
    limit_arg = len(query_args) + 1
    rows = await conn.fetch(
        f"SELECT {select}{counted} FROM {table} WHERE {where_sql} "
        f"ORDER BY created_at, {key_column} LIMIT ${limit_arg}",
        *query_args, pagination.page_size + 1)
    next_token = ""
    if len(rows) > pagination.page_size:
        rows = rows[:pagination.page_size]
        last = rows[-1]
        next_token = encode_token(scope, last["created_at"], last[key_column])
    total = None
    if pagination.include_total:
        if rows:
            total = rows[0][TOTAL_COLUMN]
            rows = [{k: v for k, v in r.items() if k != TOTAL_COLUMN} for r in rows]
        else:  # past the end: no row carried the count
            total = await conn.fetchval(count_sql, *args)
    return Page(rows, next_token, total)
