"""/tenants/{tenant_id}/jobs, and migrations of a node type's nodes (which start one)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal
from uuid import UUID

from fastapi import Depends, Query, Request

from rpc_server.api.params import Params
from rpc_server.methods.jobs import JOB_STATUSES

from .. import forward
from ..models import body_of, paging, result_of, wire
from . import make_router

router = make_router("jobs")
if TYPE_CHECKING:  # a model made at run time is no type to mypy: see models.body_of
    MigrateNodesBody = Params
else:
    MigrateNodesBody = body_of("migrate_nodes", exclude=("tenant_id", "node_type_id"))
JobStatus = Literal[JOB_STATUSES]  # type: ignore[valid-type]


def _ids(tenant_id: UUID, job_id: UUID) -> dict:
    return {"tenant_id": str(tenant_id), "id": str(job_id)}


@router.post("/tenants/{tenant_id}/node-types/{node_type_id}/migrations", status_code=202,
             response_model=result_of("migrate_nodes"))
async def migrate_nodes(request: Request, tenant_id: UUID, node_type_id: UUID,
                        body: MigrateNodesBody):
    """Start a job applying a stored pipeline to the data of the node type's nodes, to bring
    them to its current schema version (202: follow the job at the Location)."""
    params = {"tenant_id": str(tenant_id), "node_type_id": str(node_type_id), **wire(body)}
    result = await forward.call(request, "migrate_nodes", params)
    return forward.json(result, 202, f"/tenants/{tenant_id}/jobs/{result['job']['id']}")


@router.get("/tenants/{tenant_id}/jobs", response_model=result_of("list_jobs"))
async def list_jobs(request: Request, tenant_id: UUID,
                    pagination: Annotated[dict, Depends(paging)],
                    status: Annotated[JobStatus | None, Query()] = None):
    """A tenant's jobs, oldest first, optionally by status."""
    params = {"tenant_id": str(tenant_id), "pagination": pagination}
    if status is not None:
        params["status"] = status
    return forward.json(await forward.call(request, "list_jobs", params))


@router.get("/tenants/{tenant_id}/jobs/{job_id}", response_model=result_of("get_job"))
async def get_job(request: Request, tenant_id: UUID, job_id: UUID):
    """A job: status, progress, the first failures and why, its error and timing."""
    return forward.json(await forward.call(request, "get_job", _ids(tenant_id, job_id)))


@router.post("/tenants/{tenant_id}/jobs/{job_id}/cancel", response_model=result_of("cancel_job"))
async def cancel_job(request: Request, tenant_id: UUID, job_id: UUID):
    """Cancel a queued or running job (a finished one: 409)."""
    return forward.json(await forward.call(request, "cancel_job", _ids(tenant_id, job_id)))
