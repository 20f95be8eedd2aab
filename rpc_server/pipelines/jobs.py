"""Jobs, one runner per server process: long work started by a method (migrate_nodes) and
done in batches by the server holding the job's claim (sql/0020_jobs.sql; the SQL is in
storage/repositories/jobs.py).

Claims: as for webhooks (changes/webhooks.py), a server runs a job only while it holds its
lease in the database (FLEXDB_JOB_LEASE_S, renewed while it runs), so any number of server
processes share the jobs and never run one twice at once; one that dies leaves its jobs to
be claimed again once the lease has run out.

A `migrate_nodes` job walks its node type's nodes in keyset order ((created_at, id),
nodes_type_keyset_idx), those created by the time it started, FLEXDB_MIGRATION_BATCH_NODES
at a time. Each batch is one pipeline run in map mode (sandbox_worker/child.py: run() once per
node's data, in one process) queued through the fair pipeline queue with the tenant's caps,
like a trigger's runs; it is queued and recorded on the job (run_id, and the nodes' ids and
versions) in one transaction by the server holding the claim. When the run has ended, its
outcome is applied in ONE transaction: the node type share-locked and still at to_version,
each output validated against that schema, the nodes written guarded on the version the
batch read (changed data: version + 1; the same data: only schema_version stamped), the
nodes that failed recorded with why, the cursor and counters moved on, the run cleared and
one audit event. So a batch is applied once or not at all: a server that dies before the
commit leaves the run recorded on the job, and whoever claims it next waits for that run
(or applies its outcome at once); a run interrupted by its server's death (the pipeline
runner's sweep marks it so) is queued again from the cursor. The job fails, keeping what
it applied, when the node type's schema changes, the node type or pipeline is deleted, or
its creator may no longer migrate nodes (key revoked, membership or role lost)."""
from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime, timezone
from functools import partial
from typing import Any, Callable, Coroutine, NoReturn, Protocol
from uuid import UUID

import asyncpg
import orjson

from rpc_server.changes.claim_loop import ClaimLoop
from rpc_server.changes.webhooks import RUN_ENDED, creator_role
from rpc_server.config import Settings
from rpc_server.errors import Busy, NotFound, RpcError
from rpc_server.storage.repositories.audit import AuditRepository, PendingEvent
from rpc_server.storage.repositories.changes import ChangeRepository
from rpc_server.storage.repositories.jobs import JobRepository
from rpc_server.storage.repositories.node_types import NodeTypeRepository
from rpc_server.storage.repositories.nodes import NodeRepository
from rpc_server.storage.repositories.pipelines import PipelineRepository, PipelineRunRepository
from rpc_server.storage.repositories.webhooks import WebhookRepository

log = logging.getLogger(__name__)
MIGRATE_NODES = "migrate_nodes"
RUN_POLL_S = 0.25  # how often a job looks at its batch's run (and at once when it ends here)
BUSY_WAIT_S = 1.0  # the tenant's run queue is full: the job tries again after this
ERROR_PAUSE_S = 5.0
MAX_FAILURES = 100  # failed nodes listed on a job (all are counted)
MAX_FAILURE_ERRORS = 5  # validation errors listed per failed node
BATCH_MAX_BYTES = 256 * 1024  # node data in one batch (its run's input, and its result)
# A batch's run that ended without its code's outcome: queued again.
RETRIED = ("interrupted", "sandbox_unavailable", "busy")


class Validators(Protocol):
    """validation/schemas.ValidatorCache (given by the app: the layer is above this one)."""
    async def errors(self, node_type: Any, data: Any, field: str = "data") -> list[dict]: ...


ENDED = "ended"


class JobEnded(Exception):
    """The job finished (or was failed) in the transaction that raised it: commit it."""


def canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def failure(node_id: Any, reason: str, message: str, errors: list | None = None) -> dict:
    item: dict[str, Any] = {"node_id": str(node_id), "reason": reason, "message": message}
    if errors:
        item["errors"] = errors[:MAX_FAILURE_ERRORS]
    return item


class JobRunner(ClaimLoop):
    what = "jobs"

    def __init__(self, pool: asyncpg.Pool, settings: Settings, validators: Validators, *,
                 run_roles: frozenset[str], runs_queued: Callable[[], None] | None = None,
                 committed: Callable[[UUID], None] | None = None):
        """run_roles: the roles a job's creator must still hold one of for each batch (those
        migrate_nodes needs, from the registry); runs_queued wakes the local pipeline queue;
        committed(tenant) after a batch commits (chains its audit event, numbers its change
        events)."""
        super().__init__(settings.job_concurrency)
        self.pool, self.settings, self.validators = pool, settings, validators
        self.run_roles, self.runs_queued, self.committed = run_roles, runs_queued, committed
        self.wait_s = settings.db_connect_timeout_s
        self.batches_applied = 0  # by this process (read by benchmarks)
        self._run_ended = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    # ------------------------------------------------------------ the loop

    def run_ended(self) -> None:
        """A pipeline run ended in this process (the runner calls it)."""
        self._run_ended.set()

    async def _db(self, work):
        async with self.pool.acquire(timeout=self.wait_s) as conn:
            return await work(JobRepository(conn), conn)

    def start(self) -> None:
        if self.settings.job_concurrency > 0:
            self._tasks = [asyncio.get_running_loop().create_task(self._run())]

    async def stop(self) -> None:
        """Stop and let go of the claims held (a batch in flight is applied by whoever
        claims the job next)."""
        tasks = [*self._tasks, *self.active.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._tasks:
            try:
                await self._db(lambda r, _: r.release_all(self.worker))
            except Exception as exc:  # noqa: BLE001 - the leases run out instead
                log.warning("job claims left to expire at stop: %r", exc)

    async def _claim(self, free: int) -> list[asyncpg.Record]:
        return await self._db(lambda r, _: r.claim(self.worker, self.settings.job_lease_s,
                                                   free))

    def _serve_row(self, row: asyncpg.Record) -> Coroutine[Any, Any, None]:
        return self._serve(row["tenant_id"], row["id"])

    # ------------------------------------------------------------ one claimed job

    async def _serve(self, tenant_id: UUID, job_id: UUID) -> None:
        """Run a claimed job batch after batch until it ends, is cancelled or lost."""
        try:
            while True:
                job = await self._db(lambda r, _: r.held(tenant_id, job_id, self.worker))
                if job is None:
                    return  # finished, cancelled, or claimed by another server
                run_id = job["run_id"]
                if run_id is None:
                    queued = await self._queue_batch(tenant_id, job_id)
                    if queued is None:
                        return
                    if isinstance(queued, float):  # the tenant's run queue is full
                        await asyncio.sleep(queued)
                        if not await self._db(lambda r, _: r.renew(
                                tenant_id, job_id, self.worker, self.settings.job_lease_s)):
                            return
                        continue
                    run_id = queued
                if not await self._await_run(tenant_id, job_id, run_id):
                    return
                if not await self._apply(tenant_id, job_id, run_id):
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - let go; claimed again after a pause
            log.warning("job %s of %s interrupted (will resume): %r", job_id, tenant_id, exc)
            await asyncio.sleep(ERROR_PAUSE_S)
        finally:
            try:
                await asyncio.shield(self._db(
                    lambda r, _: r.release(tenant_id, job_id, self.worker)))
            except Exception:  # noqa: BLE001 - the lease runs out instead
                pass

    async def _end(self, conn, job, status: str, error: dict | None) -> NoReturn:
        """Finish the held job (in its transaction), with its audit event."""
        await JobRepository(conn).finish(job["tenant_id"], job["id"], self.worker, status,
                                         error)
        await self._audit(conn, job, {"status": status,
                                      **({"error": error["type"]} if error else {})})
        raise JobEnded()

    async def _audit(self, conn, job, summary: dict) -> None:
        await AuditRepository(conn).append(PendingEvent(
            tenant_id=job["tenant_id"], id=uuid.uuid4(), created_at=datetime.now(timezone.utc),
            actor_user_id=job["created_by_user_id"], actor_key_id=job["created_by_key_id"],
            method=job["kind"], target_kind="job", target_id=str(job["id"]), outcome="ok",
            request_id=job["request_id"] or None,
            summary=orjson.dumps(summary, option=orjson.OPT_SORT_KEYS).decode()))

    async def _node_type_at(self, conn, job, lock: bool) -> asyncpg.Record:
        """The job's node type, still at its to_version (else the job fails)."""
        params = job["params"]
        types = NodeTypeRepository(conn)
        node_type_id = UUID(params["node_type_id"])
        if lock:
            node_type = await types.share_lock(job["tenant_id"], node_type_id)
        else:
            node_type = (await types.get_many(job["tenant_id"], [node_type_id])).get(node_type_id)
        if node_type is None:
            await self._end(conn, job, "failed", {
                "type": "node_type_deleted", "message": "the node type was deleted"})
        assert node_type is not None
        if node_type["schema_version"] != params["to_version"]:
            await self._end(conn, job, "failed", {
                "type": "schema_changed",
                "message": f"the node type's schema changed to version "
                           f"{node_type['schema_version']} while the job migrated its nodes to "
                           f"version {params['to_version']}; the nodes already migrated stay "
                           "migrated: start another job with to_version "
                           f"{node_type['schema_version']} (only_outdated: true)",
                "current_version": node_type["schema_version"]})
        return node_type

    async def _queue_batch(self, tenant_id: UUID, job_id: UUID) -> UUID | float | None:
        """Queue the job's next batch and record it on the job, in one transaction: the
        run's id; how long to wait first (the tenant's queue is full); or None (the job
        ended, or the claim is gone)."""
        settings = self.settings

        async def queue(jobs: JobRepository, conn) -> UUID | None | bool:
            async with conn.transaction():
                try:
                    return await queue_in(jobs, conn)
                except JobEnded:  # (committed: the job's end is this transaction's change)
                    return False

        async def queue_in(jobs: JobRepository, conn) -> UUID | None:
            job = await jobs.hold(tenant_id, job_id, self.worker)
            if job is None or job["run_id"] is not None:
                return job["run_id"] if job is not None else None
            params = job["params"]
            await self._node_type_at(conn, job, lock=False)
            user_id, key_id = job["created_by_user_id"], job["created_by_key_id"]
            role, why = creator_role(
                await WebhookRepository(conn).creator_standing(tenant_id, user_id, key_id),
                self.run_roles, "migrate nodes")
            if role is None:
                await self._end(conn, job, "failed", {
                    "type": "creator_unauthorized",
                    "message": f"{why}; a job runs as the user and key that started it"})
            try:
                pipeline = await PipelineRepository(conn).get(
                    tenant_id, UUID(params["pipeline_id"]))
            except NotFound:
                await self._end(conn, job, "failed", {
                    "type": "pipeline_deleted", "message": "the pipeline was deleted"})
            after = ((job["cursor_created_at"], job["cursor_id"])
                     if job["cursor_id"] is not None else None)
            kept = await NodeRepository(conn).migration_batch(
                tenant_id, UUID(params["node_type_id"]), job["created_at"],
                params["to_version"] if params.get("only_outdated") else None, after,
                settings.migration_batch_nodes, BATCH_MAX_BYTES)
            if not kept:
                await self._end(conn, job, "succeeded", None)
            assert role is not None
            run = await PipelineRunRepository(conn).enqueue(
                pipeline, [orjson.Fragment(r["data"]) for r in kept], "basic", user_id,
                key_id, role,
                f"job:{job_id}:{job['batches'] + 1}", settings.pipeline_tenant_queued,
                map_items=True)
            last = kept[-1]
            batch = {"ids": [str(r["id"]) for r in kept],
                     "versions": [r["version"] for r in kept],
                     "last": [last["created_at"].isoformat(), str(last["id"])]}
            await jobs.batch_queued(tenant_id, job_id, self.worker,
                                    settings.job_lease_s, run["id"], batch)
            return run["id"]

        try:
            run_id = await self._db(queue)
        except Busy:  # the tenant's run queue is full: not the job's failure
            return BUSY_WAIT_S
        if run_id is False:
            self._committed(tenant_id)
            return None
        if run_id is not None and self.runs_queued is not None:
            self.runs_queued()
        return run_id

    async def _await_run(self, tenant_id: UUID, job_id: UUID, run_id: UUID) -> bool:
        """Wait for the batch's run to end, keeping the claim: False when the job is no
        longer this server's to run (cancelled, or the claim lost)."""
        loop = asyncio.get_running_loop()
        lease = self.settings.job_lease_s
        renewed = loop.time()
        while True:
            found = await self._db(lambda _, conn: PipelineRunRepository(conn).outcome(
                tenant_id, run_id))
            if found is None or found["status"] in RUN_ENDED:
                return True
            if loop.time() - renewed >= min(lease / 3, 5.0):
                if not await self._db(lambda r, _: r.renew(tenant_id, job_id, self.worker,
                                                           lease)):
                    return False
                renewed = loop.time()
            self._run_ended.clear()
            try:
                await asyncio.wait_for(self._run_ended.wait(), RUN_POLL_S)
            except asyncio.TimeoutError:
                pass

    async def _apply(self, tenant_id: UUID, job_id: UUID, run_id: UUID) -> bool:
        """Apply the ended batch run's outcome in one transaction; False when the job is no
        longer this server's to run (it ended, was cancelled, or the claim is lost)."""
        applied = await self._db(partial(self._apply_in, tenant_id, job_id, run_id))
        if applied == ENDED:
            self._committed(tenant_id)
            return False
        if applied is True:
            self.batches_applied += 1
            self._committed(tenant_id)
        return applied is not None

    async def _apply_in(self, tenant_id: UUID, job_id: UUID, run_id: UUID,
                        jobs: JobRepository, conn) -> bool | str | None:
        """True: applied; False: the batch is to be queued again; None: stop; ENDED: the
        job ended (committed)."""
        async with conn.transaction():
            try:
                return await self._apply_batch(tenant_id, job_id, run_id, jobs, conn)
            except JobEnded:
                return ENDED

    async def _apply_batch(self, tenant_id: UUID, job_id: UUID, run_id: UUID,
                           jobs: JobRepository, conn) -> bool | None:
        settings = self.settings
        job = await jobs.hold(tenant_id, job_id, self.worker)
        if job is None or job["run_id"] != run_id:
            return None
        run = await PipelineRunRepository(conn).outcome(tenant_id, run_id, with_result=True)
        if run is None:
            await self._end(conn, job, "failed", {
                "type": "run_deleted", "message": f"the batch's run {run_id} no longer "
                                                  "exists (was its pipeline deleted?)"})
        error = run["error"] if isinstance(run["error"], dict) else {}
        if run["status"] == "failed" and error.get("type") in RETRIED:
            await jobs.batch_dropped(tenant_id, job_id, self.worker)
            return False
        if settings.change_feed:
            await ChangeRepository(conn).note_actor(
                job["created_by_user_id"], job["created_by_key_id"], run_id)
        params, batch = job["params"], job["batch"]
        to_version = params["to_version"]
        node_type = await self._node_type_at(conn, job, lock=True)
        ids = [UUID(i) for i in batch["ids"]]
        versions, inputs, results = batch["versions"], run["input"], run["result"]
        failures: list[dict] = []
        changes: list[tuple[UUID, int, Any]] = []
        stamps: list[tuple[UUID, int]] = []
        if run["status"] != "succeeded" or not isinstance(results, list) \
                or len(results) != len(ids):
            why = (f"the batch's run {run_id} {run['status']} "
                   f"({error.get('type') or run['status']}): "
                   f"{error.get('message', 'no details')}")
            failures = [failure(i, "batch_failed", why) for i in ids]
        else:
            for node_id, version, before, item in zip(ids, versions, inputs, results):
                outcome = await self._checked(node_type, node_id, before, item)
                if isinstance(outcome, dict):
                    failures.append(outcome)
                elif outcome is None:
                    stamps.append((node_id, version))
                else:
                    changes.append((node_id, version, outcome[0]))
        nodes = NodeRepository(conn)
        changed = await nodes.apply_migration(tenant_id, node_type["id"], to_version, changes)
        # (as a schema change's stamps: no change of the data, so no change event)
        stamped = await nodes.stamp_schema_version(
            tenant_id, [n for n, _ in stamps], [v for _, v in stamps], to_version) \
            if stamps else set()
        for written in [c[0] for c in changes] + [st[0] for st in stamps]:
            if written not in changed and written not in stamped:
                failures.append(failure(
                    written, "changed_meanwhile", "the node was updated or deleted while "
                    "its batch ran: left as it is (a job with only_outdated: true "
                    "migrates it)"))
        room = max(0, MAX_FAILURES - job["failures_kept"])
        last_at, last_id = batch["last"]
        await jobs.batch_applied(
            tenant_id, job_id, self.worker, settings.job_lease_s, len(ids), len(changed),
            len(failures), failures[:room],
            (datetime.fromisoformat(last_at), UUID(last_id)))
        await self._audit(conn, job, {
            "batch": job["batches"] + 1, "run_id": str(run_id), "nodes": len(ids),
            "changed": len(changed), "stamped": len(stamped), "failed": len(failures),
            "node_type_id": params["node_type_id"], "to_version": to_version})
        return True

    async def _checked(self, node_type, node_id: UUID, before: Any,
                       item: Any) -> dict | tuple[Any] | None:
        """One node's outcome: a failure (dict), its new data (a 1-tuple), or None when it
        keeps its data (valid under the new schema as it is)."""
        if not isinstance(item, dict) or ("error" in item) == ("result" in item):
            return failure(node_id, "pipeline_error", "the run's result for it is malformed")
        if "error" in item:
            error = item["error"] if isinstance(item["error"], dict) else {}
            return failure(node_id, "pipeline_error",
                           str(error.get("message", "the pipeline failed for it")))
        data = item["result"]
        if not isinstance(data, dict):
            kind = "null" if data is None else type(data).__name__
            return failure(node_id, "not_an_object", f"the pipeline returned {kind} for it, "
                           "not a JSON object (a node's new data)")
        try:
            errors = await self.validators.errors(node_type, data)
        except RpcError as exc:  # e.g. validation over its CPU budget
            return failure(node_id, "invalid", exc.message)
        if errors:
            return failure(node_id, "invalid", "the new data does not satisfy schema version "
                           f"{node_type['schema_version']}", errors)
        return None if canonical(data) == canonical(before) else (data,)

    def _committed(self, tenant_id: UUID) -> None:
        if self.committed is not None:
            self.committed(tenant_id)
