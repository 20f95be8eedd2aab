#!/usr/bin/env python3
"""Mixed load across two rpc_server instances sharing one Redis and one PostgreSQL, with one
Redis restart and one PostgreSQL restart in the middle. Reports requests served, errors by
code and type, acknowledged writes lost (must be 0) and the time to recover from each
restart.

    .venv/bin/python scripts/load_faults.py [--seconds 60] [--workers 8]

PostgreSQL (embedded) and Redis (redis-server on a free port) are this script's own, in
temp dirs: the machine's shared servers are never touched."""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import sys
import time
import uuid
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
# Run as a file, the repository root is not on sys.path: the imports after this line need
# it first (hence their noqa: E402).
sys.path.insert(0, str(ROOT))

from rpc_server.client import FlexDBClient, RpcError, TransportError  # noqa: E402
from tests.conftest import running_server  # noqa: E402
from tests.services import own_postgres, own_redis  # noqa: E402


class Tally:
    def __init__(self):
        self.ok = collections.Counter()
        self.errors = collections.Counter()
        self.acknowledged: list[str] = []
        self.last_error_at = 0.0
        self.first_ok_after: dict[str, float] = {}

    def success(self, method: str) -> None:
        self.ok[method] += 1

    def failure(self, method: str, label: str) -> None:
        self.errors[(method, label)] += 1
        self.last_error_at = time.monotonic()


async def worker(n: int, clients, tenant: str, node_type: str, tally: Tally, stop_at: float):
    rng = random.Random(n)
    mine: list[str] = []
    while time.monotonic() < stop_at:
        client = clients[rng.randrange(len(clients))]
        roll = rng.random()
        if roll < 0.35 or not mine:
            method, params = "create_node", {"tenant_id": tenant, "node_type_id": node_type,
                                             "data": {"w": n, "v": rng.randrange(1000)}}
        elif roll < 0.6:
            method, params = "get_node", {"tenant_id": tenant, "id": rng.choice(mine)}
        elif roll < 0.75:
            method, params = "update_node", {"tenant_id": tenant, "id": rng.choice(mine),
                                             "data": {"w": n, "v": rng.randrange(1000)}}
        elif roll < 0.9:
            method, params = "list_nodes", {"tenant_id": tenant,
                                            "pagination": {"page_size": 20,
                                                           "include_total": False}}
        else:
            method, params = "query_nodes", {"tenant_id": tenant, "filter": {
                "field": "data.v", "op": "gte", "value": 500}}
        try:
            result = await client.call(method, params)
            tally.success(method)
            if method == "create_node":
                mine.append(result["node"]["id"])
                tally.acknowledged.append(result["node"]["id"])
        except RpcError as exc:
            tally.failure(method, f"{exc.code} {exc.type}")
            await asyncio.sleep(0.05)
        except TransportError as exc:
            tally.failure(method, f"transport {type(exc).__name__}")
            await asyncio.sleep(0.05)


async def recovery(tally: Tally, since: float, limit: float = 30.0) -> float | None:
    """Seconds from `since` until calls succeed again with no error for 0.5 s."""
    while time.monotonic() - since < limit:
        before = sum(tally.ok.values())
        await asyncio.sleep(0.1)
        quiet = time.monotonic() - tally.last_error_at > 0.5
        if sum(tally.ok.values()) > before and quiet:
            return max(0.0, tally.last_error_at - since) if tally.last_error_at > since else 0.0
    return None


async def audit_check(admin: FlexDBClient, tenant: str, tally: Tally) -> dict:
    """Every acknowledged create has its event on a valid chain (events are chained after
    commit, so a restart in between must not lose one)."""
    verified = await admin.call("verify_audit_chain", {"tenant_id": tenant})
    targets, token = set(), ""
    while True:
        page = await admin.call("list_audit_events", {
            "tenant_id": tenant, "method": "create_node",
            "pagination": {"page_size": 1000, "page_token": token, "include_total": False}})
        targets |= {e["target_id"] for e in page["audit_events"]}
        token = page["pagination"]["next_page_token"]
        if not token:
            break
    return {"ok": verified["ok"], "events": verified["events_checked"],
            "missing": len(set(tally.acknowledged) - targets)}


async def run(urls: list[str], key: str, db_url: str, restarts, args) -> None:
    clients = [FlexDBClient(url, api_key=key, timeout=10) for url in urls]
    admin = clients[0]
    tenant = (await admin.call("create_tenant", {"slug": f"load-{uuid.uuid4().hex[:8]}",
                                                 "name": "Load"}))["tenant"]["id"]
    node_type = (await admin.call("create_node_type", {"tenant_id": tenant,
                                                       "name": "Doc"}))["node_type"]["id"]
    tally = Tally()
    started = time.monotonic()
    stop_at = started + args.seconds
    workers = [asyncio.create_task(worker(n, clients, tenant, node_type, tally, stop_at))
               for n in range(args.workers)]
    report = []
    for label, at, action in restarts:
        await asyncio.sleep(max(0.0, started + at - time.monotonic()))
        t0 = time.monotonic()
        await asyncio.to_thread(action)
        took = time.monotonic() - t0
        recovered = await recovery(tally, t0)
        report.append((label, round(t0 - started, 1), took, recovered))
    await asyncio.gather(*workers)
    elapsed = time.monotonic() - started
    audit = await audit_check(admin, tenant, tally)
    for client in clients:
        await client.aclose()

    conn = await asyncpg.connect(db_url)
    try:
        stored = {str(r["id"]) for r in await conn.fetch(
            "SELECT id FROM nodes WHERE tenant_id = $1", uuid.UUID(tenant))}
    finally:
        await conn.close()
    lost = set(tally.acknowledged) - stored

    served = sum(tally.ok.values())
    print(f"\n{args.seconds:g} s mixed load, {args.workers} workers over {len(urls)} "
          f"instances sharing one Redis and one PostgreSQL\n")
    print(f"requests served: {served:,} ({served / elapsed:,.0f}/s)   failed: "
          f"{sum(tally.errors.values()):,}")
    for method, count in sorted(tally.ok.items()):
        print(f"  ok {method}: {count:,}")
    print("errors by method and code/type:")
    for (method, label), count in sorted(tally.errors.items()):
        print(f"  {method} {label}: {count:,}")
    print(f"acknowledged writes: {len(tally.acknowledged):,}; lost: {len(lost)}")
    print(f"audit trail: chain verified {audit['ok']} ({audit['events']:,} events); "
          f"acknowledged creates without their event: {audit['missing']}")
    for label, at, took, recovered in report:
        rec = "did not recover" if recovered is None else f"{recovered:.2f} s"
        print(f"{label} at t={at} s (restart took {took:.2f} s): errors until {rec} after "
              "the restart began")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    with own_postgres() as (db_url, stop_db, start_db), \
            own_redis() as (redis_url, stop_redis, start_redis):
        env = {"FLEXDB_DATABASE_URL": db_url, "FLEXDB_REDIS_URL": redis_url,
               "FLEXDB_RATE_LIMIT_KEY_PER_S": "100000", "FLEXDB_DB_CONNECT_TIMEOUT_S": "2",
               "FLEXDB_LOG_LEVEL": "WARNING"}
        with running_server(env) as first, running_server(env) as second:
            def restart_redis():
                stop_redis()
                time.sleep(1.0)
                start_redis()

            def restart_postgres():
                stop_db()
                time.sleep(1.0)
                start_db()

            restarts = [("Redis restart", args.seconds / 3, restart_redis),
                        ("PostgreSQL restart", args.seconds * 0.6, restart_postgres)]
            asyncio.run(run([first.url, second.url], first.admin_key, db_url, restarts, args))
            # Unexpected errors (-32603 internal) are logged by the servers: show them.
            errors = [json.loads(line) for srv in (first, second)
                      for line in srv.output().splitlines() if '"level":"ERROR"' in line]
            print(f"server log lines at ERROR: {len(errors)}")
            for entry in errors[:5]:
                last = (entry.get("exception") or "").strip().splitlines()[-1:] or [""]
                print(f"  {entry['message']}: {last[0][:300]}")


if __name__ == "__main__":
    main()
