#!/usr/bin/env python3
"""Core benchmark: list_nodes pages near the start vs ~50,000 rows deep in a 100,000-node
tenant, and create_nodes (batches of 1,000) vs single create_node calls, each next to raw
asyncpg running the same SQL in the same run.

    .venv/bin/python scripts/bench_core.py [--nodes 100000] [--concurrency 32] [--seconds 5]

Creates a fresh database on FLEXDB_BENCH_DATABASE_URL (default: the local server at
127.0.0.1:5432), starts `flexdb serve` on it, and drops the database at the end."""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
# Run as a file, the repository root is not on sys.path: the imports after this line need
# it first (hence their noqa: E402).
sys.path.insert(0, str(ROOT))

from rpc_server.client import FlexDBClient  # noqa: E402
from tests.conftest import fresh_database, running_server  # noqa: E402

NODE_COLUMNS = "id, tenant_id, node_type_id, data, created_at, updated_at, version"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def token_at_depth(rpc, tid: str, depth: int) -> str:
    """The list_nodes page token of the page starting `depth` rows into the tenant."""
    token, walked = "", 0
    while walked < depth:
        step = min(1000, depth - walked)
        page = await rpc.call("list_nodes", {"tenant_id": tid, "pagination": {
            "page_size": step, "page_token": token, "include_total": False}})
        token, walked = page["pagination"]["next_page_token"], walked + step
    return token


async def load(make_call, concurrency: int, seconds: float) -> dict:
    """Run make_call() from `concurrency` workers for `seconds`; latency figures in ms."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker():
        nonlocal errors
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                await make_call()
            except Exception:  # noqa: BLE001 - counted, not fatal
                errors += 1
            latencies.append((time.perf_counter() - start) * 1000)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    return {"rps": len(latencies) / elapsed, "p50": percentile(latencies, 0.5),
            "p95": percentile(latencies, 0.95), "p99": percentile(latencies, 0.99),
            "errors": errors, "n": len(latencies)}


def row(name: str, flex: dict, raw: dict | None, unit: str = "req/s") -> str:
    ratio = f"{flex['rps'] / raw['rps']:.2f}x" if raw else "-"
    raw_rps = f"{raw['rps']:,.0f}" if raw else "-"
    return (f"| {name} | {flex['rps']:,.0f} {unit} | {flex['p50']:.2f} | {flex['p95']:.2f} | "
            f"{flex['p99']:.2f} | {flex['errors']} | {raw_rps} | {ratio} |")


def main(args) -> None:
    server_url = os.environ.get("FLEXDB_BENCH_DATABASE_URL",
                                "postgresql://postgres@127.0.0.1:5432/postgres")
    with fresh_database(server_url) as db_url, \
            running_server({"FLEXDB_DATABASE_URL": db_url,
                            "FLEXDB_DB_POOL_MAX": str(args.pool),
                            "FLEXDB_LOG_LEVEL": "WARNING"}) as srv:
        asyncio.run(run(srv.url, srv.admin_key, db_url, args))


async def run(url: str, key: str, db_url: str, args) -> None:
    async with FlexDBClient(url, api_key=key, max_connections=args.concurrency) as rpc:
        await measure(rpc, db_url, args)


async def measure(rpc: FlexDBClient, db_url: str, args) -> None:
    c, secs = args.concurrency, args.seconds
    tenant = (await rpc.call("create_tenant", {"slug": f"bench-{uuid.uuid4().hex[:8]}",
                                               "name": "Bench"}))["tenant"]
    tid = tenant["id"]
    nt = (await rpc.call("create_node_type", {
        "tenant_id": tid, "name": "Item",
        "schema": {"type": "object", "properties": {"n": {"type": "integer"},
                                                    "label": {"type": "string"}}}}))["node_type"]

    # Preload through the public API in batches of 1,000 (one call at a time).
    print(f"preloading {args.nodes:,} nodes with create_nodes (batches of 1,000) ...", flush=True)
    began = time.perf_counter()
    for start in range(0, args.nodes, 1000):
        batch = [{"node_type_id": nt["id"], "data": {"n": i, "label": f"item {i}"}}
                 for i in range(start, min(start + 1000, args.nodes))]
        await rpc.call("create_nodes", {"tenant_id": tid, "nodes": batch})
    preload_s = time.perf_counter() - began
    bulk_sequential = args.nodes / preload_s

    pool = await asyncpg.create_pool(db_url, min_size=args.pool, max_size=args.pool)
    try:
        # Page tokens: first page, and the page starting ~50,000 rows deep (or half way).
        depth = min(50_000, args.nodes // 2)
        token = await token_at_depth(rpc, tid, depth)
        deep_row = await pool.fetchrow(
            "SELECT created_at, id FROM nodes WHERE tenant_id = $1 "
            "ORDER BY created_at, id OFFSET $2 LIMIT 1", uuid.UUID(tid), depth - 1)

        def list_call(page_token: str, include_total: bool):
            params = {"tenant_id": tid, "pagination": {"page_size": 50, "page_token": page_token,
                                                       "include_total": include_total}}
            return lambda: rpc.call("list_nodes", params)

        def raw_list(after, include_total: bool):
            tid_u = uuid.UUID(tid)

            async def call():
                async with pool.acquire() as conn:
                    if after is None:
                        await conn.fetch(f"SELECT {NODE_COLUMNS} FROM nodes WHERE tenant_id = $1 "
                                         "ORDER BY created_at, id LIMIT 51", tid_u)
                    else:
                        await conn.fetch(f"SELECT {NODE_COLUMNS} FROM nodes WHERE tenant_id = $1 "
                                         "AND (created_at, id) > ($2, $3) ORDER BY created_at, id "
                                         "LIMIT 51", tid_u, after["created_at"], after["id"])
                    if include_total:
                        await conn.fetchval(
                            "SELECT count(*) FROM nodes WHERE tenant_id = $1", tid_u)
            return call

        results = []
        for conc in (1, c):
            for label, tok, after in (("first page", "", None),
                                      (f"{depth:,} rows deep", token, deep_row)):
                for include_total in (False, True):
                    name = (f"list_nodes 50, {label}, total={'yes' if include_total else 'no'}, "
                            f"c={conc}")
                    flex = await load(list_call(tok, include_total), conc, secs)
                    raw = await load(raw_list(after, include_total), conc, secs)
                    results.append(row(name, flex, raw))

        # Single create_node calls at concurrency c vs batches of 1,000 (nodes/s).
        counter = iter(range(10**9))
        single = await load(lambda: rpc.call("create_node", {
            "tenant_id": tid, "node_type_id": nt["id"],
            "data": {"n": next(counter), "label": "single"}}), c, secs)
        raw_single = await load(lambda: pool.execute(
            "INSERT INTO nodes (tenant_id, node_type_id, data) VALUES ($1, $2, $3::jsonb)",
            uuid.UUID(tid), uuid.UUID(nt["id"]), '{"n": 1, "label": "single"}'), c, secs)
        results.append(row("create_node (single calls)", single, raw_single, "nodes/s"))

        batch = [{"node_type_id": nt["id"], "data": {"n": i, "label": f"bulk {i}"}}
                 for i in range(1000)]
        bulk = await load(lambda: rpc.call("create_nodes", {"tenant_id": tid, "nodes": batch}),
                          min(c, 4), secs)
        bulk_rows = {**bulk, "rps": bulk["rps"] * 1000}
        results.append(row("create_nodes (batches of 1,000, c=4)", bulk_rows, None, "nodes/s"))
    finally:
        await pool.close()

    print(f"\nflexdb core benchmark: {args.nodes:,} nodes in the tenant, concurrency {c}, "
          f"{secs:g}s per scenario, server pool {args.pool}, {os.cpu_count()} cores")
    print(f"preload: {args.nodes:,} nodes via create_nodes, one call at a time: "
          f"{bulk_sequential:,.0f} nodes/s\n")
    print("| scenario | flexdb | p50 ms | p95 ms | p99 ms | errors | raw asyncpg | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for line in results:
        print(line)
    print(f"\nbulk vs single: {bulk_rows['rps'] / single['rps']:.1f}x the nodes/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--pool", type=int, default=10)
    main(parser.parse_args())
