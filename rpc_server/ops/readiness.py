"""GET /ready: is each dependency usable right now? Each check gives {status, latency_ms,
error}; overall "ok", "degraded" (an optional part is failing: still serving) or "down" (the
database is unusable: HTTP 503 so a load balancer sends traffic elsewhere)."""
from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable

Check = Callable[[], Awaitable[bool]]

CHECK_TIMEOUT_S = 2.0


async def _timed(check: Callable[[], Awaitable[bool]]) -> dict:
    started = time.perf_counter()
    try:
        healthy = await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
        error = None if healthy else "unhealthy answer"
    except asyncio.TimeoutError:
        healthy, error = False, f"no answer within {CHECK_TIMEOUT_S:g} s"
    except Exception as exc:  # noqa: BLE001 - any failure is the check's result
        healthy, error = False, f"{type(exc).__name__}: {str(exc)[:200]}"
    return {"status": "ok" if healthy else "failing", "error": error,
            "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


async def readiness(database: Check, sandbox: Check | None,
                    redis: Check | None, vector: dict | None = None) -> tuple[int, dict]:
    """Each dependency's check (None: not configured). `vector` (vector search, found at
    start: "ok" or "unavailable") is optional: it never makes the server degraded."""
    checks: dict[str, Awaitable[dict]] = {"database": _timed(database)}
    if sandbox is not None:
        checks["sandbox"] = _timed(sandbox)
    if redis is not None:
        checks["redis"] = _timed(redis)
    results = dict(zip(checks, await asyncio.gather(*checks.values())))
    if sandbox is None:
        results["sandbox"] = {"status": "disabled", "latency_ms": None,
                              "error": "FLEXDB_SANDBOX_SECRET is not set: pipelines cannot run"}
    if redis is None:
        results["redis"] = {"status": "disabled", "latency_ms": None,
                            "error": "FLEXDB_REDIS_URL is not set: limits and caches are "
                                     "per instance"}
    if vector is not None:
        results["vector"] = vector
    if results["database"]["status"] != "ok":
        overall = "down"
    elif any(r["status"] == "failing" for r in results.values()):
        overall = "degraded"
    else:
        overall = "ok"
    return (503 if overall == "down" else 200), {"status": overall, "checks": results}
