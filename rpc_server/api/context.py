"""What a method handler gets: the shared app state plus the request's own id."""
from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from typing import Any, AsyncIterator, Awaitable, Callable, cast
from uuid import UUID, uuid4

import asyncpg

from rpc_server.api.params import LIST_TIMEOUT_MS
from rpc_server.api.shaping import Shaper
from rpc_server.audit import events as audit
from rpc_server.audit.chainer import AuditChainer
from rpc_server.audit.denied_calls import DeniedCalls
from rpc_server.caching.batch_reads import NodeReads, prefetch_batch_nodes
from rpc_server.caching.node_type_cache import NodeTypeCache
from rpc_server.caching.redis_link import RedisLink
from rpc_server.changes.hub import FeedHub
from rpc_server.changes.sequencer import FeedSequencer
from rpc_server.changes.stream_caps import StreamCaps
from rpc_server.changes.webhooks import WebhookDeliverer
from rpc_server.config import Settings
from rpc_server.errors import QueryRejected
from rpc_server.ops.metrics import Metrics
from rpc_server.pipelines.jobs import JobRunner
from rpc_server.pipelines.runner import PipelineRunner
from rpc_server.security.auth import Authenticator, Principal
from rpc_server.security.rate_limits import RateLimiter
from rpc_server.security.tenant_limits import TenantLimiter
from rpc_server.storage.db import Connection
from rpc_server.storage.repositories.audit import AuditRepository, PendingEvent, with_event
from rpc_server.storage.repositories.changes import ChangeRepository
from rpc_server.storage.response_budget import (
    ROW_OVERHEAD,
    WRITTEN_AT_ONCE_BYTES,
    ResponseBudget,
    ResponseMemory,
)
from rpc_server.storage.vectors import UNAVAILABLE, VectorSupport
from rpc_server.validation.schemas import ValidatorCache


@dataclass(frozen=True, kw_only=True)
class AppState:
    """Everything a call reaches beyond its request: built once when the app starts
    (app.py, build_state) and never changed after."""
    settings: Settings
    pool: asyncpg.Pool
    shaper: Shaper
    validators: ValidatorCache
    auth: Authenticator
    denied: DeniedCalls
    query: "QueryEnvironment"
    pipelines: PipelineRunner
    node_types: NodeTypeCache
    chainer: AuditChainer
    metrics: Metrics
    limits: RateLimiter
    redis: RedisLink | None
    node_reads: NodeReads
    pool_shares: TenantLimiter  # one tenant's calls wait for their own share of the pool
    response_memory: ResponseMemory
    sequencer: FeedSequencer  # numbers each tenant's change events after commit
    feed: FeedHub  # this process's reader of new change events, for its streams
    streams: StreamCaps  # open change streams, per key and per tenant
    webhooks: WebhookDeliverer  # this process's webhook delivery worker
    jobs: JobRunner  # this process's runner of jobs (migrate_nodes)
    vectors: VectorSupport = UNAVAILABLE  # pgvector found at start (storage/vectors.py)


def tenant_pool_share(settings: Settings) -> int:
    return settings.tenant_pool_max or max(1, settings.db_pool_max * 3 // 4)


def node_reads(pool: asyncpg.Pool, settings: Settings) -> NodeReads:
    """Coalesced get_node reads (caching/batch_reads.py): at most a quarter of the main pool
    at once, so a flood of reads leaves the rest of it to the other calls, each reading at
    most a quarter of FLEXDB_RESPONSE_MEMORY_BYTES of documents (and one past it)."""
    # a document as PostgreSQL writes it back (numbers in full, a space after each comma
    # and colon) is held to FLEXDB_MAX_BODY_BYTES (api/params.py)
    largest_document = settings.max_body_bytes + ROW_OVERHEAD
    return NodeReads(partial(PooledConnection, pool, settings.db_connect_timeout_s),
                     max(1, settings.db_pool_max // 4), settings.response_memory_bytes // 4,
                     largest_document)


class PooledConnection:
    """`async with`: a pooled connection, given back after. With `shares`, one of the
    tenant's share of the pool is taken first (and given back last). Every call that reads
    the database passes here, so it is a plain class (a generator-based context manager
    costs a few µs more per call) and it waits for a connection without asyncpg's timeout
    machinery when one is idle (taking it cannot wait then: a reconnect is bounded by the
    pool's connect timeout)."""
    __slots__ = ("pool", "wait_s", "shares", "tenant_id", "conn")

    def __init__(self, pool: asyncpg.Pool, wait_s: float,
                 shares: TenantLimiter | None = None, tenant_id: UUID | None = None):
        self.pool, self.wait_s = pool, wait_s
        self.shares, self.tenant_id = shares, tenant_id

    async def __aenter__(self) -> Connection:
        shares = self.shares
        if shares is not None and not shares.take(self.tenant_id):
            await shares.acquire(self.tenant_id)
        try:
            timeout = None if self.pool.get_idle_size() else self.wait_s
            self.conn = await self.pool.acquire(timeout=timeout)
        except BaseException:
            if self.shares is not None:
                self.shares.release(self.tenant_id)
            raise
        return self.conn

    async def __aexit__(self, *exc_info) -> None:
        try:
            await self.pool.release(self.conn)
        finally:
            if self.shares is not None:
                self.shares.release(self.tenant_id)


class TimedConnection:
    """A pooled connection whose statements must all end by a deadline: each is sent with
    what is left of it as asyncpg's timeout (asyncpg then cancels it in the server). A
    statement timeout that costs no transaction and no extra round trip."""

    def __init__(self, conn: Connection, seconds: float):
        self._conn = conn
        self._deadline = time.monotonic() + seconds

    def _timeout(self, asked: float | None) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError()
        return left if asked is None else min(asked, left)

    def __getattr__(self, name: str):
        return getattr(self._conn, name)

    async def fetch(self, query: str, *args, timeout: float | None = None, **kwargs):
        return await self._conn.fetch(query, *args, timeout=self._timeout(timeout), **kwargs)

    async def fetchrow(self, query: str, *args, timeout: float | None = None, **kwargs):
        return await self._conn.fetchrow(query, *args, timeout=self._timeout(timeout),
                                         **kwargs)

    async def fetchval(self, query: str, *args, timeout: float | None = None, **kwargs):
        return await self._conn.fetchval(query, *args, timeout=self._timeout(timeout),
                                         **kwargs)

    async def execute(self, query: str, *args, timeout: float | None = None, **kwargs):
        return await self._conn.execute(query, *args, timeout=self._timeout(timeout),
                                        **kwargs)


@dataclass
class QueryEnvironment:
    """What heavy calls run on: execute_query its own pool, the others (graph walks,
    filtered queries, bulk writes) at most half the main pool, all within a per-tenant
    limit; whether the database is set up to run tenant SQL safely (`problems` empty) and
    lets us cap temp files (superuser only)."""
    pool: asyncpg.Pool
    problems: list[str]
    limit_temp_files: bool
    per_tenant: TenantLimiter
    # heavy calls on the main pool at once, all tenants' (one set: key None): half of it
    heavy: TenantLimiter


@dataclass
class RequestContext:
    """One per HTTP request (shared by the members of a batch)."""
    state: AppState
    request_id: str
    authorization: str | None = None
    # Finds the peer's IP address (client_address), when first asked: few calls need it.
    address_of: Callable[[], str | None] | None = None
    _principal: Principal | None = None
    # (method, outcome: None or error code, tenant id or None) per call, for the access log
    calls: list = field(default_factory=list)
    batch: bool = False  # set by the dispatcher for a batch request
    # (tenant_id, id) -> node or None, read for a batch's get_node members up front
    prefetched_nodes: dict = field(default_factory=dict)
    prefetched_keys: set = field(default_factory=set)  # (tenant_id, id) texts read ahead
    _principal_lookup: asyncio.Future | None = None
    _budget: ResponseBudget | None = None
    _address: str | None = None

    @property
    def client_address(self) -> str | None:
        """The peer's IP address (transport/client_address.py)."""
        if self.address_of is not None:
            self._address, self.address_of = self.address_of(), None
        return self._address

    @property
    def budget(self) -> ResponseBudget:
        """The response's byte budget (made when a call first reads documents)."""
        if self._budget is None:
            self._budget = ResponseBudget(self.state.response_memory,
                                          self.state.settings.max_response_bytes)
        return self._budget

    def grant_alone(self, tenant_id: UUID | None, worst_case: int) -> int:
        """What a read that is its response's only one (not a batch, nothing read before
        it) may read without asking its budget for a grant: `worst_case` cut to the whole
        response's budget, as reserve() would grant it, when the worker's memory for
        responses has room and the read needs no large-response slot it would wait for.
        0 when it must ask (reserve() waits, or refuses). What it read is then settled as
        a grant of nothing, only when it is large enough to be held (settle_alone)."""
        if self.batch or self._budget is not None:
            return 0
        granted = min(worst_case, self.state.settings.max_response_bytes)
        memory = self.state.response_memory
        if not memory.has_room(tenant_id) \
                or (granted > memory.one_document and memory.large.full(tenant_id)):
            return 0
        return granted

    @property
    def holds_documents(self) -> bool:
        return self._budget is not None and bool(self._budget.held)

    def close(self) -> None:
        """The response has been written: what it held of the worker's memory is free."""
        if self._budget is not None:
            self._budget.close()

    @property
    def known_principal(self) -> Principal | None:
        """The caller if already authenticated in this request, else None (never raises)."""
        return self._principal

    async def principal(self) -> Principal:
        """The authenticated caller; raises Unauthenticated."""
        if self._principal is None:
            if not self.batch:
                self._principal = await self.state.auth.principal(self.state.pool,
                                                                  self.authorization)
            else:  # the members ask at once: one lookup for all of them
                if self._principal_lookup is None:
                    self._principal_lookup = asyncio.ensure_future(
                        self.state.auth.principal(self.state.pool, self.authorization))
                self._principal = await self._principal_lookup
        return self._principal

    async def prepare_batch(self, members: list) -> None:
        """Called once before a batch's members run: authenticate the caller (the members
        then find the caller, or the failure each of them reports, without waiting) and
        read ahead the nodes its get_node members ask for. Failures here are left for the
        members to meet and report."""
        try:
            await self.principal()
            await prefetch_batch_nodes(self, members)
        except Exception:  # noqa: BLE001 - each member meets it again and reports it
            self.prefetched_nodes, self.prefetched_keys = {}, set()

    def answers_at_once(self, member: Any) -> bool:
        """Whether a batch member will most likely answer without waiting (a get_node whose
        node was read ahead): the dispatcher then runs it in the request's own task instead
        of a Task of its own. (Were it to wait after all, it is still correct, only not
        concurrent with the other members.)"""
        if not self.prefetched_keys or type(member) is not dict \
                or member.get("method") != "get_node":
            return False
        params = member.get("params")
        return type(params) is dict and (params.get("tenant_id"), params.get("id")) \
            in self.prefetched_keys

    async def role_in(self, tenant_id) -> str | None:
        """The caller's role in a tenant ("owner" for platform admins), None if none."""
        principal = self._principal or await self.principal()
        if principal.run is not None:  # an execution token: its own tenant, its capped role
            return principal.run.role if principal.run.tenant_id == tenant_id else None
        if principal.is_platform_admin:
            return "owner"
        if principal.user_id is None:  # an anonymous caller that is not an admin
            return None
        return await self.state.auth.role_in(self.state.pool, principal.user_id, tenant_id)

    @property
    def shaper(self) -> Shaper:
        return self.state.shaper

    @property
    def validators(self) -> ValidatorCache:
        return self.state.validators

    def connection(self):
        return PooledConnection(self.state.pool, self.state.settings.db_connect_timeout_s)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self.connection() as conn:
            async with conn.transaction():
                yield conn


@dataclass
class Call:
    """One method call (a batch member): what a handler gets as `ctx`. Its transaction()
    appends the call's audit event just before commit, so every committed change has its
    event and a rolled-back one has none."""
    request: RequestContext
    method: str
    params: Any
    tenant_param: str | None = None
    target_kind: str | None = None
    target_id: Any = None
    audit_tenant: UUID | None = None
    # The tenant the call is scoped to (its permission's tenant param), if any, and the
    # app's state: plain attributes, read several times by every call.
    tenant_id: UUID | None = field(init=False, default=None)
    state: AppState = field(init=False)

    def __post_init__(self):
        self.target_kind = self.method.split("_", 1)[-1]
        self.target_id = getattr(self.params, "id", None)
        if self.tenant_param:
            self.tenant_id = getattr(self.params, self.tenant_param)
        self.state = self.request.state

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def shaper(self) -> Shaper:
        return self.request.state.shaper

    @property
    def validators(self) -> ValidatorCache:
        return self.request.state.validators

    async def principal(self) -> Principal:
        return await self.request.principal()

    async def role_in(self, tenant_id) -> str | None:
        return await self.request.role_in(tenant_id)

    def reserve(self, worst_case: int) -> Awaitable[int]:
        """(Awaited:) bytes this call may read for its answer (see
        storage/response_budget.py): at most `worst_case`, cut to what is left of the
        response's budget."""
        return self.request.budget.reserve(self.tenant_id, worst_case)

    def settle(self, granted: int, used: int) -> Awaitable[None]:
        """(Awaited:) after reading, keep `used` bytes of the `granted` (more, if it fits
        what is left of the response's budget; else the call fails: response_too_large)."""
        return self.request.budget.settle(self.tenant_id, granted, used)

    async def settle_alone(self, used: int) -> None:
        """After a read granted by grant_alone: what it read is held (settle()) when the
        response is large enough to be (WRITTEN_AT_ONCE_BYTES), and nothing is done else."""
        if used > WRITTEN_AT_ONCE_BYTES:
            await self.settle(0, used)

    def set_target(self, kind: str, target_id: Any, tenant: UUID | None = None) -> None:
        self.target_kind, self.target_id = kind, target_id
        if tenant is not None:
            self.audit_tenant = tenant

    def chain(self) -> UUID:
        """Which tenant's chain the call's events go to (the platform's for users and keys)."""
        if self.audit_tenant is not None:
            return self.audit_tenant
        if self.tenant_id is not None:
            return self.tenant_id
        return audit.PLATFORM_TENANT

    def connection(self):
        """A pooled connection; a tenant-scoped call takes one of its tenant's share."""
        tenant_id = self.tenant_id
        if tenant_id is None:
            return self.request.connection()
        state = self.state
        return PooledConnection(state.pool, state.settings.db_connect_timeout_s,
                                 state.pool_shares, tenant_id)

    @asynccontextmanager
    async def heavy(self, timeout_ms: int, what: str = "The query"
                    ) -> AsyncIterator[Connection]:
        """A connection for work whose cost the caller shapes (filters, walks, bulk
        writes): one of the tenant's heavy-call slots, at most half the main pool for all
        such calls, and statements that end after `timeout_ms` in all (asyncpg cancels one
        running past it in the server). Past it: -32006 `timeout`."""
        env, tenant_id = self.state.query, self.tenant_id
        await env.per_tenant.acquire(tenant_id)
        try:
            await env.heavy.acquire(None)  # (a limit of the server, not of one tenant)
            try:
                async with self.connection() as conn:
                    try:
                        # cast: TimedConnection forwards every call to conn (with a timeout)
                        yield cast(Connection, TimedConnection(conn, timeout_ms / 1000))
                    except (TimeoutError, asyncpg.QueryCanceledError):
                        raise QueryRejected(
                            f"{what} ran longer than {timeout_ms} ms and was cancelled",
                            type="timeout", timeout_ms=timeout_ms) from None
            finally:
                env.heavy.release(None)
        finally:
            env.per_tenant.release(tenant_id)

    def list_connection(self, scans: bool):
        """A connection for a list page: a heavy call (heavy()) when its filters are more
        than one index answers, so that reading it may scan the tenant's rows."""
        return self.heavy(LIST_TIMEOUT_MS, "The list (narrow its filters)") if scans \
            else self.connection()

    @asynccontextmanager
    async def heavy_transaction(self, timeout_ms: int, what: str
                                ) -> AsyncIterator[Connection]:
        """heavy() for a change, in a transaction with its audit event."""
        async with self.heavy(timeout_ms, what) as conn:
            async with conn.transaction():
                await self._note_actor(conn)
                yield conn
                await self.record(conn, "ok")
        self._committed()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self.connection() as conn:
            async with conn.transaction():
                await self._note_actor(conn)
                yield conn
                await self.record(conn, "ok")
        self._committed()

    async def log_event(self, outcome: str, **extra) -> None:
        """Append the call's audit event in a transaction of its own (for calls whose work
        is not a write of ours: refusals, tenant queries)."""
        async with self.request.connection() as conn:  # not the tenant's: it may be busy
            async with conn.transaction():
                await self.record(conn, outcome, **extra)
        self.state.chainer.kick(self.chain())

    async def record(self, conn: Connection, outcome: str, **extra) -> None:
        await AuditRepository(conn).append(self.event(outcome, **extra))

    def event(self, outcome: str, **extra) -> PendingEvent:
        """The call's audit event."""
        principal = self.request.known_principal
        summary = audit.params_of(self.params)
        return PendingEvent(
            tenant_id=self.chain(), id=uuid4(), created_at=datetime.now(timezone.utc),
            actor_user_id=principal.user_id if principal else None,
            actor_key_id=principal.key_id if principal else None, method=self.method,
            target_kind=self.target_kind,
            target_id=None if self.target_id is None else str(self.target_id),
            outcome=outcome, request_id=self.request_id,
            summary=audit.summarize({**summary, **extra}))

    async def write(self, change_sql: str, *args, conn: Connection | None = None
                    ) -> asyncpg.Record | None:
        """Run one change (an INSERT/UPDATE/DELETE … RETURNING over `args`) together with
        its audit event in a single statement: one round trip, one transaction, no event
        without the change. None when the change touched no row (then nothing is recorded).
        Set the target first: the event names it."""
        sql = with_event(change_sql, len(args) + 1)
        if conn is None:
            async with self.connection() as own:
                row = await own.fetchrow(sql, *args, *self.event("ok"), self._run_id())
        else:
            row = await conn.fetchrow(sql, *args, *self.event("ok"), self._run_id())
        if row is not None:
            self._committed()
        return row

    async def _note_actor(self, conn: Connection) -> None:
        """Name the caller on the change events of the transaction begun on `conn`
        (write() does it in its one statement)."""
        if self.state.settings.change_feed:
            principal = self.request.known_principal
            await ChangeRepository(conn).note_actor(
                principal.user_id if principal else None,
                principal.key_id if principal else None, self._run_id())

    def _run_id(self) -> UUID | None:
        """The pipeline run whose execution token made this call, if one did."""
        principal = self.request.known_principal
        return principal.run.run_id if principal and principal.run else None

    def _committed(self) -> None:
        """The call's change has committed: chain its audit event, number its feed events."""
        chain = self.chain()
        self.state.chainer.kick(chain)
        if chain != audit.PLATFORM_TENANT:
            self.state.sequencer.kick(chain)
