#!/usr/bin/env python3
"""REST facade overhead: GET /tenants/{t}/nodes/{id} through `flexdb facade` against the
direct `get_node` JSON-RPC call it forwards to, and raw asyncpg running the same SQL, all in
the same run at the same concurrency (keep-alive HTTP clients on both sides).

    .venv/bin/python scripts/bench_facade.py [--concurrency 1,16] [--seconds 5] [--nodes 1000]

Creates a fresh database on FLEXDB_BENCH_DATABASE_URL (default: the local server at
127.0.0.1:5432), starts `flexdb serve` and `flexdb facade`, and drops the database at the end.
The facade's added latency is its p50/p99 minus the direct RPC's."""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
from pathlib import Path

import asyncpg
import httpx
from httpx_aiohttp import AiohttpTransport

ROOT = Path(__file__).resolve().parent.parent
# Run as a file, the repository root is not on sys.path: the imports after this line need
# it first (hence their noqa: E402).
sys.path.insert(0, str(ROOT))

from rpc_server.client import FlexDBClient  # noqa: E402
from scripts.bench_core import NODE_COLUMNS, load  # noqa: E402
from tests.conftest import fresh_database, running_facade, running_server  # noqa: E402


async def setup(rpc: FlexDBClient, nodes: int) -> tuple[str, list[str]]:
    tenant = (await rpc.call("create_tenant", {"slug": "bench-facade", "name": "B"}))["tenant"]
    node_type = (await rpc.call("create_node_type", {
        "tenant_id": tenant["id"], "name": "Doc",
        "schema": {"type": "object", "properties": {"n": {"type": "integer"}}}}))["node_type"]
    ids = []
    for start in range(0, nodes, 1000):
        batch = [{"node_type_id": node_type["id"], "data": {"n": i, "title": f"doc {i}"}}
                 for i in range(start, min(nodes, start + 1000))]
        created = await rpc.call("create_nodes", {"tenant_id": tenant["id"], "nodes": batch})
        ids += [n["id"] for n in created["nodes"]]
    return tenant["id"], ids


async def measure(rpc_url: str, facade_base: str, key: str, db_url: str, args) -> None:
    levels = [int(c) for c in args.concurrency.split(",")]
    most = max(levels)
    async with FlexDBClient(rpc_url, api_key=key, max_connections=most) as rpc:
        tid, ids = await setup(rpc, args.nodes)
        limits = httpx.Limits(max_connections=most, max_keepalive_connections=most)
        rest = httpx.AsyncClient(base_url=facade_base, limits=limits, timeout=30,
                                 headers={"Authorization": f"Bearer {key}"},
                                 transport=AiohttpTransport(limits=limits))
        pool = await asyncpg.create_pool(db_url, min_size=most, max_size=most)
        sql = f"SELECT {NODE_COLUMNS} FROM nodes WHERE tenant_id = $1 AND id = $2"
        pick = random.Random(7).choice

        async def via_rpc():
            await rpc.call("get_node", {"tenant_id": tid, "id": pick(ids)})

        async def via_facade():
            response = await rest.get(f"/tenants/{tid}/nodes/{pick(ids)}")
            if response.status_code != 200:
                raise RuntimeError(response.text)

        async def via_asyncpg():
            async with pool.acquire() as conn:
                await conn.fetchrow(sql, tid, pick(ids))

        for call in (via_rpc, via_facade, via_asyncpg):  # warm up every path
            await load(call, most, 1)
        print(f"\n{args.nodes} nodes; {args.seconds:g} s per row; latencies in ms\n")
        print("| concurrency | path | req/s | p50 | p95 | p99 | errors |")
        print("|---|---|---|---|---|---|---|")
        summary = []
        for concurrency in levels:
            figures = {}
            for name, call in (("GET /tenants/{t}/nodes/{id} (facade)", via_facade),
                               ("get_node (JSON-RPC direct)", via_rpc),
                               ("raw asyncpg, same SQL", via_asyncpg)):
                f = figures[name] = await load(call, concurrency, args.seconds)
                print(f"| {concurrency} | {name} | {f['rps']:,.0f} | {f['p50']:.2f} | "
                      f"{f['p95']:.2f} | {f['p99']:.2f} | {f['errors']} |")
            facade, direct, raw = figures.values()
            summary.append(
                f"c={concurrency}: facade adds {facade['p50'] - direct['p50']:+.2f} ms at p50, "
                f"{facade['p99'] - direct['p99']:+.2f} ms at p99; throughput facade/RPC "
                f"{facade['rps'] / direct['rps']:.2f}x, RPC/asyncpg "
                f"{direct['rps'] / raw['rps']:.2f}x, facade/asyncpg "
                f"{facade['rps'] / raw['rps']:.2f}x")
        print("\n" + "\n".join(summary))
        await rest.aclose()
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--nodes", type=int, default=1000)
    args = parser.parse_args()
    server_url = os.environ.get("FLEXDB_BENCH_DATABASE_URL",
                                "postgresql://postgres@127.0.0.1:5432/postgres")
    with fresh_database(server_url) as db_url, \
            running_server({"FLEXDB_DATABASE_URL": db_url, "FLEXDB_LOG_LEVEL": "WARNING"}) as srv, \
            running_facade(srv.url, FLEXDB_LOG_LEVEL="WARNING") as facade:
        asyncio.run(measure(srv.url, facade.base, srv.admin_key, db_url, args))


if __name__ == "__main__":
    main()
