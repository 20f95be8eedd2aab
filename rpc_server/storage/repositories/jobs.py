"""Jobs (sql/0020_jobs.sql): what the methods start, show and cancel, and the claims,
batches and progress of the servers running them (pipelines/jobs.py). As for webhooks,
every write of a running server names it in its WHERE (claimed_by = $n): one whose claim
was taken over changes nothing."""
from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from rpc_server.errors import Busy
from rpc_server.storage.pagination import Page, PageRequest, fetch_page
from rpc_server.storage.repositories.base import Repository

JOB_COLUMNS = ("id, tenant_id, kind, status, params, total, processed, changed, failed, "
               "batches, failures, error, run_id, created_by_user_id, created_by_key_id, "
               "created_at, started_at, finished_at, updated_at, version")
JOB_FIELDS = tuple(c.strip() for c in JOB_COLUMNS.split(","))
# What a running server reads of a job it holds.
HELD_COLUMNS = (JOB_COLUMNS + ", cursor_created_at, cursor_id, batch, request_id, "
                "jsonb_array_length(failures) AS failures_kept")
LOCK_KEY = 0x6A6F6273  # "jobs": advisory locks serialising one tenant's job creation
LEASE = "now() + $4 * interval '1 second'"
ACTIVE = "('queued', 'running')"


class JobRepository(Repository):
    table = "jobs"
    kind = "job"
    key_columns = ("tenant_id", "id")
    columns = JOB_COLUMNS
    size_sql = "octet_length(params::text) + octet_length(failures::text)"

    async def create(self, tenant_id: UUID, kind: str, params: dict[str, Any], total: int,
                     created_by: tuple[UUID | None, UUID | None], request_id: str,
                     cap: int) -> asyncpg.Record:
        """In a transaction: a new queued job; Busy when the tenant already has `cap` jobs
        queued or running (FLEXDB_JOBS_TENANT_ACTIVE). The count and the insert take turns
        per tenant."""
        await self.conn.execute("SELECT pg_advisory_xact_lock($1::bigint)",
                                LOCK_KEY ^ (tenant_id.int & 0x7FFFFFFFFFFFFFFF))
        active = await self.conn.fetchval(
            f"SELECT count(*) FROM jobs WHERE tenant_id = $1 AND status IN {ACTIVE}", tenant_id)
        if active >= cap:
            raise Busy(f"This tenant already has {active} jobs queued or running, its most "
                       "(FLEXDB_JOBS_TENANT_ACTIVE); retry once one has finished, or cancel "
                       "one", limit=cap, setting="FLEXDB_JOBS_TENANT_ACTIVE", retry_after=10.0)
        return await self._fetch_one(
            "INSERT INTO jobs (tenant_id, kind, params, total, created_by_user_id, "
            "created_by_key_id, request_id) VALUES ($1, $2, $3, $4, $5, $6, $7) "
            f"RETURNING {self.columns}", tenant_id, kind, params, total, *created_by,
            request_id)

    async def set_total(self, tenant_id: UUID, job_id: UUID, total: int) -> asyncpg.Record:
        return await self._fetch_one(
            f"UPDATE jobs SET total = $3 WHERE tenant_id = $1 AND id = $2 RETURNING {self.columns}",
            tenant_id, job_id, total)

    async def active_on(self, tenant_id: UUID, kind: str, param: str,
                        value: str) -> UUID | None:
        """A queued or running job of `kind` whose params[param] is `value`, if any."""
        return await self.conn.fetchval(
            f"SELECT id FROM jobs WHERE tenant_id = $1 AND status IN {ACTIVE} AND kind = $2 "
            "AND params ->> $3 = $4 LIMIT 1", tenant_id, kind, param, value)

    async def get(self, tenant_id: UUID, job_id: UUID) -> asyncpg.Record:
        return await self._require(tenant_id, job_id)

    async def list(self, tenant_id: UUID, pagination: PageRequest, status: str | None = None,
                   max_bytes: int | None = None) -> Page:
        where = ["tenant_id = $1"]
        args: list[object] = [tenant_id]
        if status is not None:
            args.append(status)
            where.append("status = $2")
        return await fetch_page(self.conn, scope="jobs", select=self.columns, table="jobs",
                                where=where, args=args, pagination=pagination,
                                size_sql=self.size_sql, max_bytes=max_bytes)

    async def cancel(self, tenant_id: UUID, job_id: UUID) -> asyncpg.Record | None:
        """Cancel a queued or running job (the server running it lets go at its next step:
        a batch not yet applied is not applied); None when it has already finished."""
        return await self.conn.fetchrow(
            "UPDATE jobs SET status = 'cancelled', finished_at = now(), updated_at = now(), "
            "version = version + 1, claimed_by = NULL, claimed_until = NULL, "
            "error = '{\"type\": \"cancelled\", \"message\": \"the job was cancelled\"}'::jsonb "
            f"WHERE tenant_id = $1 AND id = $2 AND status IN {ACTIVE} "
            f"RETURNING {self.columns}", tenant_id, job_id)

    # ------------------------------------------------------------ the servers running jobs

    async def claim(self, worker: str, lease_s: float,
                    limit: int) -> builtins.list[asyncpg.Record]:
        """Up to `limit` queued or running jobs claimed by nobody (or by a server whose lease
        ran out), now running and claimed by `worker`: their (tenant_id, id). SKIP LOCKED:
        two servers never take the same one. (A sweep over every tenant's jobs: one of the
        statements not pinned to one tenant.)"""
        return await self.conn.fetch(
            "WITH due AS ("
            f"  SELECT j.tenant_id, j.id FROM jobs j WHERE j.status IN {ACTIVE} "
            "  AND (j.claimed_until IS NULL OR j.claimed_until < now()) "
            "  ORDER BY j.created_at LIMIT $2 FOR UPDATE OF j SKIP LOCKED) "
            "UPDATE jobs j SET claimed_by = $1, claimed_until = now() + $3 * interval "
            "'1 second', status = 'running', started_at = coalesce(j.started_at, now()) "
            "FROM due WHERE j.tenant_id = due.tenant_id AND j.id = due.id "
            "RETURNING j.tenant_id, j.id", worker, limit, lease_s)

    async def hold(self, tenant_id: UUID, job_id: UUID, worker: str) -> asyncpg.Record | None:
        """In a transaction: the job, locked, while `worker` holds it and it runs; else None."""
        return await self.conn.fetchrow(
            f"SELECT {HELD_COLUMNS} FROM jobs WHERE tenant_id = $1 AND id = $2 "
            "AND claimed_by = $3 AND status = 'running' FOR UPDATE", tenant_id, job_id, worker)

    async def held(self, tenant_id: UUID, job_id: UUID, worker: str) -> asyncpg.Record | None:
        """hold() without the lock (to look at it)."""
        return await self.conn.fetchrow(
            f"SELECT {HELD_COLUMNS} FROM jobs WHERE tenant_id = $1 AND id = $2 "
            "AND claimed_by = $3 AND status = 'running'", tenant_id, job_id, worker)

    async def renew(self, tenant_id: UUID, job_id: UUID, worker: str, lease_s: float) -> bool:
        return bool(await self.conn.fetchval(
            f"UPDATE jobs SET claimed_until = {LEASE} WHERE tenant_id = $1 AND id = $2 "
            "AND claimed_by = $3 AND status = 'running' RETURNING true",
            tenant_id, job_id, worker, lease_s))

    async def batch_queued(self, tenant_id: UUID, job_id: UUID, worker: str, lease_s: float,
                           run_id: UUID, batch: dict, total: int | None = None) -> None:
        """In hold()'s transaction, with the run's creation: the job's batch in flight is
        `run_id`, with the items in `batch` (and, at its first batch, its total)."""
        await self.conn.execute(
            f"UPDATE jobs SET run_id = $5, batch = $6, claimed_until = {LEASE}, "
            "total = coalesce($7, total), updated_at = now() "
            "WHERE tenant_id = $1 AND id = $2 AND claimed_by = $3",
            tenant_id, job_id, worker, lease_s, run_id, batch, total)

    async def batch_dropped(self, tenant_id: UUID, job_id: UUID, worker: str) -> None:
        """The batch's run ended without an outcome to apply (interrupted): it is queued
        again from the job's cursor."""
        await self.conn.execute(
            "UPDATE jobs SET run_id = NULL, batch = NULL, updated_at = now() "
            "WHERE tenant_id = $1 AND id = $2 AND claimed_by = $3", tenant_id, job_id, worker)

    async def batch_applied(self, tenant_id: UUID, job_id: UUID, worker: str, lease_s: float,
                            processed: int, changed: int, failed: int,
                            failures: builtins.list[dict], cursor: tuple[datetime, UUID]
                            ) -> None:
        """In hold()'s transaction, with the batch's writes: the job moves past the batch
        (its cursor, counters, first failures kept) and has none in flight."""
        await self.conn.execute(
            f"UPDATE jobs SET run_id = NULL, batch = NULL, claimed_until = {LEASE}, "
            "processed = processed + $5, changed = changed + $6, failed = failed + $7, "
            "failures = failures || $8::jsonb, cursor_created_at = $9, cursor_id = $10, "
            "batches = batches + 1, updated_at = now() "
            "WHERE tenant_id = $1 AND id = $2 AND claimed_by = $3",
            tenant_id, job_id, worker, lease_s, processed, changed, failed, failures,
            cursor[0], cursor[1])

    async def finish(self, tenant_id: UUID, job_id: UUID, worker: str, status: str,
                     error: dict | None = None) -> None:
        await self.conn.execute(
            "UPDATE jobs SET status = $4, error = $5, finished_at = now(), updated_at = now(), "
            "version = version + 1, run_id = NULL, batch = NULL, claimed_by = NULL, "
            "claimed_until = NULL WHERE tenant_id = $1 AND id = $2 AND claimed_by = $3 "
            "AND status = 'running'", tenant_id, job_id, worker, status, error)

    async def release(self, tenant_id: UUID, job_id: UUID, worker: str) -> None:
        await self.conn.execute(
            "UPDATE jobs SET claimed_by = NULL, claimed_until = NULL "
            "WHERE tenant_id = $1 AND id = $2 AND claimed_by = $3", tenant_id, job_id, worker)

    async def release_all(self, worker: str) -> None:
        """A stopping server lets go of what it holds (across tenants: its own claims)."""
        await self.conn.execute(
            "UPDATE jobs SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by = $1",
            worker)
