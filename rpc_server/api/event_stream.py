"""GET /events?tenant_id=…: a tenant's change feed as Server-Sent Events.

Each event is `id: <position>`, `event: change`, `data: <the event as list_changes gives it>`;
a message with only `id:` (first, and after events a filter left out) moves the resume point.
A client resumes with `Last-Event-ID` (browsers send it when they reconnect) or `after=`;
without either the stream starts at the tenant's current last position (new changes only).
Filters as list_changes' `filter`: `kinds` and `operations` (comma-separated),
`node_type_id`, `relationship_type`. Idle streams get a `: keep-alive` comment every
FLEXDB_FEED_HEARTBEAT_S.

Who may read: viewers and above, as for list_changes. The caller's key and membership are
checked again every RECHECK_S (each check trusts cached answers no longer than
FLEXDB_AUTH_CACHE_TTL_S), so a revoked key or a removed member's stream ends within that bound,
with an `event: end` message saying why. Errors before the stream starts are a JSON body
`{"error": {code, message, data}}` with the HTTP status of the facade's mapping (410 for a
position retention has passed); later ones are an `event: error` message, then the end."""
from __future__ import annotations

import asyncio
from typing import Any, Mapping
from uuid import UUID

import orjson
from aiohttp import web
from pydantic import Field, ValidationError

from rpc_server.api.context import PooledConnection, RequestContext
from rpc_server.api.params import ChangeFilter, Id, Params
from rpc_server.api.registry import validation_errors
from rpc_server.changes.events import FeedEvent, filters_nothing, matches
from rpc_server.changes.hub import Tail, wake
from rpc_server.changes.reading import read_after
from rpc_server.errors import (
    Busy,
    InvalidParams,
    NotFound,
    PositionExpired,
    RpcError,
    Unauthenticated,
)
from rpc_server.storage.repositories.changes import EventFilter
from rpc_server.storage.repositories.tenants import TenantRepository

RECHECK_S = 1.0  # how often a stream checks its caller's key and membership again
SEND_BATCH = 500  # events one database read of a catching-up stream takes
SEND_BYTES = 1024 * 1024  # and at most these bytes of objects (the first whatever its size)
STATUS = {-32602: 400, -32002: 401, -32003: 403, -32001: 404, -32005: 429}
HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
           "X-Accel-Buffering": "no"}  # (proxies must not buffer the stream)


class StreamParams(Params):
    tenant_id: Id
    after: int | None = Field(None, ge=0, le=2**62)
    filter: ChangeFilter

    @classmethod
    def of(cls, query: Mapping[str, str], last_event_id: str | None) -> StreamParams:
        def listed(name: str) -> list[str] | None:
            value = query.get(name)
            return None if value is None else [v.strip() for v in value.split(",")]

        raw: dict[str, Any] = {
            "tenant_id": query.get("tenant_id"),
            "after": last_event_id or query.get("after"),
            "filter": {"kinds": listed("kinds"), "operations": listed("operations"),
                       "node_type_id": query.get("node_type_id"),
                       "relationship_type": query.get("relationship_type")}}
        unknown = set(query) - {"tenant_id", "after", "kinds", "operations", "node_type_id",
                                "relationship_type"}
        if unknown:
            raise InvalidParams.field(sorted(unknown)[0], "unknown query parameter")
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise InvalidParams(errors=validation_errors(exc)) from None


def error_response(exc: RpcError, request_id: str) -> web.Response:
    status = 410 if isinstance(exc, PositionExpired) else STATUS.get(exc.code, 500)
    if isinstance(exc, Busy) and exc.data.get("setting") == "FLEXDB_FEED_STREAMS_MAX":
        status = 503
    body = {"error": {"code": exc.code, "message": exc.message, "data": exc.data}}
    return web.Response(status=status, body=orjson.dumps(body),
                        content_type="application/json", headers={"X-Request-ID": request_id})


def message(event: str, data: Any) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (event.encode(), orjson.dumps(data))


async def reader_of(context: RequestContext, tenant_id: UUID) -> None:
    """Raise unless the caller (still) may read the tenant's feed: any role in an existing
    tenant. A tenant the caller is not a member of answers as a missing one."""
    principal = await context.principal()
    if await context.role_in(tenant_id) is None:
        raise NotFound("tenant", tenant_id)
    if principal.is_platform_admin:
        async with context.connection() as conn:
            if not await TenantRepository(conn).exists(tenant_id):
                raise NotFound("tenant", tenant_id)


async def stream_changes(request: web.Request, context: RequestContext) -> web.StreamResponse:
    state = context.state
    try:
        p = StreamParams.of(request.query, request.headers.get("Last-Event-ID"))
        await reader_of(context, p.tenant_id)
        principal = await context.principal()
        if state.limits.enabled:  # opening a stream is a call like any other
            await state.limits.admit_call(principal, p.tenant_id)
        caller = principal.key_id or principal.user_id
        refusal = state.streams.refusal(caller, p.tenant_id)
        if refusal is not None:
            setting, limit = refusal
            raise Busy(f"Too many change streams are open ({setting}: {limit}); close one "
                       "or retry later", retry_after=5.0, setting=setting, limit=limit)
        await state.sequencer.flush(p.tenant_id)  # "from now" includes the caller's writes
        async with PooledConnection(state.pool, state.settings.db_connect_timeout_s,
                                    state.pool_shares, p.tenant_id) as conn:
            window = await read_after(conn, p.tenant_id, p.after, 1)
    except RpcError as exc:
        return error_response(exc, context.request_id)
    cursor = window.head if p.after is None else p.after
    state.streams.add(caller, p.tenant_id)
    tail = state.feed.open(p.tenant_id)
    try:
        response = web.StreamResponse(headers={**HEADERS, "X-Request-ID": context.request_id})
        await response.prepare(request)
        # The position the stream starts after, so that a client that loses the connection
        # before the first event resumes from here (browsers keep it as lastEventId too).
        await response.write(b"retry: 2000\nid: %d\n\n" % cursor)
        await follow(request, response, context, p, tail, cursor)
        return response
    finally:
        state.feed.close(tail)
        state.streams.remove(caller, p.tenant_id)


async def follow(request: web.Request, response: web.StreamResponse, context: RequestContext,
                 p: StreamParams, tail: Tail, cursor: int) -> None:
    """Send the tenant's events after `cursor` as they come, until the client leaves, the
    server stops or the caller may no longer read."""
    state = context.state
    only: EventFilter = p.filter.condition()
    everything = filters_nothing(only)
    loop = asyncio.get_running_loop()
    heartbeat_s = state.settings.feed_heartbeat_s
    last_write = loop.time()
    closing = state.feed.closing
    ended: list[RpcError] = []  # why the caller may no longer read, once a check finds it
    sleeping: list[asyncio.Future] = []  # the wait in progress, for the check to cut short
    checker = loop.create_task(check_reader(context, p.tenant_id, ended, sleeping))
    try:
        while not closing.is_set():
            if request.transport is None or request.transport.is_closing():
                return  # the client left
            if ended:
                await response.write(message("end", {"reason": ended[0].data["type"],
                                                     "message": ended[0].message}))
                return
            events = tail.events_after(cursor, SEND_BATCH)
            out: list[bytes] = []
            if events is None:  # older than what memory holds: read the database
                try:
                    async with PooledConnection(state.pool,
                                                state.settings.db_connect_timeout_s,
                                                state.pool_shares, p.tenant_id) as conn:
                        window = await read_after(conn, p.tenant_id, cursor, SEND_BATCH, only,
                                                  SEND_BYTES)
                except RpcError as exc:  # retention passed a reader this slow
                    await response.write(message("error", {"code": exc.code, "message": exc.message,
                                                           "data": exc.data}))
                    return
                moved = window.scanned_to > cursor
                out = [FeedEvent.of(row).sse for row in window.rows]
                cursor = window.scanned_to
            else:
                moved = bool(events)
                out = [event.sse for event in events if everything or matches(only, event)]
                if events:
                    cursor = events[-1].position
            now = loop.time()
            if moved and not out:  # all filtered out: move the client's resume point on
                out = [b"id: %d\n\n" % cursor]
            if out:
                await response.write(b"".join(out))
                last_write = now
            elif now - last_write >= heartbeat_s:
                await response.write(b": keep-alive\n\n")
                last_write = now
            # Wait for new events (the check wakes us too), unless some came as we wrote.
            if not moved and (events is None or tail.last <= cursor):
                woken = tail.sleeper()
                timer = loop.call_later(max(0.01, heartbeat_s - (now - last_write)), wake,
                                        woken)
                sleeping[:] = [woken]
                try:
                    await woken
                finally:
                    timer.cancel()
                    sleeping.clear()
    finally:
        checker.cancel()


async def check_reader(context: RequestContext, tenant_id: UUID, ended: list[RpcError],
                       sleeping: list[asyncio.Future]) -> None:
    """Every RECHECK_S, whether the stream's caller may still read the tenant's feed; when
    not, say why in `ended`, wake the stream (its wait in `sleeping`) and stop. Apart from
    the sending loop, so that a check waiting for the database never holds up the stream's
    events."""
    while True:
        await asyncio.sleep(RECHECK_S)
        try:
            address = context.client_address
            await reader_of(RequestContext(context.state, context.request_id,
                                           context.authorization, lambda: address),
                            tenant_id)
        except (Unauthenticated, NotFound) as exc:
            ended.append(exc)
            for woken in sleeping:
                wake(woken)
            return
        except RpcError:
            pass  # (the database is away: checked again next time)
