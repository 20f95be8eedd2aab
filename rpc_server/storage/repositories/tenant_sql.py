"""Running a tenant's own SQL: the database layer of execute_query.

Each statement runs on a connection of the separate query pool (asyncpg's full reset on
release: settings, advisory locks, LISTEN and cursors never outlive a call; no statement
cache) inside a READ ONLY transaction, as the NOLOGIN role flexdb_query, with a pinned
search_path, a statement timeout and the tenant's ticket (sql/0004_query.sql). The caller's
text is wrapped as a subquery, so PostgreSQL itself accepts only a single query there (a
SET, a second statement or a data-modifying WITH is a syntax error), and the wrapper's LIMIT
caps the rows at the server. Only the extended protocol is used: one statement per call."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Iterable
from uuid import UUID

import orjson

from rpc_server.storage.db import Connection
from rpc_server.storage.tenant_values import coerce_params, json_safe, type_name

QUERY_ROLE = "flexdb_query"
SEARCH_PATH = "pg_catalog, flexdb_query, pg_temp"
TEMP_FILE_LIMIT = "256MB"
SETUP = ("SELECT set_config('flexdb.query_ticket', flexdb_private.query_ticket($1), true), "
         "set_config('statement_timeout', $2, true), "
         f"set_config('search_path', '{SEARCH_PATH}', true), "
         # The gate reads '...' the way PostgreSQL does only with this on (the default).
         "set_config('standard_conforming_strings', 'on', true)")
SETUP_TEMP_LIMIT = SETUP + f", set_config('temp_file_limit', '{TEMP_FILE_LIMIT}', true)"
# Last, and alone: from here on the connection acts as the restricted role.
ENTER_ROLE = f"SET LOCAL ROLE {QUERY_ROLE}"
FETCH_BATCH = 100
# The statement timeout ends a slow statement in the server; this ends a call whose fetches
# together run too long, or a server that does not answer.
CLIENT_GRACE_S = 2.0
# What the query role can still reach of what the gate refuses: catalog tables and views, the
# server's schemas, functions refused by name, and any function of pg_catalog that is not on
# the reviewed allowlist flexdb_private.query_functions (a name, or one signature).
# Migrations 0004, 0011 and 0014 revoke them from PUBLIC; the server refuses to run tenant SQL
# while any is left (a function a newer PostgreSQL adds, until a migration reviews it).
REACHABLE_SERVER_OBJECTS = """
    SELECT c.oid::regclass::text FROM pg_catalog.pg_class c
    WHERE c.relnamespace IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
      AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
      AND (has_table_privilege($1, c.oid, 'SELECT')
           OR has_any_column_privilege($1, c.oid, 'SELECT'))
    UNION ALL
    SELECT 'schema ' || n.nspname FROM pg_catalog.pg_namespace n
    WHERE n.nspname = ANY($2::text[]) AND has_schema_privilege($1, n.oid, 'USAGE')
    UNION ALL
    SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p
    WHERE p.pronamespace = 'pg_catalog'::regnamespace
      AND (p.proname = ANY($3::text[]) OR p.proname LIKE ANY($4::text[]))
      AND p.proname <> ALL($5::text[])
      AND has_function_privilege($1, p.oid, 'EXECUTE')
    UNION
    SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p
    WHERE p.pronamespace = 'pg_catalog'::regnamespace
      AND has_function_privilege($1, p.oid, 'EXECUTE')
      AND NOT EXISTS (SELECT 1 FROM flexdb_private.query_functions a
                      WHERE a.entry IN (p.proname, p.oid::regprocedure::text))
    ORDER BY 1 LIMIT 5"""


def _like_prefix(prefix: str) -> str:
    return prefix.replace("_", "\\_") + "%"


class ResultTooLarge(Exception):
    pass


@dataclass
class QueryResult:
    columns: list[dict]
    rows: list[list] = field(default_factory=list)
    truncated: bool = False
    duration_ms: float = 0.0
    bytes: int = 0  # the rows as JSON


WRAP_PREFIX = ("SELECT * FROM (SELECT t.*, sum(pg_column_size(t.*)) OVER "
               "(ROWS UNBOUNDED PRECEDING) AS flexdb_bytes FROM (\n")
SIZE_COLUMN = "flexdb_bytes"
RESULT_LIMIT_MESSAGE = "the result is larger than"


def wrap(sql: str, max_rows: int, max_bytes: int) -> str:
    """The caller's statement as a subquery: one query only, at most max_rows + 1 rows, and
    PostgreSQL itself stops (SQLSTATE 54000) once the rows add up to more than max_bytes, so
    an oversized result is never sent. Newlines keep a trailing -- comment of the caller's
    from swallowing the parenthesis."""
    return (f"{WRAP_PREFIX}{sql}\n) AS t) AS flexdb_result WHERE "
            f"flexdb_query.within_result_limit(flexdb_result.{SIZE_COLUMN}, {int(max_bytes)}) "
            f"LIMIT {int(max_rows) + 1}")


async def setup_problems(conn: Connection, *, schemas: Iterable[str],
                         functions: Iterable[str], prefixes: Iterable[str],
                         allowed: Iterable[str]) -> list[str]:
    """Why tenant SQL cannot be run safely on this database (empty when it can). The names
    are what the gate refuses (query.guard.server_names()): the query role must reach none
    of them, so each layer holds alone."""
    problems = []
    can_switch = await conn.fetchval(
        "SELECT rolsuper OR pg_has_role(current_user, $1, 'MEMBER') FROM pg_roles "
        "WHERE rolname = current_user", QUERY_ROLE)
    if not can_switch:
        problems.append(f"the server's role cannot SET ROLE {QUERY_ROLE}")
    reachable = await conn.fetch(
        REACHABLE_SERVER_OBJECTS, QUERY_ROLE, sorted(schemas), sorted(functions),
        [_like_prefix(p) for p in prefixes], sorted(allowed))
    if reachable:
        problems.append(f"{QUERY_ROLE} can still reach {', '.join(r[0] for r in reachable)} "
                        "and maybe more (run migrations 0004, 0011 and 0014 as a superuser)")
    return problems


async def is_superuser(conn: Connection) -> bool:
    return await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")


class TenantSqlRepository:
    def __init__(self, conn: Connection, limit_temp_files: bool):
        self.conn = conn
        self.limit_temp_files = limit_temp_files

    async def run(self, tenant_id: UUID, sql: str, params: list, max_rows: int,
                  timeout_ms: int, max_bytes: int) -> QueryResult:
        """Errors from PostgreSQL (the caller's mistakes and the database refusing) come out
        as asyncpg exceptions; a result over `max_bytes` raises ResultTooLarge; parameter
        mismatches raise query_values.ParamError; running past the timeout, TimeoutError."""
        try:
            async with asyncio.timeout(timeout_ms / 1000 + CLIENT_GRACE_S):
                return await self._run(tenant_id, sql, params, max_rows, timeout_ms, max_bytes)
        except TimeoutError:
            self.conn.terminate()  # whatever it was doing, it goes; the pool opens another
            raise

    async def _run(self, tenant_id: UUID, sql: str, params: list, max_rows: int,
                   timeout_ms: int, max_bytes: int) -> QueryResult:
        started = time.perf_counter()
        async with self.conn.transaction(readonly=True):
            await self.conn.execute(SETUP_TEMP_LIMIT if self.limit_temp_files else SETUP,
                                    tenant_id, str(timeout_ms))
            # Described before the role switch: asyncpg looks up result types it does not
            # know with a query that calls set_config, which the query role may not. With
            # no statement cache asyncpg sends the text again with the execution, so it is
            # parsed, planned and run as the query role.
            statement = await self.conn.prepare(wrap(sql, max_rows, max_bytes))
            await self.conn.execute(ENTER_ROLE)
            args = coerce_params(params, statement.get_parameters())
            result = QueryResult([{"name": a.name, "type": type_name(a.type)}
                                  for a in statement.get_attributes()[:-1]])  # not ours
            size = 0
            async for record in statement.cursor(*args, prefetch=min(max_rows + 1,
                                                                      FETCH_BATCH)):
                if len(result.rows) == max_rows:
                    result.truncated = True
                    break
                row = [json_safe(v) for v in record.values()][:-1]
                size += len(orjson.dumps(row))
                if size > max_bytes:
                    raise ResultTooLarge()
                result.rows.append(row)
            result.bytes = size
        result.duration_ms = round((time.perf_counter() - started) * 1000, 3)
        return result
