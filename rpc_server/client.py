"""A small async JSON-RPC client for flexdb (httpx, one pooled connection set).

    async with FlexDBClient("http://127.0.0.1:5000/jsonrpc") as db:
        tenant = (await db.call("create_tenant", {"slug": "acme", "name": "Acme"}))["tenant"]
        results = await db.batch([("get_tenant", {"id": tenant["id"]}), ("list_tenants", {})])

Errors come back as typed exceptions carrying the JSON-RPC code, message and data.

    async for event in db.changes(tenant_id, after=last_seen):   # the change feed
        ...   # resumes by itself after a dropped connection

"""
from __future__ import annotations

import asyncio
import itertools
import random
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any, AsyncIterator, Iterable, Mapping

import aiohttp
import httpx
import orjson
from httpx_aiohttp import AiohttpTransport


class RpcError(Exception):
    """An error response from the server."""

    code: int = 0

    def __init__(self, code: int, message: str, data: Any = None):
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.data = code, message, data

    @property
    def type(self) -> str | None:
        return self.data.get("type") if isinstance(self.data, dict) else None


class ParseError(RpcError): code = -32700  # noqa: E701
class InvalidRequest(RpcError): code = -32600  # noqa: E701
class MethodNotFound(RpcError): code = -32601  # noqa: E701
class InvalidParams(RpcError): code = -32602  # noqa: E701
class InternalError(RpcError): code = -32603  # noqa: E701
class NotFound(RpcError): code = -32001  # noqa: E701
class Unauthenticated(RpcError): code = -32002  # noqa: E701
class Forbidden(RpcError): code = -32003  # noqa: E701
class Conflict(RpcError): code = -32004  # noqa: E701
class RateLimited(RpcError): code = -32005  # noqa: E701
class QueryRejected(RpcError): code = -32006  # noqa: E701
class PipelineFailed(RpcError): code = -32007  # noqa: E701

# Headers as text, or as bytes (the facade forwards Authorization as the bytes received).
RequestHeaders = Mapping[str, str] | Mapping[bytes, bytes]

ERROR_CLASSES = {cls.code: cls for cls in (
    ParseError, InvalidRequest, MethodNotFound, InvalidParams, InternalError, NotFound,
    Unauthenticated, Forbidden, Conflict, RateLimited, QueryRejected, PipelineFailed)}


class TransportError(Exception):
    """The server could not be reached or answered something that is not JSON-RPC
    (`status`: the HTTP status of such an answer, None when there was none)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class TransportTimeout(TransportError):
    """The server did not answer within the client's timeout."""


def _no_cookies() -> CookieJar:
    # A plain CookieJar (not httpx.Cookies, which httpx would copy into a default jar).
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


def _timed_out(exc: httpx.HTTPError) -> bool:
    """Whether the server was reached but too slow. The aiohttp transport maps every
    connection error (refused, reset) to httpx.ConnectTimeout, so its cause decides."""
    cause = exc.__cause__
    if cause is not None and not isinstance(cause, httpx.HTTPError):
        return isinstance(cause, TimeoutError)
    return isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout)


def _is_error_reply(reply: Any) -> bool:
    """A JSON-RPC error object with the fields the spec requires."""
    error = reply.get("error") if isinstance(reply, dict) else None
    return (isinstance(error, dict) and type(error.get("code")) is int
            and isinstance(error.get("message"), str))


@dataclass
class ServerSentEvent:
    event: str = "message"
    data: str = ""
    id: str | None = None


async def server_sent_events(lines: AsyncIterator[str]) -> AsyncIterator[ServerSentEvent]:
    """The messages of a text/event-stream (comments skipped; a message with only an `id`
    is passed on too: it moves the resume point)."""
    message, data = ServerSentEvent(), list[str]()
    async for line in lines:
        if not line:
            if data or message.id is not None:
                message.data = "\n".join(data)
                yield message
            message, data = ServerSentEvent(), list[str]()
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        elif name == "event":
            message.event = value
        elif name == "id":
            message.id = value


def error_from(payload: dict) -> RpcError:
    error = payload.get("error") or {}
    code = error.get("code", 0)
    cls = ERROR_CLASSES.get(code, RpcError)
    return cls(code, error.get("message", ""), error.get("data"))


class FlexDBClient:
    def __init__(self, url: str, *, api_key: str | None = None, timeout: float = 30.0,
                 headers: dict[str, str] | None = None, max_connections: int = 100,
                 transport: httpx.AsyncBaseTransport | None = None):
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        if api_key:
            all_headers["Authorization"] = f"Bearer {api_key}"
        self.url = url
        self.timeout = timeout
        self._ids = itertools.count(1)
        limits = httpx.Limits(max_connections=max_connections,
                              max_keepalive_connections=max_connections)
        # httpx's own connection pool collapses under concurrency (encode/httpx#3215:
        # ~8x fewer requests/s than aiohttp at 32 in flight); an aiohttp-backed transport
        # keeps the httpx API with aiohttp's pooling.
        # No cookie is ever kept: one client serves many callers (the REST facade), and a
        # cookie set by anything in between must not travel with someone else's request.
        self._http = httpx.AsyncClient(
            headers=all_headers, timeout=timeout, limits=limits, cookies=_no_cookies(),
            transport=transport or AiohttpTransport(limits=limits, client=lambda: (
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=max_connections),
                                      cookie_jar=aiohttp.DummyCookieJar()))))

    async def __aenter__(self) -> "FlexDBClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def post(self, payload: Any, headers: RequestHeaders | None = None) -> httpx.Response:
        """Send any JSON payload (used for protocol-level tests and tools)."""
        try:
            return await self._http.post(self.url, json=payload, headers=headers)
        except httpx.HTTPError as exc:
            if _timed_out(exc):
                raise TransportTimeout(f"no answer from {self.url} in time") from exc
            raise TransportError(f"cannot reach {self.url}: {exc!r}") from exc

    async def _send(self, payload: Any, headers: RequestHeaders | None = None) -> Any:
        response = await self.post(payload, headers)
        if response.status_code == 204:
            return None
        try:
            reply = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            reply = None
        if response.status_code != 200 and not _is_error_reply(reply):
            raise TransportError(f"HTTP {response.status_code} from {self.url}",
                                 response.status_code)
        if reply is None:
            raise TransportError("response is not JSON", response.status_code)
        return reply

    async def call(self, method: str, params: dict | list | None = None, *,
                   headers: RequestHeaders | None = None) -> Any:
        """Call one method; returns its result or raises an RpcError subclass. `headers`
        are added to this request only (e.g. another Authorization)."""
        request = {"jsonrpc": "2.0", "method": method, "id": next(self._ids)}
        if params is not None:
            request["params"] = params
        reply = await self._send(request, headers)
        if _is_error_reply(reply):
            raise error_from(reply)
        if not isinstance(reply, dict) or "result" not in reply:
            raise TransportError("the answer is not a JSON-RPC response", 200)
        return reply["result"]

    async def notify(self, method: str, params: dict | list | None = None) -> None:
        request: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            request["params"] = params
        await self._send(request)

    async def batch(self, calls: Iterable[tuple[str, dict | list | None]]) -> list[Any]:
        """Send calls in one request; returns, in order, each result, or an RpcError instance
        for a call that failed, or a TransportError for one the server did not answer."""
        requests, ids = [], []
        for method, params in calls:
            rid = next(self._ids)
            ids.append(rid)
            request = {"jsonrpc": "2.0", "method": method, "id": rid}
            if params is not None:
                request["params"] = params
            requests.append(request)
        if not requests:
            return []
        reply = await self._send(requests)
        if isinstance(reply, dict):  # the whole batch was refused
            raise error_from(reply)
        by_id = {r.get("id"): r for r in reply or []}
        results: list[Any] = []
        for rid in ids:
            r = by_id.get(rid)
            if r is None:
                results.append(TransportError(f"no response for id {rid}"))
            elif "error" in r:
                results.append(error_from(r))
            else:
                results.append(r.get("result"))
        return results

    @property
    def events_url(self) -> str:
        """The server's GET /events, beside its /jsonrpc."""
        return self.url.rsplit("/", 1)[0] + "/events"

    async def open_events(self, params: Mapping[str, str],
                          headers: RequestHeaders | None = None) -> httpx.Response:
        """GET /events as it answers, its body not read yet (for relays such as the REST
        facade): the caller reads the stream and closes the response."""
        request = self._http.build_request("GET", self.events_url, params=params,
                                           headers=headers,
                                           timeout=httpx.Timeout(self.timeout, read=None))
        try:
            return await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise TransportError(f"cannot reach {self.events_url}: {exc!r}") from exc

    async def changes(self, tenant_id: str, *, after: int | None = None,
                      kinds: Iterable[str] | None = None, operations: Iterable[str] | None = None,
                      node_type_id: str | None = None, relationship_type: str | None = None,
                      idle_timeout: float = 60.0, retry_delay: float = 0.5,
                      max_retry_delay: float = 30.0) -> AsyncIterator[dict]:
        """The tenant's change events (as list_changes gives them), from the server's
        GET /events, after position `after` (None: from now on), without end. A dropped
        connection, a server restart or an answer 5xx is retried (with backoff and jitter) from
        the last position received, so no event is missed or repeated. Errors the caller must
        act on are raised: a position retention has passed (InvalidParams, `data.type`
        `position_expired`: resynchronise from the lists), a revoked key (Unauthenticated),
        a removed membership (NotFound), too many streams (RateLimited)."""
        events_url = self.events_url
        query: dict[str, str] = {"tenant_id": str(tenant_id)}
        for name, value in (("kinds", kinds), ("operations", operations)):
            if value is not None:
                query[name] = ",".join(value)
        for name, one in (("node_type_id", node_type_id),
                          ("relationship_type", relationship_type)):
            if one is not None:
                query[name] = str(one)
        delay = retry_delay
        while True:
            headers = {"Accept": "text/event-stream"}
            if after is not None:
                headers["Last-Event-ID"] = str(after)
            try:
                async with self._http.stream(
                        "GET", events_url, params=query, headers=headers,
                        timeout=httpx.Timeout(self.timeout, read=idle_timeout)) as response:
                    if response.status_code != 200:
                        body = await response.aread()
                        try:
                            reply = orjson.loads(body)
                        except orjson.JSONDecodeError:
                            reply = None
                        if response.status_code < 500 and _is_error_reply(reply):
                            raise error_from(reply)
                        raise TransportError(f"HTTP {response.status_code} from {events_url}",
                                             response.status_code)
                    async for message in server_sent_events(response.aiter_lines()):
                        delay = retry_delay
                        if message.id is not None and message.id.isdigit():
                            after = int(message.id)
                        if message.event == "change":
                            yield orjson.loads(message.data)
                        elif message.event == "error":
                            raise error_from({"error": orjson.loads(message.data)})
                        elif message.event == "end":
                            ended = orjson.loads(message.data)
                            cls = NotFound if ended.get("reason") == "not_found" \
                                else Unauthenticated
                            raise cls(cls.code, ended.get("message", "the stream ended"), ended)
            except (httpx.HTTPError, aiohttp.ClientError, TransportError) as exc:
                if isinstance(exc, TransportError) and (exc.status or 500) < 500:
                    raise
            await asyncio.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, max_retry_delay)

