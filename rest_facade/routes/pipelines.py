"""/tenants/{tenant_id}/pipelines and their runs."""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal
from uuid import UUID

from fastapi import Depends, Query, Request

from rpc_server.api.params import Params
from rpc_server.methods.pipelines import RUN_STATUSES

from .. import forward
from ..models import body_of, paging, result_of, wire
from . import make_router

router = make_router("pipelines")
if TYPE_CHECKING:  # a model made at run time is no type to mypy: see models.body_of
    CreatePipelineBody = Params
    UpdatePipelineBody = Params
    RunPipelineBody = Params
else:
    CreatePipelineBody = body_of("create_pipeline", exclude=("tenant_id",))
    UpdatePipelineBody = body_of("update_pipeline", exclude=("tenant_id", "id"))
    RunPipelineBody = body_of("run_pipeline", exclude=("tenant_id", "pipeline_id"))
RunStatus = Literal[RUN_STATUSES]  # type: ignore[valid-type]


def _ids(tenant_id: UUID, item_id: UUID) -> dict:
    return {"tenant_id": str(tenant_id), "id": str(item_id)}


@router.post("/tenants/{tenant_id}/pipelines", status_code=201,
             response_model=result_of("create_pipeline"))
async def create_pipeline(request: Request, tenant_id: UUID, body: CreatePipelineBody):
    """Save a pipeline: Python code defining run(input, db), checked when saved."""
    params = {"tenant_id": str(tenant_id), **wire(body)}
    result = await forward.call(request, "create_pipeline", params)
    return forward.created(result,
                           f"/tenants/{tenant_id}/pipelines/{result['pipeline']['id']}")


@router.get("/tenants/{tenant_id}/pipelines", response_model=result_of("list_pipelines"))
async def list_pipelines(request: Request, tenant_id: UUID,
                         pagination: Annotated[dict, Depends(paging)]):
    params = {"tenant_id": str(tenant_id), "pagination": pagination}
    return forward.json(await forward.call(request, "list_pipelines", params))


@router.get("/tenants/{tenant_id}/pipelines/{pipeline_id}",
            response_model=result_of("get_pipeline"))
async def get_pipeline(request: Request, tenant_id: UUID, pipeline_id: UUID):
    """Get a pipeline with its code."""
    return forward.json(await forward.call(request, "get_pipeline",
                                           _ids(tenant_id, pipeline_id)))


@router.put("/tenants/{tenant_id}/pipelines/{pipeline_id}",
            response_model=result_of("update_pipeline"))
@router.patch("/tenants/{tenant_id}/pipelines/{pipeline_id}",
              response_model=result_of("update_pipeline"))
async def update_pipeline(request: Request, tenant_id: UUID, pipeline_id: UUID,
                          body: UpdatePipelineBody):
    """Change a pipeline's name, description, code or limits (code is checked again)."""
    params = {**_ids(tenant_id, pipeline_id), **wire(body)}
    return forward.json(await forward.call(request, "update_pipeline", params))


@router.delete("/tenants/{tenant_id}/pipelines/{pipeline_id}", status_code=204,
               response_class=forward.Response)
async def delete_pipeline(request: Request, tenant_id: UUID, pipeline_id: UUID):
    """Delete a pipeline and its runs."""
    await forward.call(request, "delete_pipeline", _ids(tenant_id, pipeline_id))
    return forward.no_content()


@router.post("/tenants/{tenant_id}/pipelines/{pipeline_id}/runs", status_code=201,
             response_model=result_of("run_pipeline"),
             responses={202: {"model": result_of("run_pipeline"),
                              "description": "Queued (`wait`: false); poll the Location"}})
async def run_pipeline(request: Request, tenant_id: UUID, pipeline_id: UUID,
                       body: RunPipelineBody):
    """Run a pipeline: wait for its outcome (`wait`: true, the default: 201) or queue it
    and return at once (202). A run that fails answers 422 with the run in details.run."""
    params = {"tenant_id": str(tenant_id), "pipeline_id": str(pipeline_id), **wire(body)}
    result = await forward.call(request, "run_pipeline", params)
    run = result["run"]
    status = 202 if run["status"] in ("queued", "running") else 201
    return forward.json(result, status, f"/tenants/{tenant_id}/runs/{run['id']}")


@router.get("/tenants/{tenant_id}/runs", response_model=result_of("list_pipeline_runs"))
async def list_pipeline_runs(request: Request, tenant_id: UUID,
                             pagination: Annotated[dict, Depends(paging)],
                             status: Annotated[RunStatus | None, Query()] = None,
                             pipeline_id: Annotated[UUID | None, Query()] = None):
    """A tenant's runs, newest last, optionally by status or pipeline."""
    params = {"tenant_id": str(tenant_id), "pagination": pagination}
    if status is not None:
        params["status"] = status
    if pipeline_id is not None:
        params["pipeline_id"] = str(pipeline_id)
    return forward.json(await forward.call(request, "list_pipeline_runs", params))


@router.get("/tenants/{tenant_id}/runs/{run_id}", response_model=result_of("get_pipeline_run"))
async def get_pipeline_run(request: Request, tenant_id: UUID, run_id: UUID):
    """A run: status, input, result, error, output, timings and db operations."""
    return forward.json(await forward.call(request, "get_pipeline_run",
                                           _ids(tenant_id, run_id)))


@router.post("/tenants/{tenant_id}/runs/{run_id}/cancel",
             response_model=result_of("cancel_pipeline_run"))
async def cancel_pipeline_run(request: Request, tenant_id: UUID, run_id: UUID):
    """Cancel a queued or running run (a finished one: 409)."""
    return forward.json(await forward.call(request, "cancel_pipeline_run",
                                           _ids(tenant_id, run_id)))
