#!/usr/bin/env python3
"""Server CPU time per call: a steadier figure than req/s on a shared, noisy machine.

    .venv/bin/python scripts/bench_cpu.py [--calls 20000] [--only get_node,update_node,...]
        [--pool-max 10] [--profile-pid-file FILE] [--set FLEXDB_NAME=VALUE ...]

Starts one `flexdb serve` worker on a fresh database (FLEXDB_BENCH_DATABASE_URL, default the
local server), makes a tenant with 1,000 nodes and 1,000 relationships between them, then
for each scenario sends a fixed number of calls at concurrency 32 and prints the server
process's CPU time (user + system, from psutil) divided by the calls (or batch members),
and beside it the CPU of PostgreSQL's backends serving that database (when this user may
read them). The load generator's CPU is not counted, so the figures move only with what the
server and the database do per call.

Scenarios (--only takes a comma-separated list of these names):
  get_node            one node by id
  batch               a batch of 100 get_node (per member)
  create_node         one node
  update_node         each of the 32 workers updates a node of its own, with expected_version
  list_nodes          the first page of 50 nodes, with total_count
  list_relationships  by source node, page 50, with total_count (as scripts/bench.py)
  query_nodes         data.g = value (10 of the 1,000 nodes match), page 50, no total
  traverse            out from a node, depth 3, limit 100 (as scripts/bench.py)

As scripts/bench.py, one tenant stands for many: its pool share is the whole pool
(FLEXDB_TENANT_POOL_MAX = FLEXDB_DB_POOL_MAX; servers before the share ignore it) and its
heavy calls (query_nodes, traverse) are not held to two at a time.
The server's pid is written to --profile-pid-file once the data is loaded (and the line
"measuring" printed), for a profiler to attach to."""
from __future__ import annotations

import argparse
import asyncio
import os
import random
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
SCENARIOS = ("get_node", "batch", "create_node", "update_node", "list_nodes",
             "list_relationships", "query_nodes", "traverse")


def member(method: str, params: dict, id: int = 1) -> dict:
    return {"jsonrpc": "2.0", "id": id, "method": method, "params": params}


def backend_cpu(database: str) -> float:
    """CPU seconds of the PostgreSQL backends connected to `database` (0 if not readable)."""
    total = 0.0
    for process in psutil.process_iter(["name", "cmdline"]):
        try:
            command = " ".join(process.info["cmdline"] or ())
            if command.startswith("postgres:") and f" {database} " in command:
                times = process.cpu_times()
                total += times.user + times.system
        except (psutil.Error, OSError):
            continue
    return total


async def measure(server, database: str, calls: int, only: list[str],
                  pid_file: str | None) -> None:
    http = LeanHttp(server.url, CONCURRENCY)
    headers = (f"Authorization: Bearer {server.admin_key}\r\n"
               "Content-Type: application/json\r\n").encode()
    rng = random.Random(18)

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
        {"node_type_id": type_id, "data": {"n": i, "kind": f"k{i % 10}", "g": i % 100,
                                           "label": f"item {i}"}}
        for i in range(1000)]}))["nodes"]]
    rels = (await call("create_relationships", {"tenant_id": tid, "relationships": [
        {"source_node_id": rng.choice(ids), "target_node_id": rng.choice(ids),
         "relationship_type": "links", "data": {}} for _ in range(1000)]}))["relationships"]
    sources = sorted({r["source_node_id"] for r in rels})

    singles = [request(member("get_node", {"tenant_id": tid, "id": i})) for i in ids]
    batches = [request([member("get_node", {"tenant_id": tid, "id": ids[(k * 100 + j) % 1000]}, j)
                        for j in range(100)]) for k in range(10)]
    creates = [request(member("create_node", {"tenant_id": tid, "node_type_id": type_id,
                                              "data": {"n": i}})) for i in range(100)]
    first_pages = [request(member("list_nodes", {"tenant_id": tid,
                                                 "pagination": {"page_size": 50}}))]
    by_source = [request(member("list_relationships", {
        "tenant_id": tid, "source_node_id": s, "pagination": {"page_size": 50}}))
        for s in sources]
    queries = [request(member("query_nodes", {
        "tenant_id": tid, "filter": {"field": "data.g", "op": "eq", "value": g},
        "pagination": {"page_size": 50, "include_total": False}})) for g in range(100)]
    walks = [request(member("traverse", {"tenant_id": tid, "start_node_id": s, "max_depth": 3,
                                         "limit": 100})) for s in sources]
    # update_node: worker w owns node ids[w] and tracks its version
    versions = {w: 1 for w in range(CONCURRENCY)}

    async def update(worker: int, i: int) -> None:
        status, body = await http.send(request(member("update_node", {
            "tenant_id": tid, "id": ids[worker], "expected_version": versions[worker],
            "data": {"n": i, "kind": "upd", "g": 1, "label": "updated"}})))
        versions[worker] = orjson.loads(body)["result"]["node"]["version"]

    def sender(requests: list[bytes]):
        async def send(worker: int, i: int) -> None:
            await http.send(requests[i % len(requests)])
        return send

    server_process = psutil.Process(server.proc.pid)
    if pid_file:
        Path(pid_file).write_text(str(server.proc.pid))
    print("measuring", flush=True)

    async def run(send, count: int, per_request: int) -> tuple[float, float, float]:
        async def warm(worker: int) -> None:
            for i in range(2):
                await send(worker, i)
        await asyncio.gather(*(warm(w) for w in range(CONCURRENCY)))
        before, started = server_process.cpu_times(), time.perf_counter()
        backends_before = backend_cpu(database)

        async def worker(first: int) -> None:
            for i in range(first, count, CONCURRENCY):
                await send(first, i)

        await asyncio.gather(*(worker(w) for w in range(CONCURRENCY)))
        after, elapsed = server_process.cpu_times(), time.perf_counter() - started
        backends = backend_cpu(database) - backends_before
        cpu = (after.user + after.system) - (before.user + before.system)
        calls_made = count * per_request
        return cpu / calls_made * 1e6, backends / calls_made * 1e6, calls_made / elapsed

    table = {
        "get_node": ("get_node", sender(singles), calls, 1),
        "batch": ("batch of 100 get_node, per member", sender(batches), max(1, calls // 40), 100),
        "create_node": ("create_node", sender(creates), max(1, calls // 2), 1),
        "update_node": ("update_node (expected_version)", update, max(1, calls // 2), 1),
        "list_nodes": ("list_nodes 50, first page", sender(first_pages), max(1, calls // 2), 1),
        "list_relationships": ("list_relationships by source, page 50", sender(by_source),
                               calls, 1),
        "query_nodes": ("query_nodes data.g = value, page 50", sender(queries),
                        max(1, calls // 2), 1),
        "traverse": ("traverse out, depth 3, limit 100", sender(walks), max(1, calls // 2), 1),
    }
    for name in only:
        label, send, count, per_request = table[name]
        micros, database_micros, rate = await run(send, count, per_request)
        print(f"{label:38s} {micros:7.1f} µs of server CPU each, {database_micros:6.1f} µs "
              f"of PostgreSQL's   ({rate:,.0f}/s)", flush=True)
    await http.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--only", default=",".join(SCENARIOS),
                        help=f"comma-separated scenarios of: {', '.join(SCENARIOS)}")
    parser.add_argument("--pool-max", type=int, default=10,
                        help="the server's FLEXDB_DB_POOL_MAX (and the tenant's share)")
    parser.add_argument("--set", action="append", default=[], metavar="FLEXDB_NAME=VALUE",
                        help="a server setting (repeatable), e.g. FLEXDB_CHANGE_FEED=false")
    parser.add_argument("--profile-pid-file", default=None,
                        help="write the server's pid here once the data is loaded")
    args = parser.parse_args()
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in only if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; known: {', '.join(SCENARIOS)}")
    url = os.environ.get("FLEXDB_BENCH_DATABASE_URL",
                         "postgresql://postgres@127.0.0.1:5432/postgres")
    with fresh_database(url) as db, running_server({
            "FLEXDB_DATABASE_URL": db, "FLEXDB_LOG_LEVEL": "WARNING",
            "FLEXDB_WORKERS": "1", "FLEXDB_DB_POOL_MAX": str(args.pool_max),
            "FLEXDB_TENANT_POOL_MAX": str(args.pool_max), "FLEXDB_QUERY_TENANT_CONCURRENCY": "64",
            **dict(setting.split("=", 1) for setting in args.set)}) as server:
        uvloop.install()
        database = db.rsplit("/", 1)[-1].split("?", 1)[0]
        asyncio.run(measure(server, database, args.calls, only, args.profile_pid_file))


if __name__ == "__main__":
    main()
