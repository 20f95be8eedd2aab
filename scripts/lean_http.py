"""A minimal HTTP/1.1 keep-alive client for load generation (like wrk's, in asyncio).

The load generator shares the machine's cores with the server under test, so every
microsecond it spends is taken from the server. aiohttp's client costs about as much per
request as a small handler; this one sends pre-built request bytes and reads a response by
its Content-Length, nothing more. It is for the benchmark only: it does not follow
redirects, decode chunked bodies or retry, and says so when it meets one."""
from __future__ import annotations

import asyncio
from urllib.parse import urlsplit


class HttpError(Exception):
    pass


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future | None = None
        self.closed = False
        self._need = -1  # bytes of the whole response once its head is read
        self._head = 0   # bytes of the head (status line and headers, with the blank line)
        self._status = 0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(HttpError(f"connection lost: {exc}"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is None or self.waiter.done():
            return
        if self._need < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            self._status = int(head[9:12])
            self._head = end + 4
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17:stop if stop >= 0 else end])
            elif self._status in (204, 304) or 100 <= self._status < 200:
                length = 0
            else:
                self.waiter.set_exception(HttpError("response without Content-Length"))
                return
            self._need = self._head + length
        if len(self.buffer) >= self._need:
            body = bytes(self.buffer[self._head:self._need])
            del self.buffer[:self._need]
            self._need = -1
            self.waiter.set_result((self._status, body))

    async def send(self, request: bytes) -> tuple[int, bytes]:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        try:
            return await self.waiter
        finally:
            self.waiter = None


class LeanHttp:
    """Up to `connections` keep-alive connections to one host:port, reused last-in first-out."""

    def __init__(self, base_url: str, connections: int) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname, parts.port or 80
        self.host_header = f"Host: {parts.netloc}\r\n".encode()
        self.limit = connections
        self.idle: list[_Connection] = []
        self.opened = 0
        self.waiting: list[asyncio.Future] = []  # callers waiting for a connection

    async def _take(self) -> _Connection:
        while True:
            while self.idle:
                conn = self.idle.pop()
                if not conn.closed:
                    return conn
                self.opened -= 1
            if self.opened < self.limit:
                self.opened += 1
                try:
                    _, conn = await asyncio.get_running_loop().create_connection(
                        _Connection, self.host, self.port)
                except BaseException:
                    self.opened -= 1
                    raise
                return conn
            waiter = asyncio.get_running_loop().create_future()
            self.waiting.append(waiter)
            await waiter  # a connection was given back (or dropped): look again

    def _give(self, conn: _Connection) -> None:
        if conn.closed:
            self.opened -= 1
        else:
            self.idle.append(conn)
        while self.waiting:
            waiter = self.waiting.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                break

    def build(self, method: str, path: str, headers: bytes, body: bytes = b"") -> bytes:
        """Request bytes to send as they are; `headers` is b"Name: value\\r\\n" lines."""
        length = f"Content-Length: {len(body)}\r\n".encode() if body or method != "GET" else b""
        return (f"{method} {path} HTTP/1.1\r\n".encode() + self.host_header + headers +
                length + b"\r\n" + body)

    async def send(self, request: bytes) -> tuple[int, bytes]:
        conn = await self._take()
        try:
            return await conn.send(request)
        except BaseException:
            if conn.transport is not None:
                conn.transport.close()
            conn.closed = True
            raise
        finally:
            self._give(conn)

    async def close(self) -> None:
        for conn in self.idle:
            conn.transport.close()
        self.idle.clear()
