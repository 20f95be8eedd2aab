"""Query group: read-only SQL over a tenant's data, and structured node queries."""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

import asyncpg
from asyncpg.exceptions import _base as asyncpg_base
from pydantic import AfterValidator, BeforeValidator, Field, StrictBool, StrictInt

from rpc_server.api import results
from rpc_server.api.context import Call
from rpc_server.api.params import (
    Document,
    Id,
    OptionalId,
    PaginationParam,
    Params,
    document_text,
    zero_means,
)
from rpc_server.api.registry import db_method, rpc_method
from rpc_server.api.vector_params import Near
from rpc_server.errors import Busy, InvalidParams, QueryRejected, Unavailable, VectorUnavailable
from rpc_server.methods.common import read_page, require_tenant
from rpc_server.query import guard as query_guard
from rpc_server.query.fusion import fuse, without_search
from rpc_server.security.auth import tenant_role
from rpc_server.storage.constraint_errors import UNAVAILABLE_ERRORS
from rpc_server.storage.node_filter import SqlArgs, compile_filter, parse_sort
from rpc_server.storage.node_search import SearchScope, SearchSql, uses_search
from rpc_server.storage.pagination import Page
from rpc_server.storage.repositories import (
    EmbeddingRepository,
    NodeRepository,
    NodeTypeRepository,
)
from rpc_server.storage.repositories.tenant_sql import (
    RESULT_LIMIT_MESSAGE,
    WRAP_PREFIX,
    ResultTooLarge,
    TenantSqlRepository,
)
from rpc_server.storage.tenant_values import ParamError

MAX_QUERY_PARAMS = 100
# The gate's parsing threads, apart from the default executor (and bounded by the per-tenant
# limit in front of them).
GATE_THREADS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="flexdb-sql-gate")
ClientDataError = asyncpg_base.DataError  # not asyncpg.DataError: that is SQLSTATE class 22
WRAPPER_PREFIX = len(WRAP_PREFIX)


class ExecuteQuery(Params):
    tenant_id: Id
    sql: str = Field(min_length=1, max_length=query_guard.MAX_SQL_LENGTH)
    params: Annotated[list[Document], BeforeValidator(lambda v: [] if v is None else v)] = \
        Field(default_factory=list, max_length=MAX_QUERY_PARAMS)
    max_rows: Annotated[StrictInt, zero_means(1000)] = Field(1000, ge=1, le=10_000)
    timeout_ms: Annotated[StrictInt, zero_means(5000)] = Field(5000, ge=1, le=30_000)


def _nesting_and_numbers(value: Any) -> Any:
    document_text(value)  # (a U+0000 in a filter its compiler names where it is)
    return value


class QueryNodes(Params):
    tenant_id: Id
    node_type_id: OptionalId = None
    filter: Annotated[dict[str, Any] | None, AfterValidator(_nesting_and_numbers)] = None
    sort: Annotated[dict[str, Any] | None, AfterValidator(_nesting_and_numbers)] = None
    pagination: PaginationParam
    timeout_ms: Annotated[StrictInt, zero_means(5000)] = Field(5000, ge=1, le=30_000)
    highlight: StrictBool = Field(False, description="With a search condition: each node's "
                                                     "`snippet`, the matches marked.")
    near: Near | None = None  # k nearest neighbours (pgvector): see query_nodes_near


def _database_refusal(exc: asyncpg.PostgresError) -> QueryRejected:
    details: dict[str, Any] = {"layer": "database", "sqlstate": exc.sqlstate}
    position = getattr(exc, "position", None)
    if position and str(position).isdigit() and int(position) > WRAPPER_PREFIX:
        details["position"] = int(position) - WRAPPER_PREFIX  # in the caller's text
    return QueryRejected(f"The database refused the statement: {exc.message or exc}", **details)


def _too_large(limit: int) -> QueryRejected:
    return QueryRejected(f"The result is larger than {limit} bytes: select fewer rows or "
                         "columns", type="too_many_rows", max_bytes=limit)


async def _run(ctx: Call, p: ExecuteQuery) -> dict:
    env = ctx.state.query
    if env.problems:
        raise QueryRejected("execute_query is disabled on this server: the database is not "
                            "set up to run tenant SQL safely (see the server log)")
    try:
        # In a thread: parsing a long statement must not hold up the event loop.
        statement = await asyncio.get_running_loop().run_in_executor(GATE_THREADS,
                                                                     query_guard.check, p.sql)
    except query_guard.GateRejection as exc:
        raise QueryRejected(f"Statement not allowed: {exc}", layer="gate") from None
    settings = ctx.state.settings
    # At most FLEXDB_QUERY_MAX_RESULT_BYTES, and what is left of the response's budget.
    max_bytes = await ctx.reserve(settings.query_max_result_bytes)
    used = 0
    try:
        used, result = await _run_within(ctx, p, statement, max_bytes)
    finally:
        await ctx.settle(max_bytes, used)
    return result


async def _run_within(ctx: Call, p: ExecuteQuery, statement, max_bytes: int) -> tuple[int, dict]:
    env, settings = ctx.state.query, ctx.state.settings
    try:
        conn = await env.pool.acquire(timeout=settings.db_connect_timeout_s)
    except TimeoutError:
        raise Busy("Too many queries are running on this server; retry shortly") from None
    except UNAVAILABLE_ERRORS:
        raise Unavailable() from None
    try:
        result = await TenantSqlRepository(conn, env.limit_temp_files).run(
            p.tenant_id, statement.sql, p.params, p.max_rows, p.timeout_ms, max_bytes)
    except ParamError as exc:
        raise InvalidParams.field("params", str(exc)) from None
    except (asyncpg.QueryCanceledError, TimeoutError):
        raise QueryRejected(f"The statement ran longer than {p.timeout_ms} ms and was "
                            "cancelled", type="timeout", timeout_ms=p.timeout_ms) from None
    except asyncpg.ProgramLimitExceededError as exc:  # the size check inside PostgreSQL
        if RESULT_LIMIT_MESSAGE not in (exc.message or ""):
            raise _database_refusal(exc) from None
        raise _too_large(max_bytes) from None
    except ResultTooLarge:  # the exact check on the JSON, here
        raise _too_large(max_bytes) from None
    except UNAVAILABLE_ERRORS:
        raise Unavailable() from None
    except asyncpg.PostgresError as exc:
        raise _database_refusal(exc) from None
    except ClientDataError as exc:  # a parameter asyncpg could not encode
        raise InvalidParams.field("params", str(exc)) from None
    except (asyncpg.InterfaceError, asyncpg.InternalClientError, ValueError, OverflowError,
            TypeError, RecursionError):
        # A column of a pseudo-type such as anyarray (pg_stats) has no codec; dates outside
        # years 1-9999, JSON nested past what can be written back, and the like.
        raise QueryRejected("The result could not be read as JSON: cast unusual columns to "
                            "text (col::text)") from None
    finally:
        await env.pool.release(conn)
    return result.bytes, {"columns": result.columns, "rows": result.rows,
                          "row_count": len(result.rows), "truncated": result.truncated,
                          "duration_ms": result.duration_ms}


@rpc_method(ExecuteQuery, tenant_role("viewer"), result=results.QueryResult,
             run_db=db_method("sql", "params"), tenant_must_exist=False)
async def execute_query(ctx: Call, p: ExecuteQuery) -> dict:
    """Run one read-only SQL statement over the tenant's nodes, node_types and
    relationships views."""
    try:
        async with ctx.state.query.per_tenant.slot(p.tenant_id):
            result = await _run(ctx, p)
    except (QueryRejected, InvalidParams, Busy) as exc:
        await ctx.log_event("rejected", rejection=exc.data["type"])
        raise
    await ctx.log_event("ok", row_count=result["row_count"])
    return result


@rpc_method(QueryNodes, tenant_role("viewer"), result=results.NodeList,
             run_db=db_method("filter"), tenant_must_exist=True)
async def query_nodes(ctx: Call, p: QueryNodes) -> dict:
    """Find nodes with a JSON filter over data paths and node columns (full-text `search`
    too), keyset-paginated, sorted by a column, a data path or the search rank. With `near`:
    the k nodes of `node_type_id` nearest to a vector by its embedding, among those the
    filter matches, nearest first, each with its `distance` (one page)."""
    if p.near is not None:
        return await query_nodes_near(ctx, p, p.near)
    args = SqlArgs()
    search = SearchSql(None, args)
    searching = uses_search(p.filter)
    if searching:  # checked now; compiled once the node types' languages are known
        search = SearchSql(SearchScope({}), SqlArgs())
        compile_filter(p.filter, search.args, search)
    else:
        condition = compile_filter(p.filter, args)
    sort = parse_sort(p.sort)
    # The filter and the sort shape the SQL: one of the tenant's heavy-call slots, under a
    # statement timeout.
    async with ctx.heavy(p.timeout_ms, "The query (narrow the filter)") as conn:
        await require_tenant(ctx, conn, p.tenant_id)
        if searching:
            scope = SearchScope.of(await NodeTypeRepository(conn).search_settings(
                p.tenant_id, p.node_type_id))
            search = SearchSql(scope, args)
            condition = compile_filter(p.filter, args, search)
        page = await read_page(ctx, p.pagination, ctx.state.settings.max_body_bytes,
                               lambda max_bytes: NodeRepository(conn).query(
                                   p.tenant_id, p.node_type_id, condition, args, sort,
                                   p.pagination, max_bytes, search, p.highlight))
    return ctx.shaper.page("nodes", page)


async def query_nodes_near(ctx: Call, p: QueryNodes, near: Near) -> dict:
    """query_nodes with `near`: filtered k-NN over the node type's embeddings (HNSW index
    when the type has one, iterative scan so that the filter does not starve it; exact
    below FLEXDB_VECTOR_INDEX_MIN_NODES nodes)."""
    vectors, settings = ctx.state.vectors, ctx.state.settings
    if not vectors.available:
        raise VectorUnavailable("near", vectors.reason)
    if p.node_type_id is None:
        raise InvalidParams.field("node_type_id", "is required with near (the node type "
                                  "whose embedding is searched)")
    if p.sort is not None:
        raise InvalidParams.field("sort", "must be absent with near: nodes come nearest first")
    if p.pagination.page_token:
        raise InvalidParams.field("pagination.page_token", "must be absent with near: the "
                                  "answer is one page of the k nearest nodes (raise k)")
    hybrid = uses_search(p.filter)
    args = SqlArgs()
    # Hybrid: the vector side matches the filter without its search conditions.
    condition = compile_filter(without_search(p.filter) if hybrid else p.filter, args)
    if hybrid:  # the text side's filter, checked now (compiled with the type's language)
        compile_filter(p.filter, SqlArgs(), SearchSql(SearchScope({}), SqlArgs()))
    elif p.highlight:
        raise InvalidParams.field("highlight", "needs a search condition in the filter")
    async with ctx.heavy(p.timeout_ms, "The k-NN query (narrow the filter or lower k)") as conn:
        await require_tenant(ctx, conn, p.tenant_id)
        # The declaration as it is now (not a cached one: its field and dimensions shape
        # the statement); one primary-key read next to the search.
        embedding = (await NodeTypeRepository(conn).get(p.tenant_id, p.node_type_id))[
            "embedding"]
        if not embedding or embedding["field"] != near.field:
            declared = f"its embedding is {embedding['field']}" if embedding else \
                "it declares no embedding (update_node_type: embedding)"
            raise InvalidParams.field("near.field", f"must be the node type's embedding "
                                      f"field: {declared}")
        if len(near.vector) != embedding["dimensions"]:
            raise InvalidParams.field("near.vector", f"must have exactly "
                                      f"{embedding['dimensions']} numbers (the node type's "
                                      f"embedding dimensions), not {len(near.vector)}")
        if near.metric == "cosine" and not any(near.vector):
            raise InvalidParams.field("near.vector", "must not be all zeros for the cosine "
                                      "metric (it has no direction)")
        if hybrid:
            page = await read_page(ctx, KnnPage(2 * near.k), settings.max_body_bytes,
                                   lambda max_bytes: _hybrid(conn, p, near, embedding,
                                                             condition, args, settings,
                                                             max_bytes))
        else:
            page = await read_page(ctx, KnnPage(near.k), settings.max_body_bytes,
                                   lambda max_bytes: _nearest(conn, p, near, embedding,
                                                              condition, args, settings,
                                                              max_bytes))
    return ctx.shaper.page("nodes", page)


class KnnPage:
    """What read_page reserves for: k rows."""
    page_token = ""
    include_total = False

    def __init__(self, k: int):
        self.page_size = k


async def _hybrid(conn, p: QueryNodes, near: Near, embedding: dict, condition: str,
                  args: SqlArgs, settings, max_bytes: int) -> Page:
    """Hybrid search: the k best full-text matches of the whole filter (by rank) and the k
    nearest nodes that match the rest of it, fused by reciprocal rank (query/fusion.py):
    the best k, each with its `score`, and its `rank` and `distance` where it had them."""
    assert p.node_type_id is not None  # checked by query_nodes_near
    text_args = SqlArgs()
    search = SearchSql(SearchScope.of(await NodeTypeRepository(conn).search_settings(
        p.tenant_id, p.node_type_id)), text_args)
    text_condition = compile_filter(p.filter, text_args, search)
    by_rank = await NodeRepository(conn).query(
        p.tenant_id, p.node_type_id, text_condition, text_args, parse_sort({"by": "rank"}),
        KnnPage(near.k), max_bytes, search, p.highlight)
    nearest = await _nearest(conn, p, near, embedding, condition, args, settings,
                             max_bytes - by_rank.bytes)
    rows: dict = {}
    for row in [*nearest.rows, *by_rank.rows]:  # a row in both: the text one, with distance
        rows[row["id"]] = {**rows.get(row["id"], {}), **dict(row)}
    fused = fuse([[r["id"] for r in by_rank.rows], [r["id"] for r in nearest.rows]], near.k)
    return Page([{**rows[node_id], "score": score} for node_id, score in fused], "", None,
                by_rank.bytes + nearest.bytes)


async def _nearest(conn, p: QueryNodes, near: Near, embedding: dict, condition: str,
                   args: SqlArgs, settings, max_bytes: int) -> Page:
    assert p.node_type_id is not None  # checked by query_nodes_near
    rows, used = await EmbeddingRepository(conn).nearest(
        p.tenant_id, p.node_type_id, embedding["dimensions"], near.metric,
        [float(x) for x in near.vector], near.k, condition, args,
        max(settings.vector_ef_search, near.k), settings.vector_iterative_scan, max_bytes)
    return Page(rows, "", None, used)
