"""Graph traversal over relationships: everything reachable from a node, and shortest paths."""
from __future__ import annotations

from typing import Annotated, Literal

import asyncpg
from pydantic import BeforeValidator, Field, StrictInt

from rpc_server.api import results
from rpc_server.api.context import Call
from rpc_server.api.params import Id, Params, RelationshipType, zero_means
from rpc_server.api.registry import db_method, rpc_method
from rpc_server.errors import QueryRejected
from rpc_server.security.auth import tenant_role
from rpc_server.storage.pagination import BUDGET_COLUMNS
from rpc_server.storage.repositories import NodeRepository
from rpc_server.storage.repositories.graph import GraphRepository
from rpc_server.storage.response_budget import ROW_OVERHEAD

MAX_DEPTH = 10
MAX_LIMIT = 10_000
MAX_TYPES = 50

Direction = Annotated[Literal["out", "in", "both"],
                      BeforeValidator(lambda v: "out" if v in ("", None) else v)]
# [], "" and null mean "every type" (proto3-style clients send empty values).
RelationshipTypes = Annotated[
    Annotated[list[RelationshipType], Field(min_length=1, max_length=MAX_TYPES)] | None,
    BeforeValidator(lambda v: None if v == [] or v == "" else v)]


TimeoutMs = Annotated[StrictInt, Field(ge=1, le=30_000), zero_means(5000)]


class Traverse(Params):
    tenant_id: Id
    start_node_id: Id
    direction: Direction = "out"
    relationship_types: RelationshipTypes = None
    max_depth: StrictInt = Field(3, ge=1, le=MAX_DEPTH)
    limit: Annotated[StrictInt, zero_means(100)] = Field(100, ge=1, le=MAX_LIMIT)
    timeout_ms: TimeoutMs = 5000


class ShortestPath(Params):
    tenant_id: Id
    source_node_id: Id
    target_node_id: Id
    direction: Direction = "out"
    relationship_types: RelationshipTypes = None
    max_depth: StrictInt = Field(MAX_DEPTH, ge=1, le=MAX_DEPTH)
    timeout_ms: TimeoutMs = 5000


WHAT = "The traversal (lower max_depth or filter by relationship_types)"


def _timed_out(timeout_ms: int) -> QueryRejected:
    return QueryRejected(f"{WHAT} ran longer than {timeout_ms} ms and was cancelled",
                         type="timeout", timeout_ms=timeout_ms)


def _path_to(node_id, parents: dict) -> list[str]:
    """Relationship ids from the start to `node_id`, following parent links."""
    path = []
    while node_id in parents:
        rel_id, node_id = parents[node_id]
        path.append(rel_id)
    return path[::-1]


@rpc_method(Traverse, tenant_role("viewer"), result=results.TraverseResult,
             run_db=db_method("start_node_id"), tenant_must_exist=False)
async def traverse(ctx: Call, p: Traverse) -> dict:
    """Nodes reachable from a start node within max_depth hops, nearest first, each with its
    depth and one shortest path of relationship ids."""
    try:
        settings = ctx.state.settings
        granted = await ctx.reserve(min((p.limit + 1) * (settings.max_body_bytes + ROW_OVERHEAD),
                                        settings.max_page_bytes))
        used = 0
        try:
            async with ctx.heavy(p.timeout_ms, WHAT) as conn:
                rows, cut, used = await GraphRepository(conn).traverse(
                    p.tenant_id, p.start_node_id, p.direction, p.relationship_types,
                    p.max_depth, p.limit + 1, p.timeout_ms / 1000, granted)
                if not rows:  # (a node reached proves the start exists: the foreign keys)
                    await NodeRepository(conn).require_exists(p.tenant_id, p.start_node_id)
        finally:
            await ctx.settle(granted, used)
    except (TimeoutError, asyncpg.QueryCanceledError):
        raise _timed_out(p.timeout_ms) from None
    truncated = len(rows) > p.limit or cut
    rows = rows[:p.limit]
    parents = {r["id"]: (r["_rel_id"], r["_parent_id"]) for r in rows}
    hidden = ("_depth", "_rel_id", "_parent_id", *BUDGET_COLUMNS)
    return {"nodes": [{"node": ctx.shaper.one({k: v for k, v in r.items() if k not in hidden}),
                       "depth": r["_depth"], "path": _path_to(r["id"], parents)}
                      for r in rows],
            "truncated": truncated}


@rpc_method(ShortestPath, tenant_role("viewer"), result=results.ShortestPathResult,
             run_db=db_method("source_node_id", "target_node_id"), tenant_must_exist=False)
async def shortest_path(ctx: Call, p: ShortestPath) -> dict:
    """One shortest path between two nodes within max_depth hops, or null."""
    try:
        async with ctx.heavy(p.timeout_ms, WHAT) as conn:
            nodes = NodeRepository(conn)
            await nodes.require_exists(p.tenant_id, p.source_node_id)
            await nodes.require_exists(p.tenant_id, p.target_node_id)
            if p.source_node_id == p.target_node_id:
                return {"path": {"node_ids": [p.source_node_id], "relationship_ids": [],
                                 "length": 0}}
            links = await GraphRepository(conn).shortest_path(
                p.tenant_id, p.source_node_id, p.target_node_id, p.direction,
                p.relationship_types, p.max_depth, p.timeout_ms / 1000)
    except (TimeoutError, asyncpg.QueryCanceledError):
        raise _timed_out(p.timeout_ms) from None
    if links is None:
        return {"path": None}
    return {"path": {"node_ids": [p.source_node_id] + [link["node_id"] for link in links],
                     "relationship_ids": [link["rel_id"] for link in links],
                     "length": len(links)}}
