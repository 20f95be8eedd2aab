"""Graph walks over relationships with recursive SQL.

The walk keeps one row per (node, depth) and joins with UNION, so a cycle or a diamond
adds no rows once a node has been reached at a depth: the work is bounded by
nodes x max_depth, never by the number of paths. One path per node is rebuilt afterwards
from parent links (a relationship from a node one level closer to the start). Every scan is
keyed by tenant_id, and relationships can only join nodes of their own tenant (foreign
keys), so a walk never leaves the tenant. The SQL is chosen from a fixed set of texts
(direction x type filter), so each stays one cached prepared statement."""
from __future__ import annotations

from functools import lru_cache
from uuid import UUID

import asyncpg

from rpc_server.storage.db import Connection
from rpc_server.storage.pagination import cut_to_budget, within_bytes
from rpc_server.storage.repositories.nodes import NodeRepository

REVERSE = {"out": "in", "in": "out", "both": "both"}


def _edges(anchor: str, direction: str, typed: bool) -> str:
    """(rel_id, other_id) for the relationships at `anchor` in `direction`.
    $1 is the tenant, $4 the relationship types (when typed)."""
    types = " AND r.relationship_type = ANY($4::text[])" if typed else ""
    outgoing = ("SELECT r.id AS rel_id, r.target_node_id AS other_id FROM relationships r "
                f"WHERE r.tenant_id = $1 AND r.source_node_id = {anchor}{types}")
    incoming = ("SELECT r.id AS rel_id, r.source_node_id AS other_id FROM relationships r "
                f"WHERE r.tenant_id = $1 AND r.target_node_id = {anchor}{types}")
    if direction == "out":
        return outgoing
    if direction == "in":
        return incoming
    return f"{outgoing} UNION ALL {incoming}"


def _walk_only(direction: str, typed: bool) -> str:
    """The recursive CTE `walk`: (node, depth) from the start $2 out to depth $3."""
    return f"""
        WITH RECURSIVE walk (node_id, depth) AS (
            SELECT $2::uuid, 0
          UNION
            SELECT e.other_id, w.depth + 1
            FROM walk w CROSS JOIN LATERAL ({_edges('w.node_id', direction, typed)}) e
            WHERE w.depth < $3
        )"""


def _walk(direction: str, typed: bool) -> str:
    """CTEs `walk` (node, depth; $2 start, $3 max depth), `reached` (each node at its least
    depth) and `depth_of` (one jsonb object node id -> depth, so finding a node's depth is a
    lookup, not a join the planner might run as a nested loop over the whole walk)."""
    return _walk_only(direction, typed) + """,
        reached AS (
            SELECT node_id, min(depth) AS depth FROM walk GROUP BY node_id
        ),
        depth_of AS MATERIALIZED (  -- built once, not once per row it is read in
            SELECT jsonb_object_agg(node_id::text, depth) AS map FROM reached
        )"""


def _parent_link(child: str, direction: str, typed: bool) -> str:
    """One relationship (the least id) from a node one level closer to the start to
    `child` (a node with a `depth` column), as (rel_id, parent_id)."""
    return f"""
        SELECT e.rel_id, e.other_id AS parent_id
        FROM ({_edges(f'{child}.node_id', REVERSE[direction], typed)}) e
        WHERE (d.map ->> e.other_id::text)::int = {child}.depth - 1
        ORDER BY e.rel_id LIMIT 1"""


@lru_cache(maxsize=None)
def traverse_sql(direction: str, typed: bool) -> str:
    """The first $4 (or $5 when typed) reached nodes, nearest first, with the link to their
    parent. Parents are looked up only for those nodes: a node's parent is one level
    closer, so it always sorts (depth, id) before it and is among them too."""
    limit = "$5" if typed else "$4"
    columns = ", ".join("n." + c.strip() for c in NodeRepository.read_columns.split(","))
    return _walk(direction, typed) + f""",
        chosen AS (
            SELECT node_id, depth FROM reached WHERE depth > 0
            ORDER BY depth, node_id LIMIT {limit}
        )
        SELECT {columns}, c.depth AS _depth, p.rel_id AS _rel_id, p.parent_id AS _parent_id
        FROM chosen c CROSS JOIN depth_of d
        CROSS JOIN LATERAL ({_parent_link('c', direction, typed)}) p
        JOIN nodes n ON n.tenant_id = $1 AND n.id = c.node_id
        ORDER BY c.depth, c.node_id"""


@lru_cache(maxsize=None)
def traverse_within_bytes_sql(direction: str, typed: bool) -> str:
    """traverse_sql, cut to the rows whose documents fit the bytes in the last parameter."""
    return within_bytes(traverse_sql(direction, typed), NodeRepository.size_sql,
                        "$6" if typed else "$5")


@lru_cache(maxsize=None)
def distance_sql(direction: str, typed: bool) -> str:
    """The least depth at which the target ($4, or $5 when typed) is reached, or no row.
    The walk is evaluated lazily, level by level, so it stops as soon as the target turns
    up instead of exploring every level up to max_depth."""
    target = "$5" if typed else "$4"
    return _walk_only(direction, typed) + f"""
        SELECT depth FROM walk WHERE node_id = {target}::uuid LIMIT 1"""


@lru_cache(maxsize=None)
def path_sql(direction: str, typed: bool) -> str:
    """The links (node_id, rel_id, parent_id, depth) of one shortest path, walked back from
    the target ($4, or $5 when typed) one parent at a time; $3 is its distance."""
    target = "$5" if typed else "$4"
    return _walk(direction, typed) + f""",
        back (node_id, depth, rel_id, parent_id) AS (
            SELECT {target}::uuid, $3::int, NULL::uuid, NULL::uuid
          UNION ALL
            SELECT p.parent_id, b.depth - 1, p.rel_id, b.node_id
            FROM back b CROSS JOIN depth_of d
            CROSS JOIN LATERAL ({_parent_link('b', direction, typed)}) p
            WHERE b.depth > 0
        )
        SELECT parent_id AS node_id, rel_id, node_id AS parent_id, depth + 1 AS depth
        FROM back WHERE rel_id IS NOT NULL ORDER BY depth"""


class GraphRepository:
    def __init__(self, conn: Connection):
        self.conn = conn

    @staticmethod
    def _args(tenant_id, start, max_depth, types, *rest) -> list:
        args = [tenant_id, start, max_depth]
        if types:
            args.append(list(types))
        return args + list(rest)

    async def traverse(self, tenant_id: UUID, start: UUID, direction: str,
                       types: list[str] | None, max_depth: int, limit: int,
                       timeout: float, max_bytes: int) -> tuple[list[asyncpg.Record], bool, int]:
        """Reached nodes (not the start) with `_depth`, `_rel_id` and `_parent_id`, nearest
        first; at most `limit` rows, and only while their documents take at most
        `max_bytes`: (rows, whether rows were left out for the bytes, bytes)."""
        args = self._args(tenant_id, start, max_depth, types, limit, max_bytes)
        return cut_to_budget(await self.conn.fetch(
            traverse_within_bytes_sql(direction, bool(types)), *args, timeout=timeout),
            max_bytes)

    async def shortest_path(self, tenant_id: UUID, source: UUID, target: UUID,
                            direction: str, types: list[str] | None, max_depth: int,
                            timeout: float) -> list[asyncpg.Record] | None:
        """The links (node_id, rel_id, parent_id, depth) of one shortest path, start side
        first; None when the target is not reachable within max_depth."""
        typed = bool(types)
        distance = await self.conn.fetchval(
            distance_sql(direction, typed),
            *self._args(tenant_id, source, max_depth, types, target), timeout=timeout)
        if distance is None:
            return None
        return await self.conn.fetch(
            path_sql(direction, typed),
            *self._args(tenant_id, source, distance, types, target), timeout=timeout)
