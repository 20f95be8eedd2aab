#!/usr/bin/env python3
"""Webhook benchmark: deliveries per second to a local receiver (aiohttp on 127.0.0.1,
answering 204 at once), for one webhook (in order: one request in flight) and for several
webhooks of several tenants at once.

    .venv/bin/python scripts/bench_webhooks.py [--events 2000] [--webhooks 8]

Creates a fresh database on FLEXDB_BENCH_DATABASE_URL (default: the local server), starts
`flexdb serve` on it (one process, FLEXDB_WEBHOOK_ALLOW_PRIVATE=true) and drops the database
at the end. The events are written first (bulk create_nodes) with the webhooks paused, then
the webhooks are resumed and timed until the receiver has every event: the figure is
delivery alone, not the writes. scripts/bench_changes.py may call `measure_deliveries`."""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
# Run as a file, the repository root is not on sys.path: the imports after this line need
# it first (hence their noqa: E402).
sys.path.insert(0, str(ROOT))

from rpc_server.client import FlexDBClient  # noqa: E402
from tests.conftest import free_port, fresh_database, running_server  # noqa: E402

BULK = 1000


async def measure_deliveries(rpc: FlexDBClient, events: int, webhooks: int) -> float:
    """Deliveries/s of `webhooks` webhooks (one tenant each) of `events` events in all, to a
    local receiver. The server must run with FLEXDB_WEBHOOK_ALLOW_PRIVATE=true."""
    received = 0
    done = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        nonlocal received
        await request.read()
        received += 1
        if received >= events:
            done.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        hooks = []
        per_hook = events // webhooks
        for n in range(webhooks):
            t = (await rpc.call("create_tenant", {"slug": f"bw-{uuid.uuid4().hex[:8]}",
                                                  "name": "Bench"}))["tenant"]["id"]
            hook = (await rpc.call("create_webhook", {
                "tenant_id": t, "url": f"http://127.0.0.1:{port}/{n}",
                "filter": {"kinds": ["node"]}}))["webhook"]
            await rpc.call("update_webhook", {"tenant_id": t, "id": hook["id"],
                                              "status": "paused"})
            nt = (await rpc.call("create_node_type", {"tenant_id": t,
                                                      "name": "N"}))["node_type"]["id"]
            for start in range(0, per_hook, BULK):
                await rpc.call("create_nodes", {"tenant_id": t, "nodes": [
                    {"node_type_id": nt, "data": {"i": i}}
                    for i in range(start, min(per_hook, start + BULK))]})
            hooks.append((t, hook["id"]))
        events = per_hook * webhooks
        started = time.perf_counter()
        for t, hook_id in hooks:
            await rpc.call("update_webhook", {"tenant_id": t, "id": hook_id, "status": "active"})
        await asyncio.wait_for(done.wait(), 600)
        return events / (time.perf_counter() - started)
    finally:
        await runner.cleanup()


async def run(url: str, key: str, args) -> None:
    async with FlexDBClient(url, api_key=key) as rpc:
        one = await measure_deliveries(rpc, args.events, 1)
        print(f"webhook deliveries/s, 1 webhook (in order, one in flight): {one:,.0f}")
        many = await measure_deliveries(rpc, args.events, args.webhooks)
        print(f"webhook deliveries/s, {args.webhooks} webhooks at once: {many:,.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--webhooks", type=int, default=8)
    args = parser.parse_args()
    server_url = os.environ.get("FLEXDB_BENCH_DATABASE_URL",
                                "postgresql://postgres@127.0.0.1:5432/postgres")
    with fresh_database(server_url) as db_url, running_server({
            "FLEXDB_DATABASE_URL": db_url, "FLEXDB_WEBHOOK_ALLOW_PRIVATE": "true",
            "FLEXDB_LOG_LEVEL": "WARNING"}) as srv:
        asyncio.run(run(srv.url, srv.admin_key, args))


if __name__ == "__main__":
    main()
