#!/usr/bin/env python3
"""Server CPU time per call: a steadier figure than req/s on a shared, noisy machine.

    .venv/bin/python scripts/bench_cpu.py [--calls 20000]

Starts one `flexdb serve` worker on a fresh database (FLEXDB_BENCH_DATABASE_URL, default the
local server), makes a tenant with 1,000 nodes, then for get_node, a batch of 100 get_node
and create_node sends a fixed number of calls at concurrency 32 and prints the server
process's CPU time (user + system, from psutil) divided by the calls (or batch members).
The load generator's and PostgreSQL's CPU are not counted, so the figure moves only with
what the server does per call."""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

import orjson
import psutil
import uvloop

ROOT = Path(__file__).resolve().parent.parent
# Run as a file, the repository root is not on sys.path: the imports after this line need
# it first (hence their noqa: E402).
sys.path.insert(0, str(ROOT))

from scripts.lean_http import LeanHttp  # noqa: E402
from tests.conftest import fresh_database, running_server  # noqa: E402

CONCURRENCY = 32


def member(method: str, params: dict, id: int = 1) -> dict:
    return {"jsonrpc": "2.0", "id": id, "method": method, "params": params}


async def measure(server, calls: int) -> None:
    http = LeanHttp(server.url, CONCURRENCY)
    headers = (f"Authorization: Bearer {server.admin_key}\r\n"
               "Content-Type: application/json\r\n").encode()

    def request(body) -> bytes:
        return http.build("POST", "/jsonrpc", headers, orjson.dumps(body))

    async def call(method: str, params: dict) -> dict:
        _, body = await http.send(request(member(method, params)))
        return orjson.loads(body)["result"]

    tid = (await call("create_tenant", {"slug": f"cpu-{uuid.uuid4().hex[:8]}",
                                        "name": "CPU"}))["tenant"]["id"]
    type_id = (await call("create_node_type", {
        "tenant_id": tid, "name": "T",
        "schema": {"type": "object", "properties": {"n": {"type": "integer"}}}}))["node_type"]["id"]
    ids = [n["id"] for n in (await call("create_nodes", {"tenant_id": tid, "nodes": [
        {"node_type_id": type_id, "data": {"n": i}} for i in range(1000)]}))["nodes"]]
    singles = [request(member("get_node", {"tenant_id": tid, "id": i})) for i in ids]
    batches = [request([member("get_node", {"tenant_id": tid, "id": ids[(k * 100 + j) % 1000]}, j)
                        for j in range(100)]) for k in range(10)]
    creates = [request(member("create_node", {"tenant_id": tid, "node_type_id": type_id,
                                              "data": {"n": i}})) for i in range(100)]
    server_process = psutil.Process(server.proc.pid)

    async def run(requests: list[bytes], count: int, per_request: int) -> tuple[float, float]:
        await asyncio.gather(*(http.send(requests[i % len(requests)]) for i in range(64)))
        before, started = server_process.cpu_times(), time.perf_counter()

        async def worker(first: int) -> None:
            for i in range(first, count, CONCURRENCY):
                await http.send(requests[i % len(requests)])

        await asyncio.gather(*(worker(w) for w in range(CONCURRENCY)))
        after, elapsed = server_process.cpu_times(), time.perf_counter() - started
        cpu = (after.user + after.system) - (before.user + before.system)
        return cpu / (count * per_request) * 1e6, count * per_request / elapsed

    for label, requests, count, per_request in (
            ("get_node", singles, calls, 1),
            ("batch of 100 get_node, per member", batches, max(1, calls // 40), 100),
            ("create_node", creates, max(1, calls // 2), 1)):
        micros, rate = await run(requests, count, per_request)
        print(f"{label:36s} {micros:7.1f} µs of server CPU each   ({rate:,.0f}/s)", flush=True)
    await http.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    url = os.environ.get("FLEXDB_BENCH_DATABASE_URL",
                         "postgresql://postgres@127.0.0.1:5432/postgres")
    with fresh_database(url) as db, running_server({
            "FLEXDB_DATABASE_URL": db, "FLEXDB_LOG_LEVEL": "WARNING",
            "FLEXDB_WORKERS": "1"}) as server:
        uvloop.install()
        asyncio.run(measure(server, args.calls))


if __name__ == "__main__":
    main()
