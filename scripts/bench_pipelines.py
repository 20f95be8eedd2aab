#!/usr/bin/env python3
"""Pipeline benchmark: warm-run latency of a trivial pipeline and of one making 10 db calls
(concurrency 1), and throughput of concurrent trivial runs; the 10-call pipeline next to raw
asyncpg doing the same 10 reads in the same run.

    .venv/bin/python scripts/bench_pipelines.py [--duration 5] [--concurrency 8]

Creates a fresh database on FLEXDB_BENCH_DATABASE_URL (default: the local server), starts
`flexdb serve` and the sandbox worker on it, and drops the database at the end."""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
# Run as a file, the repository root is not on sys.path: the imports after this line need
# it first (hence their noqa: E402).
sys.path.insert(0, str(ROOT))

from rpc_server.client import FlexDBClient  # noqa: E402
from rpc_server.storage.db import _init_connection  # noqa: E402
from scripts.bench_core import load, row  # noqa: E402
from tests.conftest import fresh_database, server_with_sandbox  # noqa: E402

TRIVIAL = "def run(input, db):\n    return input\n"
TEN_CALLS = ("def run(input, db):\n"
             "    return [db.get_node(input['id'])['node']['version'] for i in range(10)]\n")
GET_NODE = ("SELECT id, tenant_id, node_type_id, data, created_at, updated_at, version "
            "FROM nodes WHERE tenant_id = $1 AND id = $2")


async def measure(rpc: FlexDBClient, db_url: str, args) -> None:
    tenant = (await rpc.call("create_tenant", {"slug": f"bp-{uuid.uuid4().hex[:8]}",
                                               "name": "Bench"}))["tenant"]
    tid = tenant["id"]
    nt = (await rpc.call("create_node_type", {"tenant_id": tid, "name": "N"}))["node_type"]
    node = (await rpc.call("create_node", {"tenant_id": tid, "node_type_id": nt["id"],
                                           "data": {"x": 1}}))["node"]
    trivial = (await rpc.call("create_pipeline", {"tenant_id": tid, "name": "trivial",
                                                  "code": TRIVIAL}))["pipeline"]
    ten = (await rpc.call("create_pipeline", {"tenant_id": tid, "name": "ten-calls",
                                              "code": TEN_CALLS}))["pipeline"]

    def runner(pipeline_id, payload):
        async def call():
            await rpc.call("run_pipeline", {"tenant_id": tid, "pipeline_id": pipeline_id,
                                            "input": payload})
        return call

    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=args.concurrency,
                                     init=_init_connection)
    tid_u, nid_u = uuid.UUID(tid), uuid.UUID(node["id"])

    async def raw_ten():
        async with pool.acquire() as conn:
            for _ in range(10):
                await conn.fetchrow(GET_NODE, tid_u, nid_u)

    secs = args.duration
    await load(runner(trivial["id"], 1), 1, 1.0)  # warm
    rows = [
        ("trivial pipeline, c=1", await load(runner(trivial["id"], 1), 1, secs), None),
        ("10 db calls (get_node), c=1",
         await load(runner(ten["id"], {"id": node["id"]}), 1, secs),
         await load(raw_ten, 1, secs)),
        (f"trivial pipeline, c={args.concurrency}",
         await load(runner(trivial["id"], 1), args.concurrency, secs), None),
    ]
    await pool.close()
    print(f"\nflexdb pipeline benchmark: {secs:g}s per scenario, sandbox pool "
          f"{args.sandbox_pool} warm children, {args.max_running} runs at once; latency in "
          "ms; raw = the same 10 reads through asyncpg")
    print("| scenario | runs/s | p50 | p95 | p99 | errors | raw req/s | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for name, flex, raw in rows:
        print(row(name, flex, raw, unit="runs/s"))


async def run(url: str, key: str, db_url: str, args) -> None:
    async with FlexDBClient(url, api_key=key, max_connections=args.concurrency) as rpc:
        await measure(rpc, db_url, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--sandbox-pool", type=int, default=4)
    parser.add_argument("--max-running", type=int, default=8)
    args = parser.parse_args()
    server_url = os.environ.get("FLEXDB_BENCH_DATABASE_URL",
                                "postgresql://postgres@127.0.0.1:5432/postgres")
    with fresh_database(server_url) as db_url, \
            server_with_sandbox(db_url, {"FLEXDB_SANDBOX_POOL_SIZE": str(args.sandbox_pool),
                                         "FLEXDB_SANDBOX_MAX_RUNNING": str(args.max_running),
                                         "FLEXDB_LOG_LEVEL": "WARNING"},
                                FLEXDB_LOG_LEVEL="WARNING") as srv:
        asyncio.run(run(srv.url, srv.admin_key, db_url, args))


if __name__ == "__main__":
    main()
