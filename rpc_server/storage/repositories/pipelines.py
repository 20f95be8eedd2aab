from __future__ import annotations

from uuid import UUID

import asyncpg

from rpc_server.errors import Busy
from rpc_server.storage.pagination import Page, PageRequest, fetch_page
from rpc_server.storage.repositories.base import Repository

RUN_COLUMNS = ("id, tenant_id, pipeline_id, status, input, result, error, output, debug_level, "
               "timeout_ms, memory_mb, actor_user_id, actor_key_id, duration_ms, cpu_ms, "
               "peak_memory_kb, db_operations, created_at, started_at, finished_at, updated_at")
RUN_FIELDS = tuple(c.strip() for c in RUN_COLUMNS.split(","))
RUNS_LOCK_KEY = 0x72756E73  # "runs": advisory locks serialising one tenant's run creation


class PipelineRepository(Repository):
    table = "pipelines"
    kind = "pipeline"
    key_columns = ("tenant_id", "id")
    columns = ("id, tenant_id, name, description, code, timeout_ms, memory_mb, created_at, "
               "updated_at, version")
    size_sql = "octet_length(code) + octet_length(description)"

    async def create(self, tenant_id: UUID, name: str, description: str, code: str,
                     timeout_ms: int, memory_mb: int) -> asyncpg.Record:
        return await self._fetch_one(
            "INSERT INTO pipelines (tenant_id, name, description, code, timeout_ms, memory_mb) "
            f"VALUES ($1, $2, $3, $4, $5, $6) RETURNING {self.columns}",
            tenant_id, name, description, code, timeout_ms, memory_mb)

    async def get(self, tenant_id: UUID, pipeline_id: UUID) -> asyncpg.Record:
        return await self._require(tenant_id, pipeline_id)

    async def update(self, tenant_id: UUID, pipeline_id: UUID, changes: dict,
                     expected_version: int | None) -> asyncpg.Record:
        return await self._update((tenant_id, pipeline_id), changes, expected_version)

    async def delete(self, tenant_id: UUID, pipeline_id: UUID) -> None:
        await self._delete(tenant_id, pipeline_id)

    async def list(self, tenant_id: UUID, pagination: PageRequest,
                   max_bytes: int | None = None) -> Page:
        return await fetch_page(self.conn, scope="pipelines", select=self.columns,
                                table="pipelines", where=["tenant_id = $1"], args=[tenant_id],
                                pagination=pagination, size_sql=self.size_sql,
                                max_bytes=max_bytes)


class PipelineRunRepository(Repository):
    table = "pipeline_runs"
    kind = "pipeline_run"
    key_columns = ("tenant_id", "id")
    columns = RUN_COLUMNS
    size_sql = ("coalesce(octet_length(input::text), 0) + coalesce(octet_length(result::text), 0)"
                " + coalesce(octet_length(error::text), 0) + octet_length(output)"
                " + octet_length(db_operations::text)")

    async def create(self, pipeline: asyncpg.Record, status: str, input, debug_level: str,
                     actor_user_id, actor_key_id, actor_role: str,
                     request_id: str, map_items: bool = False) -> asyncpg.Record:
        """A new run with a copy of the pipeline's code and limits; a 'running' one gets
        its start time and deadline at once. map_items: `input` is a list and run() is
        applied to each item (sandbox_worker/child.py's map mode, for jobs)."""
        return await self._fetch_one(
            "INSERT INTO pipeline_runs (tenant_id, pipeline_id, status, input, debug_level, "
            "code, timeout_ms, memory_mb, actor_user_id, actor_key_id, actor_role, request_id, "
            "started_at, deadline, map_items) "
            "VALUES ($1, $2, $3::text, $4, $5, $6, $7::int, $8, $9, $10, $11, $12, "
            "CASE WHEN $3::text = 'running' THEN now() END, "
            "CASE WHEN $3::text = 'running' THEN now() + $7::int * interval '1 millisecond' END, "
            f"$13) RETURNING {self.columns}, code, actor_role, request_id, deadline, map_items",
            pipeline["tenant_id"], pipeline["id"], status, input, debug_level,
            pipeline["code"], pipeline["timeout_ms"], pipeline["memory_mb"], actor_user_id,
            actor_key_id, actor_role, request_id, map_items)

    async def get(self, tenant_id: UUID, run_id: UUID) -> asyncpg.Record:
        return await self._require(tenant_id, run_id)

    async def claim_queued(self, running_per_tenant: int) -> asyncpg.Record | None:
        """A queued run, now running: of the tenant whose turn it is (the one served longest
        ago, or never), among tenants with fewer than `running_per_tenant` runs running;
        that tenant's oldest. SKIP LOCKED: instances never take the same run. (A sweep over
        every tenant's queue: one of the statements that are not pinned to one tenant.)"""
        return await self.conn.fetchrow(
            "WITH next AS ("
            "  SELECT r.tenant_id, r.id FROM pipeline_runs r "
            "  LEFT JOIN pipeline_queue_turns t ON t.tenant_id = r.tenant_id "
            "  WHERE r.status = 'queued' AND (SELECT count(*) FROM pipeline_runs x "
            "    WHERE x.tenant_id = r.tenant_id AND x.status = 'running') < $1 "
            "  ORDER BY t.last_claimed_at NULLS FIRST, r.created_at "
            "  LIMIT 1 FOR UPDATE OF r SKIP LOCKED), "
            "turn AS ("
            "  INSERT INTO pipeline_queue_turns (tenant_id, last_claimed_at) "
            "  SELECT tenant_id, clock_timestamp() FROM next "
            "  ON CONFLICT (tenant_id) DO UPDATE SET last_claimed_at = EXCLUDED.last_claimed_at) "
            "UPDATE pipeline_runs r SET status = 'running', started_at = now(), "
            "deadline = now() + r.timeout_ms * interval '1 millisecond', updated_at = now() "
            "FROM next WHERE r.tenant_id = next.tenant_id AND r.id = next.id "
            f"RETURNING {', '.join('r.' + c.strip() for c in self.columns.split(','))}, "
            "r.code, r.actor_role, r.request_id, r.deadline, r.map_items", running_per_tenant)

    async def lock_tenant_runs(self, tenant_id: UUID) -> tuple[int, int]:
        """In a transaction: serialise run creation for the tenant (its caps hold under
        concurrent calls) and count its (queued, running) runs."""
        await self.conn.execute("SELECT pg_advisory_xact_lock($1::bigint)",
                                RUNS_LOCK_KEY ^ (tenant_id.int & 0x7FFFFFFFFFFFFFFF))
        row = await self._fetch_one(
            "SELECT count(*) FILTER (WHERE status = 'queued') AS queued, "
            "count(*) FILTER (WHERE status = 'running') AS running FROM pipeline_runs "
            "WHERE tenant_id = $1 AND status IN ('queued', 'running')", tenant_id)
        return row["queued"], row["running"]

    async def enqueue(self, pipeline: asyncpg.Record, input, debug_level: str, actor_user_id,
                      actor_key_id, actor_role: str, request_id: str,
                      queued_cap: int, map_items: bool = False) -> asyncpg.Record:
        """In a transaction: a new queued run, for the fair queue to start (run_pipeline with
        wait: false, triggers, and jobs' batches with map_items); Busy when the tenant
        already has `queued_cap` runs queued (FLEXDB_PIPELINE_TENANT_QUEUED)."""
        queued, _ = await self.lock_tenant_runs(pipeline["tenant_id"])
        if queued >= queued_cap:
            raise Busy(f"This tenant already has {queued} runs queued, its most "
                       "(FLEXDB_PIPELINE_TENANT_QUEUED); retry once some have started",
                       limit=queued_cap, retry_after=5.0)
        return await self.create(pipeline, "queued", input, debug_level, actor_user_id,
                                 actor_key_id, actor_role, request_id, map_items)

    async def outcome(self, tenant_id: UUID, run_id: UUID,
                      with_result: bool = False) -> asyncpg.Record | None:
        """A run's status and error, and its input and result with `with_result` (None: no
        such run)."""
        return await self.conn.fetchrow(
            f"SELECT status, error{', input, result' if with_result else ''} FROM pipeline_runs "
            "WHERE tenant_id = $1 AND id = $2", tenant_id, run_id)

    async def requeue(self, tenant_id: UUID, run_id: UUID) -> None:
        """Put a claimed run back in the queue (the sandbox had no free slot)."""
        await self.conn.execute(
            "UPDATE pipeline_runs SET status = 'queued', started_at = NULL, deadline = NULL, "
            "finished_at = NULL, error = NULL, updated_at = now() "
            "WHERE tenant_id = $1 AND id = $2 AND status = 'running'", tenant_id, run_id)

    async def finish(self, tenant_id: UUID, run_id: UUID, outcome: dict) -> asyncpg.Record | None:
        """Record a running run's outcome; None when it is no longer running (cancelled)."""
        return await self.conn.fetchrow(
            "UPDATE pipeline_runs SET status = $3, result = $4, error = $5, output = $6, "
            "duration_ms = $7, cpu_ms = $8, peak_memory_kb = $9, db_operations = $10, "
            "finished_at = now(), updated_at = now() "
            "WHERE tenant_id = $1 AND id = $2 AND status = 'running' "
            f"RETURNING {self.columns}",
            tenant_id, run_id, outcome["status"], outcome.get("result"), outcome.get("error"),
            outcome.get("output", ""), outcome.get("duration_ms"), outcome.get("cpu_ms"),
            outcome.get("peak_memory_kb"), outcome.get("db_operations", []))

    async def cancel(self, tenant_id: UUID, run_id: UUID) -> asyncpg.Record | None:
        """Cancel a queued or running run; None when it has already finished."""
        return await self.conn.fetchrow(
            "UPDATE pipeline_runs SET status = 'cancelled', finished_at = now(), "
            "updated_at = now(), error = '{\"type\": \"cancelled\", \"message\": "
            "\"the run was cancelled\"}'::jsonb "
            "WHERE tenant_id = $1 AND id = $2 AND status IN ('queued', 'running') "
            f"RETURNING {self.columns}", tenant_id, run_id)

    async def fail_interrupted(self, grace_s: float) -> int:
        """Runs still 'running' well past their deadline belong to a server that died."""
        result = await self.conn.execute(
            "UPDATE pipeline_runs SET status = 'failed', finished_at = now(), updated_at = now(), "
            "error = '{\"type\": \"interrupted\", \"message\": \"the server running it stopped\"}'"
            "::jsonb WHERE status = 'running' AND deadline < now() - $1 * interval '1 second'",
            grace_s)
        return int(result.split()[-1])

    async def list(self, tenant_id: UUID, pagination: PageRequest, status: str | None = None,
                   pipeline_id: UUID | None = None, max_bytes: int | None = None) -> Page:
        where = ["tenant_id = $1"]
        args: list[object] = [tenant_id]
        for column, value in (("status", status), ("pipeline_id", pipeline_id)):
            if value is not None:
                args.append(value)
                where.append(f"{column} = ${len(args)}")
        return await fetch_page(self.conn, scope="pipeline_runs", select=self.columns,
                                table="pipeline_runs", where=where, args=args,
                                pagination=pagination, size_sql=self.size_sql,
                                max_bytes=max_bytes)
