"""Jobs (tenant admins): long work done in batches by the servers (pipelines/jobs.py), with
its progress visible (get_job, list_jobs) and cancellable (cancel_job). The first kind:
migrate_nodes, a stored pipeline applied to each node of a node type to bring its data to
the node type's current schema version."""
from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import Field, StrictBool, StrictInt

from rpc_server.api import results
from rpc_server.api.context import Call
from rpc_server.api.params import Id, PaginationParam, Params
from rpc_server.api.registry import rpc_method
from rpc_server.errors import Conflict, Forbidden, InvalidParams, PipelineFailed
from rpc_server.methods.common import json_size, read_one, read_page, require_tenant
from rpc_server.pipelines.jobs import MAX_FAILURES, MIGRATE_NODES
from rpc_server.security.auth import tenant_role
from rpc_server.storage.repositories.jobs import JOB_FIELDS, JobRepository
from rpc_server.storage.repositories.node_types import NodeTypeRepository
from rpc_server.storage.repositories.nodes import NodeRepository
from rpc_server.storage.repositories.pipelines import PipelineRepository, PipelineRunRepository

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
# A job record at its largest: its params and MAX_FAILURES failures of a few KiB each.
JOB_WORST_CASE = 8192 + MAX_FAILURES * 8192


class MigrateNodes(Params):
    tenant_id: Id
    node_type_id: Id
    pipeline_id: Id = Field(description=(
        "The pipeline to apply: its run(input, db) gets one node's data as `input` and "
        "returns its new data (a JSON object)."))
    to_version: StrictInt = Field(ge=1, le=2**31 - 1, description=(
        "The node type's current schema version (get_node_type): the version the new data "
        "is validated against and recorded with."))
    only_outdated: StrictBool = Field(False, description=(
        "Only the nodes recording a schema version older than to_version (else every node "
        "of the type)."))


class JobId(Params):
    tenant_id: Id
    id: Id


class ListJobs(Params):
    tenant_id: Id
    status: Literal[JOB_STATUSES] | None = None  # type: ignore[valid-type]
    pagination: PaginationParam


def _job(ctx: Call, row, schema_versions: dict) -> dict:
    job = ctx.shaper.one({k: row[k] for k in JOB_FIELDS})
    node_type_id = (row["params"] or {}).get("node_type_id")
    job["current_schema_version"] = schema_versions.get(str(node_type_id))
    return job


async def _schema_versions(conn, tenant_id, rows) -> dict:
    """The current schema version of the node types the jobs migrate (by id as text)."""
    ids = {row["params"]["node_type_id"] for row in rows
           if row["kind"] == MIGRATE_NODES and "node_type_id" in (row["params"] or {})}
    if not ids:
        return {}
    found = await NodeTypeRepository(conn).schema_versions(tenant_id, [UUID(i) for i in ids])
    return {str(k): v for k, v in found.items()}


@rpc_method(MigrateNodes, tenant_role("admin"), result=results.JobResult,
             run_db=None, tenant_must_exist=False)
async def migrate_nodes(ctx: Call, p: MigrateNodes) -> dict:
    """Start a job that applies a stored pipeline to the data of every node of a node type
    (or only those recording an older schema version), in batches through the pipeline
    queue: each node's new data is validated against schema version to_version and written
    with it; a node that fails is left unchanged and listed with why. Follow it with
    get_job."""
    if not ctx.state.pipelines.enabled:
        raise PipelineFailed("Pipelines are not enabled on this server (no sandbox worker "
                             "configured: FLEXDB_SANDBOX_SECRET)", reason="disabled")
    principal = await ctx.principal()
    if principal.user_id is None:
        raise Forbidden("A job runs as the user and API key that start it: call with an API "
                        "key")
    settings = ctx.state.settings
    async with ctx.transaction() as conn:
        node_type = await NodeTypeRepository(conn).get(p.tenant_id, p.node_type_id)
        current = node_type["schema_version"]
        if p.to_version != current:
            raise InvalidParams.field(
                "to_version", f"must be the node type's current schema version, {current} "
                f"(not {p.to_version}): a migration writes data valid under the current "
                "schema")
        await PipelineRepository(conn).get(p.tenant_id, p.pipeline_id)
        jobs = JobRepository(conn)
        running = await jobs.active_on(p.tenant_id, MIGRATE_NODES, "node_type_id",
                                       str(p.node_type_id))
        if running is not None:
            raise Conflict(f"A migration of this node type is already queued or running "
                           f"(job {running}): wait for it or cancel it", job_id=str(running))
        params = {"node_type_id": str(p.node_type_id), "pipeline_id": str(p.pipeline_id),
                  "to_version": p.to_version, "only_outdated": p.only_outdated}
        row = await jobs.create(p.tenant_id, MIGRATE_NODES, params, 0,
                                (principal.user_id, principal.key_id), ctx.request_id,
                                settings.jobs_tenant_active)
        total = await NodeRepository(conn).migration_count(
            p.tenant_id, p.node_type_id, row["created_at"],
            p.to_version if p.only_outdated else None)
        row = await jobs.set_total(p.tenant_id, row["id"], total)
        ctx.set_target("job", row["id"])
    ctx.state.jobs.kick()
    return {"job": _job(ctx, row, {str(p.node_type_id): current})}


@rpc_method(JobId, tenant_role("admin"), result=results.JobResult,
             run_db=None, tenant_must_exist=False)
async def get_job(ctx: Call, p: JobId) -> dict:
    """A job: its status, progress (total, processed, changed, failed), the first nodes
    that failed and why, its error, and its timing."""
    async with ctx.connection() as conn:
        row = await read_one(ctx, JOB_WORST_CASE,
                             lambda: JobRepository(conn).get(p.tenant_id, p.id),
                             lambda row: json_size(row["params"], row["failures"]))
        versions = await _schema_versions(conn, p.tenant_id, [row])
    return {"job": _job(ctx, row, versions)}


@rpc_method(ListJobs, tenant_role("admin"), result=results.JobList,
             run_db=None, tenant_must_exist=True)
async def list_jobs(ctx: Call, p: ListJobs) -> dict:
    """List a tenant's jobs, oldest first, optionally by status."""
    async with ctx.connection() as conn:
        await require_tenant(ctx, conn, p.tenant_id)
        page = await read_page(ctx, p.pagination, JOB_WORST_CASE,
                               lambda max_bytes: JobRepository(conn).list(
                                   p.tenant_id, p.pagination, p.status, max_bytes))
        versions = await _schema_versions(conn, p.tenant_id, page.rows)
    shaped = ctx.shaper.page("jobs", page)
    shaped["jobs"] = [_job(ctx, row, versions) for row in page.rows]
    return shaped


@rpc_method(JobId, tenant_role("admin"), result=results.JobResult,
             run_db=None, tenant_must_exist=False)
async def cancel_job(ctx: Call, p: JobId) -> dict:
    """Cancel a queued or running job: its batch in flight is cancelled and not applied;
    the batches applied stay (a finished job: conflict)."""
    async with ctx.transaction() as conn:
        jobs = JobRepository(conn)
        row = await jobs.cancel(p.tenant_id, p.id)
        if row is None:
            current = await jobs.get(p.tenant_id, p.id)
            raise Conflict(f"The job has already finished ({current['status']})",
                           status=current["status"])
        if row["run_id"] is not None:
            await PipelineRunRepository(conn).cancel(p.tenant_id, row["run_id"])
        versions = await _schema_versions(conn, p.tenant_id, [row])
        ctx.set_target("job", p.id)
    if row["run_id"] is not None:
        await ctx.state.pipelines.cancel(row["run_id"])
    return {"job": _job(ctx, row, versions)}
