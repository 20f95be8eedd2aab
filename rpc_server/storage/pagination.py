"""Keyset pagination on (created_at, id) with opaque, validated page tokens.

A page costs the same at any depth: the token carries the last row's sort key and the
query seeks past it through a (tenant, ..., created_at, id) index."""
from __future__ import annotations

import base64
import binascii
import functools
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol
from uuid import UUID

import orjson

from rpc_server.errors import InvalidParams
from rpc_server.storage.db import Connection
from rpc_server.storage.response_budget import ROW_OVERHEAD, text_bytes

TOKEN_FIELD = "pagination.page_token"
TOTAL_COLUMN = "_total_count"
SORT_KEY_COLUMN = "_sort_key"  # a query page's sort value, for its next page token


class PageRequest(Protocol):
    """What a list asks for (the API's `pagination` param is one)."""
    page_size: int
    page_token: str
    include_total: bool


@dataclass(frozen=True)
class Page:
    rows: list  # of asyncpg.Record or dict
    next_page_token: str
    total_count: int | None
    bytes: int = 0  # of documents, when read within a byte budget


def encode_token(scope: str, sort_value: datetime | str, key: UUID) -> str:
    """The last row's sort key; a datetime, or any other sort value already as text."""
    value = sort_value.isoformat() if isinstance(sort_value, datetime) else sort_value
    raw = orjson.dumps([scope, value, str(key)])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def invalid_token() -> InvalidParams:
    return InvalidParams.field(
        TOKEN_FIELD, "is not a valid page token for this list "
        "(use the next_page_token of a previous page, or \"\" for the first page)")


def decode_token_text(token: str, scope: str) -> tuple[str, UUID]:
    """Tokens are not secret (they hold a sort value and an id the caller has seen) but they
    come from callers, so every part is checked."""
    try:
        padded = token + "=" * (-len(token) % 4)
        decoded = orjson.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        if not isinstance(decoded, list) or len(decoded) != 3 \
                or not all(isinstance(part, str) for part in decoded):
            raise ValueError
        token_scope, value, key = decoded
        if token_scope != scope:
            raise ValueError
        return value, UUID(key)
    except (ValueError, TypeError, OverflowError, binascii.Error, UnicodeEncodeError):
        raise invalid_token() from None


def parse_token_time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            raise ValueError
        return parsed.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise invalid_token() from None


def decode_token(token: str, scope: str) -> tuple[datetime, UUID]:
    value, key = decode_token_text(token, scope)
    return parse_token_time(value), key


# The column a page read within a byte budget carries besides the row's own (the shaper
# leaves it out of the items).
BUDGET_COLUMNS = ("_through",)


def within_bytes(page_sql: str, size_sql: str, max_arg: str) -> str:
    """`page_sql` (an ordered page, with LIMIT) cut to the rows that start within `max_arg`
    bytes: the running total of `size_sql` (over the page's own columns, plus ROW_OVERHEAD
    each) is `_through`, and a row comes when the bytes before it are at most the budget.
    So the database sends at most one row past the budget, which tells that the page was
    cut (see cut_to_budget). One window over the rows as the page orders them: no sort."""
    size = f"{size_sql} + {ROW_OVERHEAD}"
    return (f"SELECT * FROM (SELECT page.*, sum({size}) OVER (ROWS UNBOUNDED PRECEDING) "
            f"AS _through FROM ({page_sql}) AS page) AS sized "
            f"WHERE _through - ({size}) <= {max_arg}")


def cut_to_budget(rows: list, max_bytes: int) -> tuple[list, bool, int]:
    """(the rows within the budget, whether the page was cut for it, bytes they take). The
    first row comes whatever its size, alone: a page holds at least one item, or a list
    could never pass a document larger than its page's bytes (what the response may take
    in all is the response budget's to say: ResponseBudget.settle)."""
    if not rows:
        return rows, False, 0
    if rows[0]["_through"] > max_bytes:
        return rows[:1], True, rows[0]["_through"]
    if rows[-1]["_through"] > max_bytes:  # the row past the budget: not this page's
        return rows[:-1], True, rows[-2]["_through"]
    return rows, False, rows[-1]["_through"]


@functools.lru_cache(maxsize=256)  # (its argument is code's: a few select lists in all)
def column_names(select: str) -> tuple[str, ...]:
    """The names of a select list's columns (`a, b::text AS b`): each part is a plain name
    or ends in `AS name` (no commas inside an expression)."""
    names = tuple(part.rsplit(" AS ", 1)[-1].strip() for part in select.split(","))
    if not all(name.isidentifier() for name in names):
        raise ValueError(f"not a plain select list: {select!r}")
    return names


@functools.lru_cache(maxsize=256)  # (its arguments are code's: a few statements in all)
def within_share(page_sql: str, select: str, document: str, size_sql: str,
                 share_arg: str) -> str:
    """`page_sql` (an ordered page, with LIMIT, selecting `select`) with its `document`
    column (never NULL) left out, as NULL, of each row whose `size_sql` and ROW_OVERHEAD
    take more than `share_arg` bytes: a row's share of the page's budget. A page whose
    rows all keep their documents fits the budget whole, and that is known without the
    running total within_bytes keeps (a window over the rows: about 30 µs more of
    PostgreSQL's CPU a page, docs/PERFORMANCE.md)."""
    kept = f"{size_sql} + {ROW_OVERHEAD} <= {share_arg}"
    columns = ", ".join(
        f"CASE WHEN {kept} THEN {name} END AS {name}" if name == document else name
        for name in column_names(select))
    return f"SELECT {columns} FROM ({page_sql}) AS page"


async def fetch_within(conn: Connection, sql: str, args: list, *, rows_asked: int,
                       wanted: int, size_sql: str, max_bytes: int,
                       document: str | None = None, select: str = "") -> tuple[list, bool, int]:
    """The rows of `sql` (an ordered page of at most `rows_asked` rows, the first `wanted`
    of them the page's) that start within `max_bytes` of documents (see within_bytes and
    cut_to_budget): (rows, whether the page was cut for the budget, bytes they take).
    With `document` (the text column whose UTF-8 size `size_sql` is; `select`, the page's
    columns), the page is read first with each document within its share of the budget
    (within_share); only when one of the page's own rows is larger is it read again with
    the running total."""
    arg = f"${len(args) + 1}"
    if document is not None:
        rows = await conn.fetch(within_share(sql, select, document, size_sql, arg),
                                *args, max_bytes // rows_asked)
        kept = documents_within(rows, column_names(select).index(document), wanted)
        if kept is not None:
            return rows, False, kept
    rows = await conn.fetch(within_bytes(sql, size_sql, arg), *args, max_bytes)
    return cut_to_budget(rows, max_bytes)


def documents_within(rows: list, at: int, wanted: int) -> int | None:
    """The bytes the first `wanted` rows take (their documents, column `at`, and
    ROW_OVERHEAD each); None when one of them was left out (NULL: past its share). A row
    past the `wanted` only tells that there are more."""
    used = 0
    for row in rows[:wanted] if len(rows) > wanted else rows:
        text = row[at]
        if text is None:
            return None
        used += (len(text) if text.isascii() else text_bytes(text)) + ROW_OVERHEAD
    return used


@functools.lru_cache(maxsize=256)  # (its arguments are code's: a few shapes of page in all)
def page_statements(select: str, table: str, where: tuple[str, ...], n: int, key_column: str,
                    count_sql: str | None, counted: bool, after: bool) -> tuple[str, str, str]:
    """(the page's statement, the count's, the page's select list) for fetch_page: the
    page's args are the `n` that `where` references, then with `after` the sort key to seek
    past (two), then the LIMIT."""
    filters = list(where)
    if after:
        filters.append(f"(created_at, {key_column}) > (${n + 1}, ${n + 2})")
        n += 2
    where_sql = " AND ".join(filters) or "TRUE"
    base_where = " AND ".join(where) or "TRUE"
    count_sql = count_sql or f"SELECT count(*) FROM {table} WHERE {base_where}"
    # The count rides along as an uncorrelated subquery: one round trip, and the same
    # snapshot as the page, so the total agrees with the rows returned.
    total = f", ({count_sql}) AS {TOTAL_COLUMN}" if counted else ""
    # The LIMIT is a parameter, not text, on purpose: PostgreSQL then plans each page for
    # its tenant (a custom plan, ~0.1 ms of its CPU). With the LIMIT in the text it would
    # keep one generic plan per statement, costed for an average tenant, and a tenant far
    # larger than the rest (or any, on a table not yet analyzed) would have its every page
    # read and sort all its rows (measured: docs/PERFORMANCE.md).
    sql = (f"SELECT {select}{total} FROM {table} WHERE {where_sql} "
           f"ORDER BY created_at, {key_column} LIMIT ${n + 1}")
    return sql, count_sql, select + (f", {TOTAL_COLUMN}" if counted else "")


async def fetch_page(conn: Connection, *, scope: str, select: str, table: str,
                     where: list[str], args: list, pagination: PageRequest,
                     key_column: str = "id", count_sql: str | None = None,
                     size_sql: str | None = None, max_bytes: int | None = None,
                     document: str | None = None) -> Page:
    """`select`, `table`, `where`, `key_column`, `count_sql` and `size_sql` are code
    constants; values go in `args` and are referenced from `where` as $1..$n. `count_sql`
    (a statement over the same args giving the total) replaces counting the rows, e.g. with
    a maintained count. With `size_sql` (the bytes of a row's documents, over `select`'s
    columns) and `max_bytes`, the page stops early once its rows would take more than that
    (with a next_page_token for the rest); `document` is the column `size_sql` measures,
    when it is one (see fetch_within)."""
    query_args = list(args)
    token = pagination.page_token
    if token:
        query_args += decode_token(token, scope)
    sql, count_sql, page_select = page_statements(
        select, table, tuple(where), len(args), key_column, count_sql,
        pagination.include_total, bool(token))
    query_args.append(pagination.page_size + 1)
    cut, used = False, 0
    if size_sql is not None and max_bytes is not None:
        rows, cut, used = await fetch_within(
            conn, sql, query_args, rows_asked=pagination.page_size + 1,
            wanted=pagination.page_size, size_sql=size_sql, max_bytes=max_bytes,
            document=document, select=page_select)
    else:
        rows = await conn.fetch(sql, *query_args)
    next_token = ""
    if len(rows) > pagination.page_size or cut:
        rows = rows[:pagination.page_size]
        last = rows[-1]
        next_token = encode_token(scope, last["created_at"], last[key_column])
    total = None
    if pagination.include_total:
        if rows:  # (the shaper leaves the column out of the items)
            total = rows[0][TOTAL_COLUMN]
        else:  # past the end: no row carried the count
            total = await conn.fetchval(count_sql, *args)
    return Page(rows, next_token, total, used)
