"""rpc_server's side of the sandbox worker: signed HTTP requests (one pooled session)."""
from __future__ import annotations

import asyncio

import aiohttp
import orjson

from sandbox_worker.signing import sign

# Time the worker needs beyond a run's own timeout (start, kill, answer).
GRACE_S = 10.0


class SandboxBusy(Exception):
    pass


class SandboxRefused(Exception):
    """The sandbox worker refused the run itself (HTTP 4xx, e.g. an input past its body
    limit): sending it again gets the same answer."""


class SandboxUnavailable(Exception):
    pass


class SandboxClient:
    def __init__(self, url: str, secret: bytes):
        self.url = url.rstrip("/")
        self.secret = secret
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
        return self._session

    async def _post(self, path: str, payload: dict, timeout_s: float) -> tuple[int, dict]:
        body = orjson.dumps(payload)
        headers = {"Content-Type": "application/json", **sign(self.secret, "POST", path, body)}
        try:
            async with self._http().post(self.url + path, data=body, headers=headers,
                                         timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
                data = await r.read()
                return r.status, (orjson.loads(data) if data[:1] in (b"{", b"[") else {})
        except (aiohttp.ClientError, asyncio.TimeoutError, orjson.JSONDecodeError) as exc:
            raise SandboxUnavailable(f"{type(exc).__name__}: {exc}") from None

    async def run(self, job: dict) -> dict:
        """The run's outcome; raises SandboxBusy or SandboxUnavailable."""
        status, data = await self._post("/runs", job, job["timeout_ms"] / 1000 + GRACE_S)
        if status == 503:
            raise SandboxBusy()
        if 400 <= status < 500:
            raise SandboxRefused(f"the sandbox worker refused the run: HTTP {status}")
        if status != 200:
            raise SandboxUnavailable(f"the sandbox worker answered HTTP {status}")
        return data

    async def cancel(self, run_id: str) -> None:
        try:
            await self._post(f"/runs/{run_id}/cancel", {}, 5.0)
        except SandboxUnavailable:
            pass  # the run's own deadline still ends it

    async def health(self) -> bool:
        try:
            async with self._http().get(self.url + "/health",
                                        timeout=aiohttp.ClientTimeout(total=2)) as r:
                return r.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return False

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
