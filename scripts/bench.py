#!/usr/bin/env python3
"""flexdb benchmark harness: every hot operation, each next to raw asyncpg doing the same
SQL in the same run, in one table.

    .venv/bin/python scripts/bench.py [--concurrency 32] [--seconds 5] [--nodes 100000]
        [--relationships 100000] [--search-nodes 200000] [--workers N] [--soak-seconds 300]
        [--migration-nodes 20000] [--json FILE]
        [--only get_node,create_node,migrate_nodes,...] [--vectors 100000] [--embedded]
        [--set FLEXDB_NAME=VALUE ...]

It creates a fresh database (on FLEXDB_BENCH_DATABASE_URL, default the local server at
127.0.0.1:5432, or an embedded PostgreSQL when that is unreachable or with --embedded: the
k-NN rows, `--only knn`, need its pgvector; scripts/bench_vectors.py), starts `flexdb serve`,
the sandbox worker and the REST facade on it, preloads one tenant with --nodes nodes and
--relationships relationships through the public API (create_nodes / create_relationships
in batches of 1,000), then runs each scenario for --seconds at --concurrency, first through
flexdb and then through raw asyncpg (a pool of the server's size, the same SQL). Node reads
and writes go through the platform admin's API key, so authentication and the audit trail
are on. The load generator is one process on uvloop (the server's loop, so raw asyncpg
runs at its best too) sending pre-encoded JSON-RPC bodies over keep-alive connections with
a minimal HTTP client (scripts/lean_http.py); it shares the cores with everything else, as
raw asyncpg does.

The server's resident memory (all its processes) is sampled every second from the first
scenario on; a mixed soak at the end makes the sampled span at least --soak-seconds long.
Rows are printed as a Markdown table and written as JSON lines (--json, default
.flexdb/bench-<time>.jsonl). The database is dropped at the end, also on error."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import threading
import time
import uuid
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import orjson
import psutil
import uvloop

ROOT = Path(__file__).resolve().parent.parent
# Run as a file, the repository root is not on sys.path: the imports after this line need
# it first (hence their noqa: E402).
sys.path.insert(0, str(ROOT))

from rpc_server.storage.db import _init_connection  # noqa: E402
from rpc_server.storage.repositories.graph import traverse_sql  # noqa: E402
from rpc_server.storage.repositories.nodes import NodeRepository  # noqa: E402
from scripts.bench_core import token_at_depth  # noqa: E402
from scripts.bench_query import GROUPS, group_statements  # noqa: E402
from scripts.bench_schema import schema_check_rows  # noqa: E402
from scripts.bench_search import search_rows  # noqa: E402
from scripts.bench_vectors import knn_rows  # noqa: E402
from scripts.lean_http import LeanHttp  # noqa: E402
from tests.conftest import (  # noqa: E402
    TEST_SANDBOX_SECRET,
    free_port,
    fresh_database,
    running_facade,
    running_sandbox,
    running_server,
)

NODE_COLUMNS = NodeRepository.columns
REL_COLUMNS = ("id, tenant_id, source_node_id, target_node_id, relationship_type, data, "
               "created_at, updated_at, version")
KINDS = 10  # data.kind k0..k9 (execute_query); data.g is 0..GROUPS-1 (query_nodes)
BATCH = 1000
EXEC_SQL = "SELECT count(*) FROM nodes WHERE data->>'kind' = $1"
POOL = 10  # the server's pool (FLEXDB_DB_POOL_MAX) and raw asyncpg's


# ---------------------------------------------------------------- load generation

def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else 0.0


async def load(make_call, concurrency: int, seconds: float) -> dict:
    """make_call(worker_index) from `concurrency` workers for `seconds`; latencies in ms.
    A call returns normally when it succeeded and raises when it failed."""
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.perf_counter() + seconds

    async def worker(index: int):
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                await make_call(index)
            except Exception as exc:  # noqa: BLE001 - counted and shown, not fatal
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
            latencies.append((time.perf_counter() - start) * 1000)

    began = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - began
    return {"rps": len(latencies) / elapsed, "p50": percentile(latencies, 0.5),
            "p95": percentile(latencies, 0.95), "p99": percentile(latencies, 0.99),
            "errors": len(errors), "calls": len(latencies), "first_error": errors[:1]}


class CallFailed(Exception):
    pass


class Rpc:
    """A lean JSON-RPC client for load: keep-alive connections, bodies encoded by the caller."""

    def __init__(self, url: str, key: str, connections: int):
        self.http = LeanHttp(url, connections)
        self.path = urlsplit(url).path or "/"
        self.headers = (f"Authorization: Bearer {key}\r\n"
                        "Content-Type: application/json\r\n").encode()

    async def post(self, body: bytes):
        status, raw = await self.http.send(self.http.build("POST", self.path, self.headers, body))
        if status != 200:
            raise CallFailed(f"HTTP {status}: {raw[:200]!r}")
        reply = orjson.loads(raw)
        if isinstance(reply, list):
            bad = [r for r in reply if "error" in r]
            if bad:
                raise CallFailed(str(bad[0]["error"])[:200])
            return reply
        if "error" in reply:
            raise CallFailed(str(reply["error"])[:200])
        return reply["result"]

    async def call(self, method: str, params: dict):
        return await self.post(encode(method, params))

    async def close(self):
        await self.http.close()


def encode(method: str, params: dict, id: int = 1) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": id, "method": method, "params": params})


# ---------------------------------------------------------------- services

@contextmanager
def database(embedded: bool = False):
    url = os.environ.get("FLEXDB_BENCH_DATABASE_URL",
                         "postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        if embedded:
            raise OSError("--embedded")
        asyncio.run(_ping(url))
    except (OSError, asyncpg.PostgresError):
        from tests.services import own_postgres
        with own_postgres() as (embedded_url, _stop, _start), fresh_database(embedded_url) as db:
            yield db
        return
    with fresh_database(url) as db:
        yield db


async def _ping(url: str) -> None:
    conn = await asyncpg.connect(url, timeout=3)
    await conn.close()


@contextmanager
def services(db_url: str, workers: int, settings: dict[str, str]):
    """flexdb serve (with `workers` processes), the sandbox worker and the facade."""
    server_port, sandbox_port = free_port(), free_port()
    with ExitStack() as stack:
        sandbox = stack.enter_context(running_sandbox(
            f"http://127.0.0.1:{server_port}/jsonrpc", sandbox_port,
            FLEXDB_LOG_LEVEL="WARNING"))
        server = stack.enter_context(running_server({
            "FLEXDB_DATABASE_URL": db_url, "FLEXDB_DB_POOL_MAX": str(POOL),
            "FLEXDB_WORKERS": str(workers), "FLEXDB_LOG_LEVEL": "WARNING",
            "FLEXDB_SANDBOX_URL": sandbox.base, "FLEXDB_SANDBOX_SECRET": TEST_SANDBOX_SECRET,
            # one tenant stands for many here: lift the per-tenant limits on heavy calls
            # and on the pool (scripts/noisy_neighbour.py measures them)
            "FLEXDB_QUERY_TENANT_CONCURRENCY": "64", "FLEXDB_TENANT_POOL_MAX": str(POOL),
            "FLEXDB_PIPELINE_TENANT_RUNNING": "64", "FLEXDB_VECTOR_INDEX_INTERVAL_S": "2",
            **settings},
            port=server_port))
        facade = stack.enter_context(running_facade(server.url, FLEXDB_LOG_LEVEL="WARNING"))
        yield server, facade


class MemoryWatch:
    """Resident memory of the server (the process and its children), sampled each second."""

    def __init__(self, pid: int):
        self.root = psutil.Process(pid)
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        processes = [self.root] + self.root.children(recursive=True)
        total = 0
        for p in processes:
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def _run(self):
        while not self._stop.wait(1.0):
            self.samples.append((time.monotonic(), self.rss()))

    def start(self):
        self.samples.append((time.monotonic(), self.rss()))
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join()

    def span(self) -> float:
        return self.samples[-1][0] - self.samples[0][0] if self.samples else 0.0


# ---------------------------------------------------------------- the run

class Bench:
    def __init__(self, args, rpc: Rpc, facade_url: str, key: str, pool: asyncpg.Pool,
                 qpool: asyncpg.Pool):
        self.args, self.rpc, self.pool, self.qpool = args, rpc, pool, qpool
        self.facade_url, self.key = facade_url, key
        self.rows: list[dict] = []
        self.notes: list[str] = []

    def wanted(self, name: str) -> bool:
        return not self.args.only or name in self.args.only

    async def scenario(self, name: str, label: str, flex, raw, *, concurrency=None,
                       per_call: int = 1, unit: str = "req/s", target: str = "") -> dict:
        c = concurrency or self.args.concurrency
        secs = self.args.seconds
        print(f"  {label} (c={c}) ...", flush=True)
        f = await load(flex, c, secs)
        r = await load(raw, c, secs) if raw is not None else None
        row = {"scenario": name, "label": label, "concurrency": c, "unit": unit,
               "rate": f["rps"] * per_call, "p50_ms": f["p50"], "p95_ms": f["p95"],
               "p99_ms": f["p99"], "errors": f["errors"], "calls": f["calls"],
               "raw_rate": r["rps"] * per_call if r else None,
               "raw_p50_ms": r["p50"] if r else None,
               "ratio": f["rps"] / r["rps"] if r and r["rps"] else None,
               "target": target, "first_error": f["first_error"] + (r["first_error"] if r else [])}
        self.rows.append(row)
        return row


async def preload(rpc: Rpc, tid: str, type_id: str, nodes: int, rels: int,
                  rng: random.Random) -> tuple[list[str], dict]:
    """Nodes and relationships through create_nodes / create_relationships, 4 batches in
    flight; returns the node ids and the rates."""
    ids: list[str] = []
    started = time.perf_counter()

    async def node_batch(start: int):
        batch = [{"node_type_id": type_id,
                  "data": {"n": i, "kind": f"k{i % KINDS}", "g": i % GROUPS,
                           "label": f"item {i}"}}
                 for i in range(start, min(start + BATCH, nodes))]
        return [n["id"] for n in (await rpc.call("create_nodes", {
            "tenant_id": tid, "nodes": batch}))["nodes"]]

    for chunk in range(0, nodes, 4 * BATCH):
        results = await asyncio.gather(*(node_batch(s) for s in
                                         range(chunk, min(chunk + 4 * BATCH, nodes), BATCH)))
        for r in results:
            ids.extend(r)
    node_s = time.perf_counter() - started

    started = time.perf_counter()

    async def rel_batch(count: int):
        batch = [{"source_node_id": rng.choice(ids), "target_node_id": rng.choice(ids),
                  "relationship_type": "links", "data": {}} for _ in range(count)]
        await rpc.call("create_relationships", {"tenant_id": tid, "relationships": batch})

    for chunk in range(0, rels, 4 * BATCH):
        sizes = [min(BATCH, rels - s) for s in range(chunk, min(chunk + 4 * BATCH, rels), BATCH)]
        await asyncio.gather(*(rel_batch(n) for n in sizes))
    rel_s = time.perf_counter() - started
    return ids, {"nodes_per_s": nodes / node_s, "rels_per_s": rels / max(rel_s, 1e-9),
                 "node_s": node_s, "rel_s": rel_s}


async def run(args, server, facade) -> list[dict]:
    rpc = Rpc(server.url, server.admin_key, args.concurrency)
    pool = await asyncpg.create_pool(args.db_url, min_size=POOL, max_size=POOL,
                                     init=_init_connection)
    qpool = await asyncpg.create_pool(args.db_url, min_size=4, max_size=4,
                                      init=_init_connection)
    bench = Bench(args, rpc, facade.base, server.admin_key, pool, qpool)
    watch = MemoryWatch(server.proc.pid)
    try:
        await measure(bench, watch)
    finally:
        if watch.samples:
            watch.stop()
        await rpc.close()
        await pool.close()
        await qpool.close()
    return bench.rows, bench.notes, watch


async def measure(bench: Bench, watch: MemoryWatch) -> None:
    args, rpc, pool = bench.args, bench.rpc, bench.pool
    tenant = (await rpc.call("create_tenant", {"slug": f"bench-{uuid.uuid4().hex[:8]}",
                                               "name": "Bench"}))["tenant"]
    tid = tenant["id"]
    tid_u = uuid.UUID(tid)
    schema = {"type": "object", "properties": {"n": {"type": "integer"},
                                               "kind": {"type": "string"},
                                               "g": {"type": "integer"},
                                               "label": {"type": "string"}}}
    node_type = (await rpc.call("create_node_type", {"tenant_id": tid, "name": "Item",
                                                     "schema": schema}))["node_type"]
    type_id, type_u = node_type["id"], uuid.UUID(node_type["id"])
    print(f"preloading {args.nodes:,} nodes and {args.relationships:,} relationships "
          "(batches of 1,000, 4 in flight) ...", flush=True)
    ids, rates = await preload(rpc, tid, type_id, args.nodes, args.relationships,
                               random.Random(42))
    bench.notes.append(f"preload: {args.nodes:,} nodes at {rates['nodes_per_s']:,.0f} nodes/s "
                       f"({rates['node_s']:.1f} s), {args.relationships:,} relationships at "
                       f"{rates['rels_per_s']:,.0f} rels/s ({rates['rel_s']:.1f} s)")
    await pool.execute("VACUUM ANALYZE nodes")
    await pool.execute("VACUUM ANALYZE relationships")
    id_us = [uuid.UUID(i) for i in ids]
    c = args.concurrency
    rng = random.Random(7)
    watch.start()

    # --- the dry run of a schema change over the preloaded type (before any scenario adds
    # nodes to it: exactly --nodes nodes)
    if bench.wanted("schema_check"):
        await schema_check_rows(bench, watch, tid, type_id)

    # --- k-NN over --vectors embeddings of 384 dimensions (a tenant of their own)
    if bench.wanted("knn") and args.vectors:
        await knn_rows(bench, args.vectors)

    # --- get_node
    get_bodies = [encode("get_node", {"tenant_id": tid, "id": i}) for i in ids[:20_000]]
    single_reads = None
    if bench.wanted("get_node"):
        row = await bench.scenario(
            "get_node", "get_node", lambda _: rpc.post(rng.choice(get_bodies)),
            lambda _: pool.fetchrow(f"SELECT {NODE_COLUMNS} FROM nodes WHERE tenant_id = $1 "
                                    "AND id = $2", tid_u, rng.choice(id_us)),
            target="≥ 0.5x raw; p99 ≤ 20 ms")
        single_reads = row["rate"]

    # --- batch of 100 get_node in one request
    if bench.wanted("get_node_batch"):
        def batch_body():
            picked = rng.sample(ids, 100)
            return orjson.dumps([{"jsonrpc": "2.0", "id": k, "method": "get_node",
                                  "params": {"tenant_id": tid, "id": i}}
                                 for k, i in enumerate(picked)])
        batch_bodies = [batch_body() for _ in range(200)]
        row = await bench.scenario(
            "get_node_batch", "batch of 100 get_node (node reads/s)",
            lambda _: rpc.post(rng.choice(batch_bodies)),
            lambda _: pool.fetch(f"SELECT {NODE_COLUMNS} FROM nodes WHERE tenant_id = $1 "
                                 "AND id = ANY($2::uuid[])", tid_u, rng.sample(id_us, 100)),
            per_call=100, unit="reads/s", target="≥ 5x get_node's reads/s")
        if single_reads:
            row["vs_single"] = row["rate"] / single_reads

    # --- create_node
    if bench.wanted("create_node"):
        counter = iter(range(10**9))
        await bench.scenario(
            "create_node", "create_node",
            lambda _: rpc.call("create_node", {"tenant_id": tid, "node_type_id": type_id,
                                               "data": {"n": next(counter), "kind": "new",
                                                        "g": -1, "label": "single"}}),
            lambda _: pool.fetchrow(
                "INSERT INTO nodes (tenant_id, node_type_id, data) VALUES ($1, $2, $3) "
                f"RETURNING {NODE_COLUMNS}", tid_u, type_u,
                {"n": next(counter), "kind": "new", "g": -1, "label": "raw"}),
            target="≥ 0.5x raw")

    # --- update_node with expected_version: each worker updates nodes of its own
    if bench.wanted("update_node"):
        owned_flex = {i: [ids[i * 2], None] for i in range(c)}
        owned_raw = {i: [id_us[i * 2 + 1], None] for i in range(c)}
        for entry in owned_flex.values():
            entry[1] = (await rpc.call("get_node", {"tenant_id": tid, "id": entry[0]}))[
                "node"]["version"]
        for entry in owned_raw.values():
            entry[1] = await pool.fetchval("SELECT version FROM nodes WHERE tenant_id = $1 "
                                           "AND id = $2", tid_u, entry[0])

        async def update_flex(worker: int):
            entry = owned_flex[worker]
            node = (await rpc.call("update_node", {
                "tenant_id": tid, "id": entry[0], "expected_version": entry[1],
                "data": {"n": entry[1], "kind": "upd", "g": 1, "label": "updated"}}))["node"]
            entry[1] = node["version"]

        async def update_raw(worker: int):
            entry = owned_raw[worker]
            row = await pool.fetchrow(
                "UPDATE nodes SET data = $3, updated_at = now(), version = version + 1 "
                f"WHERE tenant_id = $1 AND id = $2 AND version = $4 RETURNING {NODE_COLUMNS}",
                tid_u, entry[0], {"n": entry[1], "kind": "upd", "g": 1, "label": "u"}, entry[1])
            if row is None:
                raise CallFailed("version conflict")
            entry[1] = row["version"]
        await bench.scenario("update_node", "update_node (expected_version)", update_flex,
                             update_raw, target="-")

    # --- list_nodes, first page and ~50,000 rows deep, with the total
    if bench.wanted("list_nodes"):
        depth = min(50_000, args.nodes // 2)
        token = await token_at_depth(rpc, tid, depth)
        deep = await pool.fetchrow("SELECT created_at, id FROM nodes WHERE tenant_id = $1 "
                                   "ORDER BY created_at, id OFFSET $2 LIMIT 1", tid_u, depth - 1)
        count_sql = ("(SELECT coalesce(sum(n), 0) FROM node_counts WHERE tenant_id = $1) "
                     "AS total_count")
        first_raw = (f"SELECT {NODE_COLUMNS}, {count_sql} FROM nodes WHERE tenant_id = $1 "
                     "ORDER BY created_at, id LIMIT 51")
        deep_raw = (f"SELECT {NODE_COLUMNS}, {count_sql} FROM nodes WHERE tenant_id = $1 "
                    "AND (created_at, id) > ($2, $3) ORDER BY created_at, id LIMIT 51")
        first = await bench.scenario(
            "list_nodes_first", "list_nodes 50, first page, with total_count",
            lambda _: rpc.call("list_nodes", {"tenant_id": tid,
                                              "pagination": {"page_size": 50}}),
            lambda _: pool.fetch(first_raw, tid_u), target="≥ 1,000 req/s")
        deep_row = await bench.scenario(
            "list_nodes_deep", f"list_nodes 50, {depth:,} rows deep, with total_count",
            lambda _: rpc.call("list_nodes", {"tenant_id": tid, "pagination": {
                "page_size": 50, "page_token": token}}),
            lambda _: pool.fetch(deep_raw, tid_u, deep["created_at"], deep["id"]),
            target="p50 ≤ 1.3x the first page's")
        deep_row["vs_first_p50"] = deep_row["p50_ms"] / first["p50_ms"]
        check = await rpc.call("list_nodes", {"tenant_id": tid, "pagination": {"page_size": 1}})
        actual = await pool.fetchval("SELECT count(*) FROM nodes WHERE tenant_id = $1", tid_u)
        bench.notes.append(f"list_nodes total_count {check['pagination']['total_count']:,} vs "
                           f"count(*) {actual:,} at the end of the scenario")

    # --- list_relationships by source
    if bench.wanted("list_relationships"):
        sources = await pool.fetch("SELECT DISTINCT source_node_id FROM relationships "
                                   "WHERE tenant_id = $1 LIMIT 5000", tid_u)
        source_ids = [r[0] for r in sources]
        bodies = [encode("list_relationships", {"tenant_id": tid, "source_node_id": str(s),
                                                "pagination": {"page_size": 50}})
                  for s in source_ids]
        await bench.scenario(
            "list_relationships", "list_relationships by source, page 50, with total_count",
            lambda _: rpc.post(rng.choice(bodies)),
            lambda _: pool.fetch(
                f"SELECT {REL_COLUMNS}, (SELECT count(*) FROM relationships WHERE tenant_id = $1 "
                "AND source_node_id = $2) AS total_count FROM relationships WHERE tenant_id = $1 "
                "AND source_node_id = $2 ORDER BY created_at, id LIMIT 51",
                tid_u, rng.choice(source_ids)), target="-")

    # --- create_relationship
    if bench.wanted("create_relationship"):
        await bench.scenario(
            "create_relationship", "create_relationship",
            lambda _: rpc.call("create_relationship", {
                "tenant_id": tid, "source_node_id": rng.choice(ids),
                "target_node_id": rng.choice(ids), "relationship_type": "bench"}),
            lambda _: pool.fetchrow(
                "INSERT INTO relationships (tenant_id, source_node_id, target_node_id, "
                f"relationship_type, data) VALUES ($1, $2, $3, $4, $5) RETURNING {REL_COLUMNS}",
                tid_u, rng.choice(id_us), rng.choice(id_us), "bench", {}),
            target="≥ 0.5x raw")

    # --- create_nodes in batches of 1,000
    if bench.wanted("create_nodes"):
        batch = [{"node_type_id": type_id, "data": {"n": i, "kind": "bulk", "g": -2,
                                                    "label": f"bulk {i}"}} for i in range(BATCH)]
        bulk_body = encode("create_nodes", {"tenant_id": tid, "nodes": batch})
        datas = [n["data"] for n in batch]
        from rpc_server.storage.ids import uuid7_sequence
        await bench.scenario(
            "create_nodes", "create_nodes, batches of 1,000 (nodes/s)",
            lambda _: rpc.post(bulk_body),
            lambda _: pool.fetch(
                "INSERT INTO nodes (tenant_id, id, node_type_id, data) "
                "SELECT $1, i.id, i.node_type_id, i.data FROM unnest($2::uuid[], $3::uuid[], "
                f"$4::jsonb[]) AS i (id, node_type_id, data) RETURNING {NODE_COLUMNS}",
                tid_u, uuid7_sequence(BATCH), [type_u] * BATCH, datas),
            concurrency=min(c, 4), per_call=BATCH, unit="nodes/s", target="≥ 20,000 nodes/s")

    # --- execute_query: a filtered aggregate
    if bench.wanted("execute_query"):
        await bench.scenario(
            "execute_query", "execute_query count(*) WHERE data->>'kind' = $1",
            lambda _: rpc.call("execute_query", {"tenant_id": tid, "sql": EXEC_SQL,
                                                 "params": [f"k{rng.randrange(KINDS)}"]}),
            lambda _: bench.qpool.fetchval(EXEC_SQL.replace("WHERE", "WHERE tenant_id = $2 AND"),
                                           f"k{rng.randrange(KINDS)}", tid_u),
            target="-")

    # --- query_nodes: a data filter through the GIN index
    if bench.wanted("query_nodes"):
        statements = group_statements(tid_u)
        query_bodies = [encode("query_nodes", {
            "tenant_id": tid, "filter": {"field": "data.g", "op": "eq", "value": g},
            "pagination": {"page_size": 50, "include_total": False}}) for g in range(GROUPS)]
        await bench.scenario(
            "query_nodes", "query_nodes data.g = value (1 in 1,000), page 50",
            lambda _: rpc.post(rng.choice(query_bodies)),
            lambda _: pool.fetch(*_pick(rng, statements)), target="-")

    # --- traverse depth 3
    if bench.wanted("traverse"):
        walk_sql = traverse_sql("out", False)
        await bench.scenario(
            "traverse", "traverse out, depth 3, limit 100",
            lambda _: rpc.call("traverse", {"tenant_id": tid, "start_node_id": rng.choice(ids),
                                            "max_depth": 3, "limit": 100}),
            lambda _: pool.fetch(walk_sql, tid_u, rng.choice(id_us), 3, 101), target="-")

    # --- run_pipeline (trivial, wait for it)
    if bench.wanted("run_pipeline"):
        pipeline = (await rpc.call("create_pipeline", {
            "tenant_id": tid, "name": "trivial",
            "code": "def run(input, db):\n    return {'ok': True}\n"}))["pipeline"]
        run_body = encode("run_pipeline", {"tenant_id": tid, "pipeline_id": pipeline["id"],
                                           "wait": True, "debug_level": "none"})
        await bench.scenario("run_pipeline", "run_pipeline, trivial, wait",
                             lambda _: rpc.post(run_body), None, concurrency=min(c, 4),
                             unit="runs/s", target="-")

    # --- migrate_nodes: a job applying a pipeline to every node of a type, in batches
    if bench.wanted("migrate_nodes"):
        await migration_scenario(bench, tid)

    # --- full-text search over short texts (a node type of their own)
    if bench.wanted("search"):
        await search_rows(bench, tid, args.search_nodes)

    # --- REST facade: GET a node
    if bench.wanted("facade_get_node"):
        facade = LeanHttp(bench.facade_url, args.concurrency)
        auth = f"Authorization: Bearer {bench.key}\r\n".encode()
        requests = [facade.build("GET", f"/tenants/{tid}/nodes/{i}", auth) for i in ids[:20_000]]

        async def facade_get(_):
            status, body = await facade.send(rng.choice(requests))
            if status != 200:
                raise CallFailed(f"HTTP {status}: {body[:200]!r}")
        await bench.scenario(
            "facade_get_node", "REST facade GET /tenants/{t}/nodes/{id}", facade_get,
            lambda _: pool.fetchrow(f"SELECT {NODE_COLUMNS} FROM nodes WHERE tenant_id = $1 "
                                    "AND id = $2", tid_u, rng.choice(id_us)), target="-")
        await facade.close()

    # --- soak: mixed reads and writes until memory has been watched for --soak-seconds
    remaining = args.soak_seconds - watch.span()
    if remaining > 1:
        print(f"  soak: mixed get_node / create_node / list_nodes for {remaining:.0f} s ...",
              flush=True)
        counter = iter(range(10**9))

        async def mixed(_):
            pick = rng.random()
            if pick < 0.7:
                await rpc.post(rng.choice(get_bodies))
            elif pick < 0.9:
                await rpc.call("create_node", {"tenant_id": tid, "node_type_id": type_id,
                                               "data": {"n": next(counter), "kind": "soak",
                                                        "g": -3, "label": "soak"}})
            else:
                await rpc.call("list_nodes", {"tenant_id": tid, "pagination": {"page_size": 50}})
        soak = await load(mixed, c, remaining)
        bench.notes.append(f"soak: {soak['rps']:,.0f} req/s mixed (70% get_node, 20% "
                           f"create_node, 10% list_nodes), {soak['errors']} errors, "
                           f"p99 {soak['p99']:.1f} ms")


MIGRATION_CODE = ("def run(input, db):\n"
                  "    return dict(input, label=input['name'].upper(), migrated=True)\n")


async def migration_scenario(bench: Bench, tid: str) -> None:
    """migrate_nodes over --migration-nodes nodes of a type of their own (nodes/s from the
    call to the job's end), next to raw asyncpg doing the same work: the same keyset reads
    and, per batch of the same size, one transaction with one UPDATE of the new data."""
    args, rpc, pool = bench.args, bench.rpc, bench.pool
    count = args.migration_nodes
    schema = {"type": "object", "properties": {"name": {"type": "string"},
                                               "label": {"type": "string"},
                                               "migrated": {"type": "boolean"}},
              "required": ["name"]}
    made = []
    for name in ("Migrated", "MigratedRaw"):
        node_type = (await rpc.call("create_node_type", {"tenant_id": tid, "name": name,
                                                         "schema": schema}))["node_type"]
        for start in range(0, count, BATCH):
            await rpc.call("create_nodes", {"tenant_id": tid, "nodes": [
                {"node_type_id": node_type["id"], "data": {"name": f"node {i}"}}
                for i in range(start, min(start + BATCH, count))]})
        made.append(node_type)
    await pool.execute("VACUUM ANALYZE nodes")
    pipeline = (await rpc.call("create_pipeline", {"tenant_id": tid, "name": "migrate",
                                                   "code": MIGRATION_CODE}))["pipeline"]
    print(f"  migrate_nodes over {count:,} nodes (batches of the server's "
          "FLEXDB_MIGRATION_BATCH_NODES) ...", flush=True)
    started = time.perf_counter()
    job = (await rpc.call("migrate_nodes", {"tenant_id": tid, "node_type_id": made[0]["id"],
                                            "pipeline_id": pipeline["id"],
                                            "to_version": made[0]["schema_version"]}))["job"]
    while job["status"] in ("queued", "running"):
        await asyncio.sleep(0.05)
        job = (await rpc.call("get_job", {"tenant_id": tid, "id": job["id"]}))["job"]
    seconds = time.perf_counter() - started
    batch_size = max(1, -(-job["processed"] // max(1, job["batches"])))

    tid_u, raw_type = uuid.UUID(tid), uuid.UUID(made[1]["id"])
    started_raw = time.perf_counter()
    after = None
    while True:
        keyset = "" if after is None else "AND (created_at, id) > ($3, $4) "
        rows = await pool.fetch(
            "SELECT id, created_at, version, data FROM nodes WHERE tenant_id = $1 "
            f"AND node_type_id = $2 {keyset}ORDER BY created_at, id LIMIT {batch_size}",
            tid_u, raw_type, *(after or ()))
        if not rows:
            break
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE nodes n SET data = i.data, version = n.version + 1, "
                "updated_at = now() FROM unnest($3::uuid[], $4::int[], $5::jsonb[]) "
                "AS i (id, version, data) WHERE n.tenant_id = $1 AND n.node_type_id = $2 "
                "AND n.id = i.id AND n.version = i.version", tid_u, raw_type,
                [r["id"] for r in rows], [r["version"] for r in rows],
                [dict(r["data"], label=r["data"]["name"].upper(), migrated=True)
                 for r in rows])
        after = (rows[-1]["created_at"], rows[-1]["id"])
    raw_seconds = time.perf_counter() - started_raw

    rate, raw_rate = job["processed"] / seconds, count / raw_seconds
    per_batch_ms = seconds * 1000 / max(1, job["batches"])
    bench.rows.append({
        "scenario": "migrate_nodes", "label": f"migrate_nodes job over {count:,} nodes "
        f"(batches of {batch_size}; latencies: per batch)", "concurrency": 1,
        "unit": "nodes/s", "rate": rate, "p50_ms": per_batch_ms, "p95_ms": per_batch_ms,
        "p99_ms": per_batch_ms, "errors": job["failed"] + (job["status"] != "succeeded"),
        "calls": job["batches"], "raw_rate": raw_rate, "raw_p50_ms": None,
        "ratio": rate / raw_rate, "target": "-",
        "first_error": [] if job["status"] == "succeeded" else [str(job["error"])]})
    bench.notes.append(
        f"migrate_nodes: {job['processed']:,} nodes ({job['changed']:,} changed, "
        f"{job['failed']} failed) in {seconds:.1f} s = {rate:,.0f} nodes/s, "
        f"{job['batches']} batches of {batch_size} ({per_batch_ms:.0f} ms each: queue, "
        f"sandbox run, validation, one transaction); raw asyncpg, the same keyset reads and "
        f"UPDATEs without pipeline or validation: {raw_rate:,.0f} nodes/s")


def _pick(rng: random.Random, statements: list) -> list:
    sql, sargs = statements[rng.randrange(len(statements))]
    return [sql, *sargs]


def memory_row(watch: MemoryWatch) -> dict:
    values = [v for _, v in watch.samples]
    # Warm-up: the first minute (caches, prepared statements, pools filling); flat after it.
    settled = [v for t, v in watch.samples if t - watch.samples[0][0] >= 60] or values
    base = statistics.median(settled[: max(1, len(settled) // 10)])
    last = statistics.median(settled[-max(1, len(settled) // 10):])
    return {"scenario": "memory", "span_s": watch.span(), "rss_first_mb": values[0] / 2**20,
            "rss_after_warmup_mb": base / 2**20, "rss_end_mb": last / 2**20,
            "rss_max_mb": max(values) / 2**20, "change": (last - base) / base}


def report(rows: list[dict], notes: list[str], memory: dict | None, args) -> None:
    print(f"\nflexdb benchmark {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC: "
          f"{args.nodes:,} nodes / {args.relationships:,} relationships in one tenant, "
          f"concurrency {args.concurrency}, {args.seconds:g} s per side, server workers "
          f"{args.workers}, pool {POOL}, {os.cpu_count()} cores; latencies in ms; "
          "ratio = flexdb ÷ raw asyncpg, same SQL, same run\n")
    print("| scenario | c | flexdb | p50 | p95 | p99 | errors | raw asyncpg | ratio | target |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        raw = f"{r['raw_rate']:,.0f}" if r["raw_rate"] else "-"
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] else "-"
        print(f"| {r['label']} | {r['concurrency']} | {r['rate']:,.0f} {r['unit']} | "
              f"{r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} | "
              f"{raw} | {ratio} | {r['target']} |")
    print()
    for r in rows:
        if "vs_single" in r:
            print(f"- batch of 100: {r['vs_single']:.1f}x the node reads/s of single get_node "
                  "calls")
        if "vs_first_p50" in r:
            print(f"- deep page p50 = {r['vs_first_p50']:.2f}x the first page's")
        if r["first_error"]:
            print(f"- {r['scenario']} first error: {r['first_error'][0]}")
    if memory:
        print(f"- server RSS over {memory['span_s']:.0f} s: {memory['rss_first_mb']:.0f} MB at "
              f"the start, {memory['rss_after_warmup_mb']:.0f} MB after the first minute, "
              f"{memory['rss_end_mb']:.0f} MB at the end ({memory['change']:+.1%}), max "
              f"{memory['rss_max_mb']:.0f} MB")
    for note in notes:
        print(f"- {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--relationships", type=int, default=100_000)
    parser.add_argument("--search-nodes", type=int, default=200_000)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--soak-seconds", type=float, default=300)
    parser.add_argument("--migration-nodes", type=int, default=20_000,
                        help="nodes the migrate_nodes job goes through")
    parser.add_argument("--json", default="")
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--embedded", action="store_true",
                        help="use an embedded PostgreSQL (it has pgvector) whatever "
                             "FLEXDB_BENCH_DATABASE_URL says")
    parser.add_argument("--only", type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
                        default=[])
    parser.add_argument("--set", action="append", default=[], metavar="FLEXDB_NAME=VALUE",
                        help="a server setting (repeatable), e.g. FLEXDB_CHANGE_FEED=false")
    args = parser.parse_args()
    out = Path(args.json or ROOT / ".flexdb" / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with database(args.embedded) as db_url, services(
            db_url, args.workers, dict(s.split("=", 1) for s in args.set)) as (server, facade):
        args.db_url = db_url
        uvloop.install()  # the server's loop, so raw asyncpg runs at its best too
        rows, notes, watch = asyncio.run(run(args, server, facade))
    memory = memory_row(watch) if len(watch.samples) > 1 else None
    report(rows, notes, memory, args)
    with out.open("w") as f:
        for r in rows + ([memory] if memory else []):
            f.write(json.dumps(r, default=str) + "\n")
    print(f"\nrows written to {out}; whole run {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
