#!/usr/bin/env python3
"""Cost of authentication: get_node req/s with an API key vs. without authentication
(FLEXDB_ANONYMOUS_ROLE=platform_admin), same database, same run, next to raw asyncpg.

    .venv/bin/python scripts/bench_auth.py [--concurrency 32] [--seconds 5] [--rounds 2]

Creates a fresh database on FLEXDB_BENCH_DATABASE_URL (default: the local server) and two
`flexdb serve` processes on it; scenarios alternate so drift hits both alike."""
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
from scripts.bench_core import NODE_COLUMNS, load  # noqa: E402
from tests.conftest import fresh_database, running_server  # noqa: E402


async def measure(keyed_url: str, open_url: str, key: str, db_url: str, args) -> None:
    c, secs = args.concurrency, args.seconds
    async with FlexDBClient(keyed_url, api_key=key, max_connections=c) as keyed, \
            FlexDBClient(open_url, max_connections=c) as anonymous, \
            FlexDBClient(keyed_url, max_connections=c) as member:
        tenant = (await keyed.call("create_tenant", {"slug": f"b-{uuid.uuid4().hex[:8]}",
                                                     "name": "B"}))["tenant"]
        nt = (await keyed.call("create_node_type", {"tenant_id": tenant["id"],
                                                    "name": "N"}))["node_type"]
        nodes = (await keyed.call("create_nodes", {"tenant_id": tenant["id"], "nodes": [
            {"node_type_id": nt["id"], "data": {"i": i}} for i in range(1000)]}))["nodes"]
        ids = [n["id"] for n in nodes]
        user = (await keyed.call("create_user", {"email": f"m-{uuid.uuid4().hex[:8]}@example.com",
                                                 "display_name": "M"}))["user"]
        await keyed.call("add_user_to_tenant", {"tenant_id": tenant["id"], "user_id": user["id"],
                                                "role": "member"})
        member_key = (await keyed.call("create_api_key", {"name": "bench",
                                                          "user_id": user["id"]}))["secret"]
        pool = await asyncpg.create_pool(db_url, min_size=10, max_size=10)
        tid = uuid.UUID(tenant["id"])
        uids = [uuid.UUID(i) for i in ids]
        counter = iter(range(10**9))

        def via(client):
            return lambda: client.call("get_node", {"tenant_id": tenant["id"],
                                                    "id": ids[next(counter) % len(ids)]})

        async def raw():
            await pool.fetchrow(
                f"SELECT {NODE_COLUMNS} FROM nodes WHERE tenant_id = $1 AND id = $2",
                tid, uids[next(counter) % len(uids)])

        member._http.headers["Authorization"] = f"Bearer {member_key}"
        results = {"platform admin key": [], "tenant member key (role check)": [],
                   "no auth (anonymous admin)": [], "raw asyncpg": []}
        for _ in range(args.rounds):
            results["platform admin key"].append(await load(via(keyed), c, secs))
            results["tenant member key (role check)"].append(await load(via(member), c, secs))
            results["no auth (anonymous admin)"].append(await load(via(anonymous), c, secs))
            results["raw asyncpg"].append(await load(raw, c, secs))
        await pool.close()

    def best(runs):
        return max(runs, key=lambda r: r["rps"])

    print(f"\nget_node, concurrency {c}, {secs:g}s x {args.rounds} rounds (best round shown), "
          f"{os.cpu_count()} cores")
    print("| scenario | req/s | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|")
    for name, runs in results.items():
        r = best(runs)
        print(f"| {name} | {r['rps']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} | "
              f"{sum(x['errors'] for x in runs)} |")
    keyed_rps = best(results["tenant member key (role check)"])["rps"]
    open_rps = best(results["no auth (anonymous admin)"])["rps"]
    raw_rps = best(results["raw asyncpg"])["rps"]
    print(f"\nauthentication costs {100 * (1 - keyed_rps / open_rps):.1f}% of get_node throughput "
          f"({keyed_rps:,.0f} vs {open_rps:,.0f} req/s); with auth = {keyed_rps / raw_rps:.2f}x "
          "raw asyncpg")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    server_url = os.environ.get("FLEXDB_BENCH_DATABASE_URL",
                                "postgresql://postgres@127.0.0.1:5432/postgres")
    quiet = {"FLEXDB_LOG_LEVEL": "WARNING"}
    with fresh_database(server_url) as db_url, \
            running_server({"FLEXDB_DATABASE_URL": db_url, **quiet}) as keyed, \
            running_server({"FLEXDB_DATABASE_URL": db_url, **quiet,
                            "FLEXDB_ANONYMOUS_ROLE": "platform_admin"}) as anonymous:
        asyncio.run(measure(keyed.url, anonymous.url, keyed.admin_key, db_url, args))


if __name__ == "__main__":
    main()
