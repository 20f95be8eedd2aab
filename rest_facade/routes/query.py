"""Queries: read-only SQL, node search, graph traversal."""
from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

from fastapi import Request

from rpc_server.api.params import Params

from .. import forward
from ..models import body_of, result_of, wire
from . import make_router

router = make_router("queries")
if TYPE_CHECKING:  # a model made at run time is no type to mypy: see models.body_of
    ExecuteQueryBody = Params
    SearchNodesBody = Params
    TraverseBody = Params
    ShortestPathBody = Params
else:
    ExecuteQueryBody = body_of("execute_query", exclude=("tenant_id",))
    SearchNodesBody = body_of("query_nodes", exclude=("tenant_id",), name="SearchNodesBody")
    TraverseBody = body_of("traverse", exclude=("tenant_id",))
    ShortestPathBody = body_of("shortest_path", exclude=("tenant_id",))


async def _forward(request: Request, method: str, tenant_id: UUID, body) -> object:
    params = {"tenant_id": str(tenant_id), **wire(body)}
    return forward.json(await forward.call(request, method, params))


@router.post("/tenants/{tenant_id}/query", response_model=result_of("execute_query"))
async def execute_query(request: Request, tenant_id: UUID, body: ExecuteQueryBody):
    """Run one read-only SQL statement over the tenant's `nodes`, `node_types` and
    `relationships` views (refused statements: 400, details.layer says which guard)."""
    return await _forward(request, "execute_query", tenant_id, body)


@router.post("/tenants/{tenant_id}/nodes/search", response_model=result_of("query_nodes"))
async def search_nodes(request: Request, tenant_id: UUID, body: SearchNodesBody):
    """Find nodes with a JSON filter over data paths and node columns, keyset-paginated
    (`pagination.page_token` from the previous page)."""
    return await _forward(request, "query_nodes", tenant_id, body)


@router.post("/tenants/{tenant_id}/traverse", response_model=result_of("traverse"))
async def traverse(request: Request, tenant_id: UUID, body: TraverseBody):
    """Nodes reachable from `start_node_id` within `max_depth` hops, nearest first, each
    with its depth and one shortest path of relationship ids."""
    return await _forward(request, "traverse", tenant_id, body)


@router.post("/tenants/{tenant_id}/shortest-path", response_model=result_of("shortest_path"))
async def shortest_path(request: Request, tenant_id: UUID, body: ShortestPathBody):
    """One shortest path between two nodes within `max_depth` hops, or null."""
    return await _forward(request, "shortest_path", tenant_id, body)
