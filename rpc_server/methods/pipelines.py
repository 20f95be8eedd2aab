"""Pipeline group: stored Python pipelines (tenant admins manage them) and their runs
(members start and cancel them). Code is compiled with RestrictedPython when saved, and what
a run would refuse for certain is refused then too (sandbox_worker.policy.save_time_problems);
runs execute in the sandbox worker (see pipelines/runner.py and sandbox_worker/)."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictBool, StrictInt

from rpc_server.api import results
from rpc_server.api.context import Call
from rpc_server.api.params import (
    MAX_DESCRIPTION,
    Description,
    Document,
    Id,
    Name,
    OptionalId,
    PaginationParam,
    Params,
    Version,
    zero_means,
)
from rpc_server.api.registry import rpc_method
from rpc_server.errors import (
    Busy,
    Conflict,
    InvalidParams,
    NotFound,
    PipelineFailed,
    QueryRejected,
)
from rpc_server.methods.common import (
    DELETED,
    changes_of,
    json_size,
    read_one,
    read_page,
    require_changes,
    require_tenant,
)
from rpc_server.security.auth import tenant_role
from rpc_server.storage.repositories.pipelines import (
    RUN_FIELDS,
    PipelineRepository,
    PipelineRunRepository,
)
from rpc_server.storage.response_budget import ROW_OVERHEAD
from sandbox_worker.policy import MAX_CODE_LENGTH, compile_pipeline

UPDATABLE = ("name", "description", "code", "timeout_ms", "memory_mb")
MAX_TIMEOUT_MS = 60_000
DEFAULT_TIMEOUT_MS = 10_000
MAX_MEMORY_MB = 512
DEFAULT_MEMORY_MB = 128
MIN_MEMORY_MB = 16
RUN_STATUSES = ("queued", "running", "succeeded", "failed", "timed_out", "cancelled")


def _compiles(code: str) -> str:
    _, errors = compile_pipeline(code, saving=True)
    if errors:
        raise InvalidParams(errors=[
            {"field": "code", "message": e.message,
             **({"line": e.line} if e.line is not None else {}),
             **({"column": e.column} if e.column is not None else {})} for e in errors[:20]])
    return code


Code = Annotated[str, Field(min_length=1, max_length=MAX_CODE_LENGTH)]
TimeoutMs = Annotated[StrictInt, Field(ge=100, le=MAX_TIMEOUT_MS), zero_means(DEFAULT_TIMEOUT_MS)]
MemoryMb = Annotated[StrictInt, Field(ge=MIN_MEMORY_MB, le=MAX_MEMORY_MB),
                     zero_means(DEFAULT_MEMORY_MB)]


class CreatePipeline(Params):
    tenant_id: Id
    name: Name
    code: Code
    description: Description = ""
    timeout_ms: TimeoutMs = DEFAULT_TIMEOUT_MS
    memory_mb: MemoryMb = DEFAULT_MEMORY_MB


class PipelineId(Params):
    id: Id
    tenant_id: Id


class UpdatePipeline(Params):
    id: Id
    tenant_id: Id
    name: Name | None = None
    description: Description | None = None
    code: Code | None = None
    timeout_ms: TimeoutMs | None = None
    memory_mb: MemoryMb | None = None
    expected_version: Version | None = None


class ListPipelines(Params):
    tenant_id: Id
    pagination: PaginationParam


class RunPipeline(Params):
    tenant_id: Id
    pipeline_id: Id
    input: Document = None
    wait: StrictBool = True
    debug_level: Literal["none", "basic", "verbose"] = "basic"


class RunId(Params):
    id: Id
    tenant_id: Id


class ListPipelineRuns(Params):
    tenant_id: Id
    status: Literal[RUN_STATUSES] | None = None  # type: ignore[valid-type]
    pipeline_id: OptionalId = None
    pagination: PaginationParam


def _run(ctx: Call, row) -> dict:
    """A run as every method shows it (rows from create/claim carry internal columns)."""
    return ctx.shaper.one({k: row[k] for k in RUN_FIELDS})


# A run record's documents at their largest: its input (a request body), result (1 MiB)
# and output (64 KiB) as the sandbox worker caps them, its error and db operations.
RUN_RECORD_EXTRA = 3 * 1_048_576


def run_worst_case(ctx: Call) -> int:
    return ctx.state.settings.max_body_bytes + RUN_RECORD_EXTRA


@rpc_method(CreatePipeline, tenant_role("admin"), result=results.PipelineResult,
             run_db=None, tenant_must_exist=False)
async def create_pipeline(ctx: Call, p: CreatePipeline) -> dict:
    """Save a pipeline: Python code defining run(input, db), checked when saved."""
    _compiles(p.code)
    async with ctx.transaction() as conn:
        row = await PipelineRepository(conn).create(p.tenant_id, p.name, p.description, p.code,
                                                    p.timeout_ms, p.memory_mb)
        ctx.set_target("pipeline", row["id"])
    return {"pipeline": ctx.shaper.one(row)}


@rpc_method(PipelineId, tenant_role("viewer"), result=results.PipelineResult,
             run_db=None, tenant_must_exist=False)
async def get_pipeline(ctx: Call, p: PipelineId) -> dict:
    """Get a pipeline with its code."""
    async with ctx.connection() as conn:
        row = await read_one(ctx, MAX_CODE_LENGTH + MAX_DESCRIPTION,
                             lambda: PipelineRepository(conn).get(p.tenant_id, p.id),
                             lambda row: json_size(row["code"], row["description"]))
    return {"pipeline": ctx.shaper.one(row)}


@rpc_method(UpdatePipeline, tenant_role("admin"), result=results.PipelineResult,
             run_db=None, tenant_must_exist=False)
async def update_pipeline(ctx: Call, p: UpdatePipeline) -> dict:
    """Change a pipeline's name, description, code or limits (code is checked again)."""
    changes = changes_of(p, UPDATABLE)
    require_changes(changes, UPDATABLE)
    if "code" in changes:
        _compiles(changes["code"])
    async with ctx.transaction() as conn:  # (the answer within the budget, or no change)
        row = await read_one(ctx, 0, lambda: PipelineRepository(conn).update(
            p.tenant_id, p.id, changes, p.expected_version),
            lambda row: json_size(row["code"], row["description"]))
    return {"pipeline": ctx.shaper.one(row)}


@rpc_method(PipelineId, tenant_role("admin"), result=results.Deleted,
             run_db=None, tenant_must_exist=False)
async def delete_pipeline(ctx: Call, p: PipelineId) -> dict:
    """Delete a pipeline, its runs and its triggers."""
    async with ctx.transaction() as conn:
        await PipelineRepository(conn).delete(p.tenant_id, p.id)
    return DELETED


@rpc_method(ListPipelines, tenant_role("viewer"), result=results.PipelineList,
             run_db=None, tenant_must_exist=True)
async def list_pipelines(ctx: Call, p: ListPipelines) -> dict:
    """List a tenant's pipelines."""
    async with ctx.connection() as conn:
        await require_tenant(ctx, conn, p.tenant_id)
        page = await read_page(ctx, p.pagination, MAX_CODE_LENGTH + MAX_DESCRIPTION,
                               lambda max_bytes: PipelineRepository(conn).list(
                                   p.tenant_id, p.pagination, max_bytes))
    return ctx.shaper.page("pipelines", page)


@rpc_method(RunPipeline, tenant_role("member"), result=results.PipelineRunResult,
             run_db=None, tenant_must_exist=False)
async def run_pipeline(ctx: Call, p: RunPipeline) -> dict:
    """Run a pipeline: wait for its outcome (wait: true), or queue it and return at once."""
    runner = ctx.state.pipelines
    if not runner.enabled:
        raise PipelineFailed("Pipelines are not enabled on this server (no sandbox worker "
                             "configured: FLEXDB_SANDBOX_SECRET)", reason="disabled")
    principal = await ctx.principal()
    role = await ctx.role_in(p.tenant_id)
    assert role is not None  # authorized for the tenant already
    settings = ctx.state.settings
    async with ctx.transaction() as conn:
        pipeline = await PipelineRepository(conn).get(p.tenant_id, p.pipeline_id)
        runs = PipelineRunRepository(conn)
        if p.wait:
            _, running = await runs.lock_tenant_runs(p.tenant_id)
            if running >= settings.pipeline_tenant_running:
                raise Busy(f"This tenant already has {running} runs running, its most at "
                           "once (FLEXDB_PIPELINE_TENANT_RUNNING); retry shortly, or queue "
                           "the run (wait: false)", limit=settings.pipeline_tenant_running)
            run = await runs.create(pipeline, "running", p.input, p.debug_level,
                                    principal.user_id, principal.key_id, role, ctx.request_id)
        else:  # the queue (triggers queue their runs the same way: changes/webhooks.py)
            run = await runs.enqueue(pipeline, p.input, p.debug_level, principal.user_id,
                                     principal.key_id, role, ctx.request_id,
                                     settings.pipeline_tenant_queued)
        ctx.set_target("pipeline_run", run["id"])
    if not p.wait:
        runner.wake.set()
        return {"run": _run(ctx, run)}
    finished, busy = await runner.execute(run)
    if busy:
        raise Busy("Every sandbox slot is in use; retry shortly", run_id=str(run["id"]))
    if finished is None:  # cancelled while it ran
        async with ctx.connection() as conn:
            finished = await PipelineRunRepository(conn).get(p.tenant_id, run["id"])
    await _within_budget(ctx, finished)
    shaped = _run(ctx, finished)
    if finished["status"] != "succeeded":
        error = finished["error"] or {}
        raise PipelineFailed(f"The pipeline run {finished['status']}: "
                             f"{error.get('message', 'no details')}", run=shaped)
    return {"run": shaped}


async def _within_budget(ctx: Call, run) -> None:
    """The finished run's answer counted within the response's budget. Past it the run has
    happened all the same, so the refusal says which run it was and how it ended (a batch
    member must not look like a run that never took place)."""
    granted = await ctx.reserve(0)
    try:
        await ctx.settle(granted, ROW_OVERHEAD + json_size(
            run["input"], run["result"], run["error"], run["output"], run["db_operations"]))
    except QueryRejected as exc:
        raise QueryRejected(f"{exc.message} The run {run['status']}: read it with "
                            "get_pipeline_run.", type="response_too_large",
                            max_bytes=exc.data["max_bytes"], run_id=str(run["id"]),
                            status=run["status"]) from None


@rpc_method(RunId, tenant_role("viewer"), result=results.PipelineRunResult,
             run_db=None, tenant_must_exist=False)
async def get_pipeline_run(ctx: Call, p: RunId) -> dict:
    """Get a run: status, input, result, error, output, timings and db operations."""
    async with ctx.connection() as conn:
        row = await read_one(ctx, run_worst_case(ctx),
                             lambda: PipelineRunRepository(conn).get(p.tenant_id, p.id),
                             lambda row: json_size(row["input"], row["result"], row["error"],
                                                   row["output"], row["db_operations"]))
    return {"run": _run(ctx, row)}


@rpc_method(ListPipelineRuns, tenant_role("viewer"), result=results.PipelineRunList,
             run_db=None, tenant_must_exist=True)
async def list_pipeline_runs(ctx: Call, p: ListPipelineRuns) -> dict:
    """List a tenant's runs, newest last, by status or pipeline."""
    async with ctx.list_connection(p.status is not None) as conn:
        await require_tenant(ctx, conn, p.tenant_id)
        page = await read_page(ctx, p.pagination, run_worst_case(ctx),
                               lambda max_bytes: PipelineRunRepository(conn).list(
                                   p.tenant_id, p.pagination, p.status, p.pipeline_id,
                                   max_bytes))
    return ctx.shaper.page("runs", page)


@rpc_method(RunId, tenant_role("member"), result=results.PipelineRunResult,
             run_db=None, tenant_must_exist=False)
async def cancel_pipeline_run(ctx: Call, p: RunId) -> dict:
    """Cancel a queued or running run (a finished one is left as it is: conflict)."""
    async with ctx.transaction() as conn:  # (the answer within the budget, or no change)
        runs = PipelineRunRepository(conn)
        row = await read_one(ctx, 0, lambda: runs.cancel(p.tenant_id, p.id),
                             lambda row: json_size(row["input"], row["result"], row["error"],
                                                   row["output"], row["db_operations"]))
        if row is None:
            current = await runs.outcome(p.tenant_id, p.id)  # (not its documents)
            if current is None:
                raise NotFound("pipeline_run", p.id)
            raise Conflict(f"The run has already finished ({current['status']})",
                           status=current["status"])
        ctx.set_target("pipeline_run", p.id)
    await ctx.state.pipelines.cancel(p.id)
    return {"run": _run(ctx, row)}
