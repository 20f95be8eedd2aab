#!/usr/bin/env python3
"""Query-group benchmark: traverse (depth 3 on a 100,000-edge graph), execute_query (a filtered
aggregate) and query_nodes (a data equality filter), each next to raw asyncpg running the same
SQL in the same run at the same concurrency.

    .venv/bin/python scripts/bench_query.py [--duration 5] [--concurrency 32] [--edges 100000]
        [--database-url postgresql://postgres@127.0.0.1:5432/postgres] [--json out.jsonl]

Creates a uniquely named database on --database-url (default FLEXDB_BENCH_DATABASE_URL or the
local server), starts `flexdb serve` on it, preloads through the public API (create_nodes and
create_relationships in batches of 1,000) and drops the database at the end, also on error."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
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

from rpc_server.api.params import Pagination  # noqa: E402
from rpc_server.client import FlexDBClient  # noqa: E402
from rpc_server.storage.db import _init_connection, _reset_on_release  # noqa: E402
from rpc_server.storage.node_filter import SqlArgs, compile_filter, parse_sort  # noqa: E402
from rpc_server.storage.repositories.graph import traverse_sql  # noqa: E402
from rpc_server.storage.repositories.nodes import NodeRepository  # noqa: E402
from scripts.bench_core import load  # noqa: E402
from tests.conftest import fresh_database, running_server  # noqa: E402

BATCH = 1000
KINDS = 10      # data.kind: k0..k9, 10% of the nodes each (execute_query's filter)
GROUPS = 1000   # data.g: 0..999, 0.1% of the nodes each (query_nodes' GIN-indexed filter)
DEPTH, LIMIT = 3, 100
TIMEOUT_S = 5.0
EXEC_SQL = "SELECT count(*), avg((data->>'n')::int) FROM nodes WHERE data->>'kind' = $1"
EXEC_RAW_SQL = ("SELECT count(*), avg((data->>'n')::int) FROM nodes "
                "WHERE tenant_id = $1 AND data->>'kind' = $2")


def recording(make_call, errors: list):
    """make_call, keeping the first few exceptions (load() only counts them)."""
    async def call():
        try:
            return await make_call()
        except Exception as exc:
            if len(errors) < 3:
                errors.append(repr(exc)[:300])
            raise
    return call


class Bench:
    def __init__(self, rpc: FlexDBClient, db_url: str, args):
        self.rpc, self.db_url, self.args = rpc, db_url, args
        self.results: list[dict] = []
        self.notes: list[str] = []

    async def pair(self, name: str, conc: int, flex_call, raw_call, raw_ran: str) -> dict:
        """Warm both sides briefly, then measure flexdb and raw asyncpg at `conc`."""
        secs, warm = self.args.duration, min(1.0, self.args.duration / 5)
        flex_errors, raw_errors = [], []
        await load(flex_call, conc, warm)
        flex = await load(recording(flex_call, flex_errors), conc, secs)
        await load(raw_call, conc, warm)
        raw = await load(recording(raw_call, raw_errors), conc, secs)
        result = {"scenario": name, "c": conc, "duration_s": secs,
                  **{k: flex[k] for k in ("rps", "p50", "p95", "p99", "errors", "n")},
                  "raw_rps": raw["rps"], "raw_p50": raw["p50"], "raw_p95": raw["p95"],
                  "raw_p99": raw["p99"], "raw_errors": raw["errors"],
                  "ratio": flex["rps"] / raw["rps"] if raw["rps"] else None,
                  "raw_ran": raw_ran, "first_errors": flex_errors, "raw_first_errors": raw_errors}
        self.results.append(result)
        print(f"  {name}, c={conc}: {flex['rps']:,.0f} req/s p50 {flex['p50']:.2f} ms "
              f"(raw {raw['rps']:,.0f} req/s p50 {raw['p50']:.2f} ms)", flush=True)
        return result


def group_statements(tid_u: uuid.UUID) -> list[tuple[str, list]]:
    """query_nodes' SQL and args for `data.g = g`, g in 0..GROUPS-1 (page of 50, no total):
    what raw asyncpg runs on its side."""
    pagination = Pagination(page_size=50, include_total=False)
    statements = []
    for g in range(GROUPS):
        sargs = SqlArgs()
        condition = compile_filter({"field": "data.g", "op": "eq", "value": g}, sargs)
        st = NodeRepository.query_statement(tid_u, None, condition, sargs, parse_sort(None),
                                            pagination)
        statements.append((st.sql, list(st.args)))
    return statements


async def preload_graph(rpc: FlexDBClient, tid: str, type_id: str, nodes: int, edges: int,
                        rng: random.Random, pick_end) -> tuple[list[str], float, float]:
    """`nodes` nodes, then `edges` relationships whose ends come from pick_end(rng, n)."""
    began = time.perf_counter()
    ids: list[str] = []
    for start in range(0, nodes, BATCH):
        batch = [{"node_type_id": type_id,
                  "data": {"n": i, "kind": f"k{i % KINDS}", "g": i % GROUPS}}
                 for i in range(start, min(start + BATCH, nodes))]
        created = await rpc.call("create_nodes", {"tenant_id": tid, "nodes": batch})
        ids.extend(n["id"] for n in created["nodes"])
    node_s = time.perf_counter() - began
    began = time.perf_counter()
    for start in range(0, edges, BATCH):
        batch = [{"source_node_id": ids[pick_end(rng, nodes)],
                  "target_node_id": ids[pick_end(rng, nodes)], "relationship_type": "LINKS"}
                 for _ in range(min(BATCH, edges - start))]
        await rpc.call("create_relationships", {"tenant_id": tid, "relationships": batch})
    return ids, node_s, time.perf_counter() - began


async def new_tenant(rpc: FlexDBClient, label: str) -> tuple[str, str]:
    tenant = (await rpc.call("create_tenant", {"slug": f"bq-{label}-{uuid.uuid4().hex[:8]}",
                                               "name": f"Bench {label}"}))["tenant"]
    nt = (await rpc.call("create_node_type", {
        "tenant_id": tenant["id"], "name": "Item",
        "schema": {"type": "object", "properties": {
            "n": {"type": "integer"}, "kind": {"type": "string"},
            "g": {"type": "integer"}}}}))["node_type"]
    return tenant["id"], nt["id"]


def traverse_pair(bench: Bench, pool: asyncpg.Pool, tid: str, ids: list[str], seed: int,
                  sizes: list, truncated: list):
    """flexdb traverse and raw traverse_sql from the same seeded sequence of start nodes."""
    flex_rng, raw_rng = random.Random(seed), random.Random(seed)
    tid_u, uids = uuid.UUID(tid), [uuid.UUID(i) for i in ids]
    sql = traverse_sql("out", False)

    async def flex():
        result = await bench.rpc.call("traverse", {
            "tenant_id": tid, "start_node_id": ids[flex_rng.randrange(len(ids))],
            "direction": "out", "max_depth": DEPTH, "limit": LIMIT})
        sizes.append(len(result["nodes"]))
        truncated.append(result["truncated"])

    async def raw():
        async with pool.acquire() as conn:
            await conn.fetch(sql, tid_u, uids[raw_rng.randrange(len(uids))], DEPTH, LIMIT + 1,
                             timeout=TIMEOUT_S)  # traverse's default timeout_ms
    return flex, raw


async def explain(pool: asyncpg.Pool, sql: str, *args, ticket_for=None) -> str:
    """EXPLAIN ANALYZE; with ticket_for, inside a transaction holding that tenant's query
    ticket, as execute_query's views need (run as the pool's role, not flexdb_query)."""
    async with pool.acquire() as conn, conn.transaction():
        if ticket_for is not None:
            await conn.execute("SELECT set_config('flexdb.query_ticket', "
                               "flexdb_private.query_ticket($1), true)", ticket_for)
        rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *args)
    return "\n".join(r[0] for r in rows)


async def plan_indexes(pool: asyncpg.Pool, sql: str, *args) -> list[str]:
    """Names of the indexes the (non-analyzed) plan of `sql` scans."""
    async with pool.acquire() as conn:
        plan = await conn.fetchval("EXPLAIN (FORMAT JSON) " + sql, *args)
    found: list[str] = []

    def walk(node):
        if "Index Name" in node:
            found.append(f"{node['Node Type']} on {node['Index Name']}")
        for child in node.get("Plans", []):
            walk(child)
    walk((json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"])
    return found


async def measure(bench: Bench) -> None:
    args, rpc = bench.args, bench.rpc
    c, n_edges = args.concurrency, args.edges
    n_nodes = n_edges  # average out-degree 1

    tid, type_id = await new_tenant(rpc, "graph")
    print(f"preloading {n_nodes:,} nodes (create_nodes) and {n_edges:,} relationships "
          f"(create_relationships), batches of {BATCH:,}, one call at a time ...", flush=True)
    ids, node_s, edge_s = await preload_graph(rpc, tid, type_id, n_nodes, n_edges,
                                              random.Random(args.seed),
                                              lambda rng, n: rng.randrange(n))
    bench.notes.append(f"preload: {n_nodes:,} nodes in {node_s:.1f}s ({n_nodes / node_s:,.0f} "
                       f"nodes/s), {n_edges:,} relationships in {edge_s:.1f}s "
                       f"({n_edges / edge_s:,.0f} rels/s)")

    hub = None
    if args.hub_nodes:
        # Preferential ends: each end is one of 1% "hub" nodes with probability 1/2, else
        # uniform; average out-degree 1, hubs ~50 out and ~50 in.
        h_nodes = args.hub_nodes
        h_tid, h_type = await new_tenant(rpc, "hub")
        hubs = max(1, h_nodes // 100)

        def hub_end(rng, n):
            return rng.randrange(hubs) if rng.random() < 0.5 else rng.randrange(n)
        print(f"preloading hub-heavy graph: {h_nodes:,} nodes, {h_nodes:,} relationships, "
              f"{hubs} hubs ...", flush=True)
        h_ids, _, _ = await preload_graph(rpc, h_tid, h_type, h_nodes, h_nodes,
                                          random.Random(args.seed + 1), hub_end)
        hub = (h_tid, h_ids, hubs)

    pool = await asyncpg.create_pool(bench.db_url, min_size=args.pool, max_size=args.pool,
                                     init=_init_connection, reset=_reset_on_release)
    qpool = await asyncpg.create_pool(bench.db_url, min_size=args.query_pool,
                                      max_size=args.query_pool, init=_init_connection,
                                      reset=_reset_on_release)
    try:
        await pool.execute("ANALYZE nodes; ANALYZE relationships")
        tid_u = uuid.UUID(tid)
        out_degree = await pool.fetch(
            "SELECT d, count(*) AS nodes FROM (SELECT count(r.id) AS d FROM nodes n "
            "LEFT JOIN relationships r ON r.tenant_id = n.tenant_id AND r.source_node_id = n.id "
            "WHERE n.tenant_id = $1 GROUP BY n.id) x GROUP BY d ORDER BY d", tid_u)
        zero = next((r["nodes"] for r in out_degree if r["d"] == 0), 0)
        bench.notes.append(f"graph: out-degree 0 for {zero / n_nodes:.0%} of nodes, max "
                           f"{out_degree[-1]['d']} (random sources and targets, seed {args.seed})")

        # --- traverse, depth 3, limit 100, random start per request
        sizes: list[int] = []
        truncated: list[bool] = []
        name = f"traverse out depth {DEPTH} limit {LIMIT}, {n_edges:,} edges"
        for conc in (1, c):
            flex, raw = traverse_pair(bench, pool, tid, ids, args.seed + conc, sizes, truncated)
            await bench.pair(name, conc, flex, raw, "traverse_sql('out', False)")
        bench.notes.append(f"traverse depth {DEPTH}: {sum(sizes) / max(1, len(sizes)):.2f} nodes "
                           f"returned on average (max {max(sizes, default=0)}, "
                           f"{sum(truncated) / max(1, len(truncated)):.1%} truncated at "
                           f"{LIMIT}) over {len(sizes):,} calls")
        if hub:
            h_tid, h_ids, hubs = hub
            h_sizes: list[int] = []
            h_trunc: list[bool] = []
            name = f"traverse out depth {DEPTH} limit {LIMIT}, hub-heavy {len(h_ids):,} edges"
            for conc in (1, c):
                flex, raw = traverse_pair(bench, pool, h_tid, h_ids, args.seed + 7 * conc,
                                          h_sizes, h_trunc)
                await bench.pair(name, conc, flex, raw, "traverse_sql('out', False)")
            bench.notes.append(
                f"hub-heavy traverse: {sum(h_sizes) / max(1, len(h_sizes)):.1f} nodes returned "
                f"on average, {sum(h_trunc) / max(1, len(h_trunc)):.1%} truncated at {LIMIT}")

        # --- execute_query: filtered aggregate over the tenant's nodes view
        ex_rng, exr_rng = random.Random(args.seed), random.Random(args.seed)
        ex_errors: list[str] = []

        async def exec_flex():
            await rpc.call("execute_query", {"tenant_id": tid, "sql": EXEC_SQL,
                                             "params": [f"k{ex_rng.randrange(KINDS)}"]})

        async def exec_raw():
            async with qpool.acquire() as conn:
                await conn.fetch(EXEC_RAW_SQL, tid_u, f"k{exr_rng.randrange(KINDS)}")
        check = await rpc.call("execute_query", {"tenant_id": tid, "sql": EXEC_SQL,
                                                 "params": ["k1"]})
        raw_check = await pool.fetchrow(EXEC_RAW_SQL, tid_u, "k1")
        if check["rows"][0][0] != raw_check[0]:
            ex_errors.append(f"count mismatch: flexdb {check['rows']} vs raw {list(raw_check)}")
        for conc in (1, c):
            await bench.pair("execute_query count/avg WHERE data->>'kind' = $1", conc,
                             exec_flex, exec_raw, EXEC_RAW_SQL + f" (pool {args.query_pool})")
        bench.notes.append(f"execute_query: {check['rows'][0][0]:,} of {n_nodes:,} rows match "
                           f"each kind; flexdb side runs on the view flexdb_query.nodes")
        bench.notes.extend(ex_errors)

        # --- query_nodes: data equality filter (GIN), page_size 50, no total
        statements = group_statements(tid_u)
        q_rng, qr_rng = random.Random(args.seed), random.Random(args.seed)

        async def query_flex():
            await rpc.call("query_nodes", {
                "tenant_id": tid, "filter": {"field": "data.g", "op": "eq",
                                             "value": q_rng.randrange(GROUPS)},
                "pagination": {"page_size": 50, "include_total": False}})

        async def query_raw():
            sql, sargs = statements[qr_rng.randrange(GROUPS)]
            async with pool.acquire() as conn:
                await conn.fetch(sql, *sargs)
        for conc in (1, c):
            await bench.pair("query_nodes data.g eq (1 in 1,000), page 50, no total", conc,
                             query_flex, query_raw, "NodeRepository.query_statement(...) SQL")
        used = await plan_indexes(pool, *[statements[0][0], *statements[0][1]])
        bench.notes.append(f"query_nodes: {n_nodes // GROUPS} rows match each value; plan: "
                           f"{', '.join(used) or 'no index'}; raw SQL: {statements[0][0]}")
        used = await plan_indexes(pool, EXEC_RAW_SQL, tid_u, "k1")
        bench.notes.append(f"execute_query raw plan: {', '.join(used) or 'no index (seq scan)'}")

        if args.explain:
            start = uuid.UUID(ids[random.Random(args.seed).randrange(len(ids))])
            print("\nEXPLAIN ANALYZE traverse_sql('out', False), random start:")
            print(await explain(pool, traverse_sql("out", False), tid_u, start, DEPTH, LIMIT + 1))
            if hub:
                h_tid, h_ids, hubs = hub
                print("\nEXPLAIN ANALYZE traverse_sql('out', False), hub-heavy graph, a hub:")
                print(await explain(pool, traverse_sql("out", False), uuid.UUID(h_tid),
                                    uuid.UUID(h_ids[0]), DEPTH, LIMIT + 1))
            print("\nEXPLAIN ANALYZE query_nodes statement:")
            print(await explain(pool, statements[0][0], *statements[0][1]))
            print("\nEXPLAIN ANALYZE execute_query raw statement:")
            print(await explain(pool, EXEC_RAW_SQL, tid_u, "k1"))
            print("\nEXPLAIN ANALYZE execute_query's statement on the view flexdb_query.nodes "
                  "(with the tenant's ticket):")
            print(await explain(pool, EXEC_SQL.replace("FROM nodes", "FROM flexdb_query.nodes"),
                                "k1", ticket_for=tid_u))
    finally:
        await pool.close()
        await qpool.close()


def report(bench: Bench, started: float) -> None:
    args = bench.args
    print(f"\nflexdb query benchmark: {args.edges:,} nodes / {args.edges:,} edges, "
          f"{args.duration:g}s per scenario, server pool {args.pool}, query pool "
          f"{args.query_pool}, {os.cpu_count()} cores; latencies in ms; ratio = flexdb req/s "
          "/ raw asyncpg req/s\n")
    print("| scenario | c | req/s | p50 | p95 | p99 | errors | raw req/s | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in bench.results:
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] else "-"
        print(f"| {r['scenario']} | {r['c']} | {r['rps']:,.0f} | {r['p50']:.2f} | "
              f"{r['p95']:.2f} | {r['p99']:.2f} | {r['errors']} | {r['raw_rps']:,.0f} | "
              f"{ratio} |")
    print()
    for note in bench.notes:
        print(f"- {note}")
    print("- raw side: traverse ran traverse_sql('out', False) (flexdb also fetches the start "
          "node first); query_nodes ran NodeRepository.query_statement's SQL; execute_query ran "
          f"`{EXEC_RAW_SQL}` on the base table (cached prepared statement, no transaction/role "
          "setup); raw pools use the server's init codec and release reset")
    for r in bench.results:
        for label, count, first in (("flexdb", r["errors"], r["first_errors"]),
                                    ("raw asyncpg", r["raw_errors"], r["raw_first_errors"])):
            if count:
                print(f"- {count} {label} errors in {r['scenario']} c={r['c']}, first: {first}")
    print(f"- total run time {time.perf_counter() - started:.0f}s")
    if args.json:
        with open(args.json, "a") as fh:
            for r in bench.results:
                fh.write(json.dumps({**r, "edges": args.edges, "cores": os.cpu_count()}) + "\n")


async def run(url: str, key: str, db_url: str, args, started: float) -> None:
    async with FlexDBClient(url, api_key=key, max_connections=max(args.concurrency, 1)) as rpc:
        bench = Bench(rpc, db_url, args)
        await measure(bench)
        report(bench, started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per scenario")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--edges", type=int, default=100_000,
                        help="relationships (and nodes) in the graph")
    parser.add_argument("--database-url", default=os.environ.get(
        "FLEXDB_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="server URL to create the benchmark database on")
    parser.add_argument("--json", help="append one JSON line per scenario to this file")
    parser.add_argument("--pool", type=int, default=10, help="server (and raw) pool size")
    parser.add_argument("--query-pool", type=int, default=4,
                        help="execute_query pool size (server and raw)")
    parser.add_argument("--hub-nodes", type=int, default=20_000,
                        help="nodes (= edges) of the hub-heavy graph; 0 skips it")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--explain", action="store_true",
                        help="print EXPLAIN ANALYZE of the raw statements at the end")
    args = parser.parse_args()
    started = time.perf_counter()
    with fresh_database(args.database_url) as db_url, \
            running_server({"FLEXDB_DATABASE_URL": db_url,
                            "FLEXDB_DB_POOL_MAX": str(args.pool),
                            "FLEXDB_QUERY_POOL_MAX": str(args.query_pool),
                            # One tenant here stands for the load of many: lift the
                            # per-tenant limit to the concurrency measured.
                            "FLEXDB_QUERY_TENANT_CONCURRENCY": str(args.concurrency),
                            "FLEXDB_LOG_LEVEL": "WARNING"}) as srv:
        asyncio.run(run(srv.url, srv.admin_key, db_url, args, started))


if __name__ == "__main__":
    main()
