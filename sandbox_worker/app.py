"""The sandbox worker's HTTP service (aiohttp): POST /runs executes a pipeline run in a fresh
child process and answers with its outcome; POST /runs/{id}/cancel stops one; GET /health.
Every request except /health must be signed by rpc_server (signing.py).

The worker holds each run's execution token and the JSON-RPC client; the child only ever
sees the code, the input and the answers to its db calls."""
from __future__ import annotations

import asyncio
import logging
import time
import uuid

import orjson
from aiohttp import web

from rpc_server.client import FlexDBClient, RpcError, TransportError
from rpc_server.config import Settings

from .pool import Busy, WarmPool, run_job
from .signing import NonceCache, SignatureError, verify

log = logging.getLogger(__name__)
POOL = web.AppKey("pool", WarmPool)
CLIENT = web.AppKey("client", FlexDBClient)
RUNNING = web.AppKey("running", dict)
EARLY_CANCELS = web.AppKey("early_cancels", dict)
EARLY_CANCEL_TTL_S = 120.0
MAX_EARLY_CANCELS = 10_000
MAX_BODY = 4 * 1024 * 1024
MAX_OUTPUT = 64 * 1024
MAX_RESULT = 1024 * 1024


def _json(data, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _outcome_response(outcome) -> web.Response:
    try:
        return _json(outcome.as_dict())
    except (TypeError, ValueError):  # the child's checks should make this impossible
        return _json({"status": "failed", "error": {
            "type": "result_not_storable", "message": "the run's result could not be encoded"},
            "duration_ms": outcome.duration_ms, "db_operations": outcome.db_operations})


async def _signed_body(request: web.Request) -> bytes:
    body = await request.read()
    try:
        verify(request.app["secret"], request.method, request.path, body, request.headers,
               request.app["nonces"])
    except SignatureError as exc:
        raise web.HTTPUnauthorized(text=str(exc)) from None
    return body


def _job_from(body: bytes) -> dict:
    try:
        job = orjson.loads(body)
        return {"run_id": str(job["run_id"]), "tenant_id": str(job["tenant_id"]),
                "token": str(job["token"]), "code": str(job["code"]), "input": job.get("input"),
                "timeout_ms": int(job["timeout_ms"]), "memory_mb": int(job["memory_mb"]),
                "request_id": str(job.get("request_id", ""))[:128],
                "verbose": bool(job.get("verbose", False)),
                "map": bool(job.get("map", False)),
                "db_methods": _db_methods_from(job["db_methods"])}
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise web.HTTPBadRequest(text="bad job") from None


def _db_methods_from(declared) -> dict[str, list[str]]:
    """What the run's `db` offers (method -> params taken by position), as rpc_server's
    registry declares it (api/registry.run_db_methods): the worker keeps no list of its own."""
    if not isinstance(declared, dict):
        raise TypeError("db_methods must be an object")
    methods = {}
    for name, positional in declared.items():
        if not (isinstance(positional, list) and all(isinstance(p, str) for p in positional)):
            raise TypeError("db_methods values must be lists of param names")
        methods[str(name)] = positional
    return methods


def other_tenant_refusal(method: str, params: dict, run_tenant: str) -> dict | None:
    """The error for a db call that names a tenant other than the run's (None when it names
    the run's own or none): refused, never quietly rewritten to the run's tenant."""
    named = params.get("tenant_id", run_tenant)
    if named == run_tenant or _same_tenant(named, run_tenant):
        return None
    message = (f"{method}: tenant_id names another tenant; a pipeline's db calls reach only "
               f"the tenant it runs in ({run_tenant}): leave tenant_id out or pass that id")
    return {"code": -32602, "message": message,
            "data": {"type": "invalid_params",
                     "errors": [{"field": "tenant_id", "message": message}]}}


def _same_tenant(named, run_tenant: str) -> bool:
    try:
        return isinstance(named, str) and uuid.UUID(named) == uuid.UUID(run_tenant)
    except ValueError:
        return False


async def handle_run(request: web.Request) -> web.Response:
    job = _job_from(await _signed_body(request))
    pool, client = request.app[POOL], request.app[CLIENT]
    headers = {"Authorization": f"Bearer {job['token']}"}
    if job["request_id"]:
        headers["X-Request-ID"] = job["request_id"]

    async def db_call(method: str, params: dict):
        if method not in job["db_methods"]:
            return False, {"code": -32601, "message": f"db has no method {method!r}",
                           "data": {"type": "method_not_found"}}
        refusal = other_tenant_refusal(method, params, job["tenant_id"])
        if refusal:
            return False, refusal
        params = {**params, "tenant_id": job["tenant_id"]}
        try:
            return True, await client.call(method, params, headers=headers)
        except RpcError as exc:
            return False, {"code": exc.code, "message": exc.message, "data": exc.data}
        except TransportError as exc:
            return False, {"code": -32603, "message": f"flexdb unreachable: {exc}",
                           "data": {"type": "unavailable"}}

    # Registered before a child is taken: a cancel may arrive while it is being forked.
    cancelled = asyncio.Event()
    request.app[RUNNING][job["run_id"]] = cancelled
    if request.app[EARLY_CANCELS].pop(job["run_id"], None) is not None:
        cancelled.set()
    try:
        child = await pool.take()
    except Busy:
        request.app[RUNNING].pop(job["run_id"], None)
        return _json({"error": "busy", "message": "every sandbox slot is in use"}, 503)
    try:
        timeout_s = job["timeout_ms"] / 1000
        child_job = {"code": job["code"], "input": job["input"], "db_methods": job["db_methods"],
                     "cpu_s": max(1, int(timeout_s + 0.999)), "memory_mb": job["memory_mb"],
                     "max_output": MAX_OUTPUT, "max_result": MAX_RESULT, "map": job["map"]}
        outcome = await run_job(child, child_job, db_call, timeout_s, cancelled,
                                verbose=job["verbose"])
    finally:
        request.app[RUNNING].pop(job["run_id"], None)
        pool.give_back()
    return _outcome_response(outcome)


async def handle_cancel(request: web.Request) -> web.Response:
    await _signed_body(request)
    run_id = request.match_info["run_id"]
    event = request.app[RUNNING].get(run_id)
    if event is not None:
        event.set()
    else:  # its run request may still be on the way: remember the cancel for a while
        early = request.app[EARLY_CANCELS]
        early[run_id] = time.monotonic()
        while early and next(iter(early.values())) < time.monotonic() - EARLY_CANCEL_TTL_S:
            early.pop(next(iter(early)))
        while len(early) > MAX_EARLY_CANCELS:
            early.pop(next(iter(early)))
    return _json({"cancelled": event is not None})


async def handle_health(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    return _json({"status": "ok", "running": pool.running, "warm": pool.warm})


def create_app(settings: Settings) -> web.Application:
    if not settings.sandbox_secret:
        raise ValueError("FLEXDB_SANDBOX_SECRET must be set for the sandbox worker")
    app = web.Application(client_max_size=MAX_BODY)
    app["secret"] = settings.sandbox_secret.encode()
    app["nonces"] = NonceCache()
    app[RUNNING] = {}
    app[EARLY_CANCELS] = {}

    async def lifecycle(app: web.Application):
        app[POOL] = WarmPool(settings.sandbox_pool_size, settings.sandbox_max_running)
        await app[POOL].start()
        app[CLIENT] = FlexDBClient(settings.rpc_url, timeout=30.0)
        yield
        await app[CLIENT].aclose()
        await app[POOL].close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/runs", handle_run)
    app.router.add_post("/runs/{run_id}/cancel", handle_cancel)
    app.router.add_get("/health", handle_health)
    return app
