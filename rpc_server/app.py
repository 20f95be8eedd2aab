"""The aiohttp application: POST /jsonrpc, GET /health, /ready and /metrics."""
from __future__ import annotations

import itertools
import logging
import re
import time
import uuid
import zlib
from functools import partial
from typing import Any

import asyncpg
from aiohttp import web

from rpc_server import methods  # noqa: F401  (registers every method)
from rpc_server.api.context import (
    AppState,
    QueryEnvironment,
    RequestContext,
    node_reads,
    tenant_pool_share,
)
from rpc_server.api.event_stream import stream_changes
from rpc_server.api.openrpc import rpc_discover
from rpc_server.api.params import set_document_limits
from rpc_server.api.registry import (
    build_dispatch_table,
    roles_that_may,
    run_db_methods,
    tenant_params,
    without_params,
)
from rpc_server.api.shaping import Shaper
from rpc_server.audit.chainer import AuditChainer
from rpc_server.audit.denied_calls import DeniedCalls
from rpc_server.caching.invalidation import Invalidation
from rpc_server.caching.node_type_cache import NodeTypeCache
from rpc_server.caching.redis_link import RedisLink
from rpc_server.caching.shared_cache import SharedCache
from rpc_server.changes.hub import FeedHub
from rpc_server.changes.sequencer import FeedSequencer
from rpc_server.changes.signing import SecretBox
from rpc_server.changes.stream_caps import StreamCaps
from rpc_server.changes.webhooks import WebhookDeliverer
from rpc_server.config import Settings, trusted_networks
from rpc_server.errors import INVALID_REQUEST
from rpc_server.ops.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from rpc_server.ops.metrics import Metrics, Readings
from rpc_server.ops.readiness import CHECK_TIMEOUT_S, readiness
from rpc_server.pipelines.jobs import JobRunner
from rpc_server.pipelines.runner import PipelineRunner
from rpc_server.pipelines.sandbox_client import SandboxClient
from rpc_server.query import guard as query_guard
from rpc_server.security.auth import Authenticator
from rpc_server.security.execution_tokens import run_token
from rpc_server.security.rate_limits import RateLimiter
from rpc_server.security.server_secret import server_secret
from rpc_server.security.tenant_limits import TenantLimiter
from rpc_server.storage.db import connect, create_pool, create_query_pool, ping
from rpc_server.storage.repositories.tenant_sql import is_superuser, setup_problems
from rpc_server.storage.response_budget import ROW_OVERHEAD, ResponseMemory
from rpc_server.storage.vectors import UNAVAILABLE, IndexPolicy, VectorIndexer, VectorSupport
from rpc_server.storage.vectors import detect as detect_vectors
from rpc_server.transport.client_address import client_address
from rpc_server.transport.json_codec import dumps
from rpc_server.transport.protocol import Dispatcher, internal_error, invalid_request, note
from rpc_server.validation import safe_regex
from rpc_server.validation.schemas import ValidatorCache, validation_limits

log = logging.getLogger(__name__)
access_log = logging.getLogger("flexdb.access")
STATE = web.AppKey("state", AppState)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
TRUSTED_PROXIES = web.AppKey("trusted_proxies", tuple)
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


# Generated request ids: random per process, then a counter (no syscall per request).
_ID_PREFIX = uuid.uuid4().hex[:16]
_id_counter = itertools.count(1)


def request_id_of(request: web.Request) -> str:
    given = request.headers.get("X-Request-ID", "")
    if given and REQUEST_ID_RE.match(given):
        return given
    return f"{_ID_PREFIX}{next(_id_counter):016x}"


class UnreadableBody(Exception):
    pass


DECOMPRESSORS = {
    "gzip": lambda: zlib.decompressobj(16 + zlib.MAX_WBITS),
    "x-gzip": lambda: zlib.decompressobj(16 + zlib.MAX_WBITS),
    "deflate": lambda: zlib.decompressobj(),
}


async def read_limited(request: web.Request, limit: int) -> bytes | None:
    """The (decompressed) body, or None when it is larger than `limit` bytes. Decompression
    is ours, not aiohttp's, so a compressed body is bounded too and a bad one gets a
    JSON-RPC answer."""
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity") and encoding not in DECOMPRESSORS:
        raise UnreadableBody(f"unsupported Content-Encoding {encoding[:40]!r} "
                             "(use identity, gzip or deflate)")
    decompressor = DECOMPRESSORS[encoding]() if encoding in DECOMPRESSORS else None
    if decompressor is None and request.content_length is not None \
            and request.content_length > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.content.iter_any():
        if decompressor is not None:
            try:
                chunk = decompressor.decompress(chunk, limit + 1 - size)
            except zlib.error as exc:
                raise UnreadableBody(f"body is not valid {encoding}: {exc}") from None
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    if decompressor is not None and not decompressor.eof:
        raise UnreadableBody(f"body is not valid {encoding}: truncated")
    return b"".join(chunks)


def address_of(request: web.Request) -> str | None:
    return client_address(request.remote, request.headers.getall("X-Forwarded-For", ()),
                          request.app[TRUSTED_PROXIES])


def json_response(body: bytes, request_id: str) -> web.Response:
    return web.Response(body=body, content_type="application/json",
                        headers={"X-Request-ID": request_id})


async def handle_jsonrpc(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    request_id = request_id_of(request)
    started = time.perf_counter()
    context = RequestContext(state, request_id, request.headers.get("Authorization"),
                             partial(address_of, request))
    try:
        response = await _answer(request, state, context)
        if context.holds_documents:
            # Written here (with the transport's back-pressure), so that what the documents
            # hold of the worker's memory is freed only once they are sent.
            await response.prepare(request)
            await response.write_eof()
    finally:
        context.close()
        log_access(context, time.perf_counter() - started)
    return response


async def _answer(request: web.Request, state, context: RequestContext) -> web.StreamResponse:
    request_id = context.request_id
    limit = state.settings.max_body_bytes
    try:
        body = await read_limited(request, limit)
    except UnreadableBody as exc:
        note(context, "-", INVALID_REQUEST)
        return json_response(dumps(invalid_request(str(exc))), request_id)
    if body is None:
        note(context, "-", INVALID_REQUEST)
        error = invalid_request(f"request body exceeds {limit} bytes", max_bytes=limit)
        return json_response(dumps(error), request_id)
    try:
        reply = await request.app[DISPATCHER].handle(body, context)
    except Exception:  # noqa: BLE001 - last line of defence: still a JSON-RPC answer
        log.exception("unhandled error (request_id=%s)", request_id)
        reply = dumps(internal_error(request_id))
    if reply is None:
        return web.Response(status=204, headers={"X-Request-ID": request_id})
    return json_response(reply, request_id)


def log_access(context: RequestContext, seconds: float) -> None:
    """One line per HTTP request: who called what, for which tenants, how it ended."""
    if not access_log.isEnabledFor(logging.INFO):  # not built when nobody reads it
        return
    principal = context.known_principal
    calls = context.calls
    access_log.info(
        "%s", ",".join(c[0] for c in calls) or "-", extra={
            "request_id": context.request_id,
            "methods": [c[0] for c in calls],
            "tenants": sorted({c[2] for c in calls if c[2]}),
            "actor_key_id": str(principal.key_id) if principal and principal.key_id else None,
            "actor_user_id": str(principal.user_id) if principal and principal.user_id else None,
            "duration_ms": round(seconds * 1000, 2),
            "outcome": "ok" if all(c[1] is None for c in calls) else "error",
            "outcomes": ["ok" if c[1] is None else c[1] for c in calls],  # one per method
        })


def build_state(settings: Settings, secret: bytes, pool: asyncpg.Pool, query: QueryEnvironment,
                runner: PipelineRunner, redis: RedisLink | None, feed: FeedHub,
                webhooks: WebhookDeliverer, vectors: VectorSupport = UNAVAILABLE) -> AppState:
    wait_s = settings.db_connect_timeout_s
    auth = Authenticator(secret, settings.anonymous_role, settings.auth_cache_ttl_s)
    node_types = NodeTypeCache(settings.shared_cache_ttl_s, settings.node_type_cache_bytes)
    if redis is not None:
        # Auth entries live no longer than a verified key is trusted: with a Redis that
        # refuses writes, nothing can then serve a revoked key longer than that.
        auth.shared = SharedCache(redis, settings.auth_cache_ttl_s, "auth")
        node_types.shared = SharedCache(redis, settings.shared_cache_ttl_s, "node_types")
    validators = ValidatorCache(validation_limits(settings),
                                TenantLimiter(1, wait_s, "schema checks in a thread"))
    chainer = AuditChainer(pool, wait_s)
    sequencer = FeedSequencer(pool, wait_s, keep_events=settings.feed_retention_events,
                              keep_days=settings.feed_retention_days,
                              trim_every_s=settings.feed_trim_interval_s)

    def committed(tenant_id) -> None:  # a job's batch: chain its event, number its changes
        chainer.kick(tenant_id)
        sequencer.kick(tenant_id)

    jobs = JobRunner(pool, settings, validators, run_roles=roles_that_may("migrate_nodes"),
                     runs_queued=runner.wake.set, committed=committed)
    return AppState(
        settings=settings, pool=pool, shaper=Shaper(settings.json_fields),
        validators=validators,
        auth=auth,
        denied=DeniedCalls(pool, wait_s, settings.denied_calls_max_sources,
                           settings.denied_calls_retention_days),
        query=query, pipelines=runner,
        node_types=node_types, chainer=chainer, metrics=Metrics(),
        limits=RateLimiter.from_settings(settings, redis), redis=redis,
        node_reads=node_reads(pool, settings),
        pool_shares=TenantLimiter(tenant_pool_share(settings), wait_s,
                                  "pooled database connections", "FLEXDB_TENANT_POOL_MAX"),
        response_memory=ResponseMemory(
            settings.response_memory_bytes, wait_s,
            TenantLimiter(settings.tenant_large_responses, wait_s,
                          "large responses in flight", "FLEXDB_TENANT_LARGE_RESPONSES"),
            settings.max_body_bytes + ROW_OVERHEAD),
        sequencer=sequencer,
        feed=feed, streams=StreamCaps(settings.feed_streams_per_key,
                                      settings.feed_streams_per_tenant,
                                      settings.feed_streams_max),
        webhooks=webhooks, jobs=jobs, vectors=vectors)


def readings_of(state: AppState) -> Readings:
    """What /metrics reads of the app's parts when scraped."""
    def caches() -> list[tuple[str, Any]]:
        here = [("api_keys", state.auth._keys), ("memberships", state.auth._roles),
                ("validators", state.validators), ("node_types", state.node_types.local)]
        if state.auth.shared is not None:
            here.append(("shared_auth", state.auth.shared))
        if state.node_types.shared is not None:
            here.append(("shared_node_types", state.node_types.shared))
        return here

    return Readings(
        pools=lambda: {"main": state.pool, "query": state.query.pool}, caches=caches,
        redis_failures=lambda: state.redis.failures if state.redis else 0,
        runs_finished=lambda: state.pipelines.finished)


async def handle_events(request: web.Request) -> web.StreamResponse:
    """GET /events: a tenant's change feed as Server-Sent Events (api/event_stream.py)."""
    context = RequestContext(request.app[STATE], request_id_of(request),
                             request.headers.get("Authorization"), partial(address_of, request))
    return await stream_changes(request, context)


async def handle_health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def handle_ready(request: web.Request) -> web.Response:
    state = request.app[STATE]
    sandbox = state.pipelines.sandbox
    status, body = await readiness(partial(ping, state.pool, CHECK_TIMEOUT_S),
                                   sandbox.health if sandbox else None,
                                   state.redis.ping if state.redis else None,
                                   state.vectors.check())
    return web.Response(body=dumps(body), status=status, content_type="application/json")


async def handle_metrics(request: web.Request) -> web.Response:
    body = request.app[STATE].metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})


def create_app(settings: Settings, database_url: str) -> web.Application:
    # auto_decompress off: read_limited decodes bodies itself, within the size limit.
    app = web.Application(handler_args={"auto_decompress": False})
    table = {**build_dispatch_table(), "rpc.discover": without_params(rpc_discover)}
    app[DISPATCHER] = Dispatcher(table, max_batch=settings.max_batch,
                                 max_response_bytes=settings.max_response_bytes,
                                 tenant_params=tenant_params())
    set_document_limits(settings)
    app[TRUSTED_PROXIES] = trusted_networks(settings.trusted_proxies)

    secret = server_secret(settings)
    safe_regex.set_cache_budget(settings.pattern_cache_bytes)

    async def database(app: web.Application):
        # The database is migrated and has its first admin already (bootstrap.prepare_database,
        # run once per start by `flexdb serve` before its workers).
        conn = await connect(database_url, settings)
        try:
            query_problems = await setup_problems(conn, **query_guard.server_names())
            superuser = await is_superuser(conn)
            vectors = await detect_vectors(conn)
        finally:
            await conn.close()
        if query_problems:
            log.error("execute_query is disabled: %s", "; ".join(query_problems))
        pool = await create_pool(database_url, settings)
        query_pool = await create_query_pool(database_url, settings)
        sandbox = (SandboxClient(settings.sandbox_url, settings.sandbox_secret.encode())
                   if settings.sandbox_secret else None)
        runner = PipelineRunner(pool, sandbox, partial(run_token, secret),
                                settings.pipeline_queue_concurrency,
                                settings.pipeline_tenant_running, db_methods=run_db_methods())
        redis = RedisLink(settings.redis_url) if settings.redis_url else None
        query = QueryEnvironment(
            query_pool, query_problems, superuser,
            TenantLimiter(settings.query_tenant_concurrency, settings.db_connect_timeout_s),
            TenantLimiter(max(1, settings.db_pool_max // 2), settings.db_connect_timeout_s,
                          busy="Too many heavy calls are running on this server; retry "
                               "shortly"))
        feed = FeedHub(pool, partial(connect, database_url, settings),
                       settings.db_connect_timeout_s)
        webhooks = WebhookDeliverer(pool, settings, SecretBox(secret),
                                    run_roles=roles_that_may("run_pipeline"),
                                    runs_queued=runner.wake.set)
        feed.on_change = webhooks.changed
        app[STATE] = state = build_state(settings, secret, pool, query, runner, redis, feed,
                                         webhooks, vectors)
        indexer = VectorIndexer(pool, partial(connect, database_url, settings), IndexPolicy(
            settings.vector_index_min_nodes, settings.vector_index_interval_s,
            settings.vector_index_build_memory_mb)) if vectors.available else None

        def run_finished() -> None:  # triggers and jobs waiting for a run look now
            webhooks.run_ended()
            state.jobs.run_ended()

        runner.on_finished = run_finished
        if redis is not None:
            invalidation = Invalidation(redis, state.auth, state.node_types)
            invalidation.start()
        state.metrics.watch(readings_of(state))
        runner.start()
        state.chainer.start()
        state.sequencer.start()
        feed.start()
        state.denied.start()
        webhooks.start()
        state.jobs.start()
        if indexer is not None:
            indexer.start()
        yield
        if indexer is not None:
            await indexer.stop()
        await state.jobs.stop()
        await webhooks.stop()
        await runner.stop()
        await state.chainer.stop()
        await state.sequencer.stop()
        await state.denied.stop()
        if state.redis is not None:
            await invalidation.stop()
            await state.redis.close()
        if sandbox is not None:
            await sandbox.close()
        await query_pool.close()
        await pool.close()

    app.cleanup_ctx.append(database)

    async def end_streams(app: web.Application) -> None:
        # Before the server waits for open requests: change streams would never end.
        if STATE in app:
            await app[STATE].feed.stop()

    app.on_shutdown.append(end_streams)
    app.router.add_post("/jsonrpc", handle_jsonrpc)
    app.router.add_get("/health", handle_health)
    app.router.add_get("/ready", handle_ready)
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_get("/events", handle_events)
    return app
