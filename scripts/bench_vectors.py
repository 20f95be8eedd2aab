"""scripts/bench.py's vector similarity rows (`--only knn`): k-NN (query_nodes `near`, k=10,
cosine) over --vectors nodes of 384 dimensions in one tenant's node type, at c=1, next to raw
asyncpg running the same statement (EmbeddingRepository.nearest), with recall@10 against an
exact search (the same ordering in SQL with index scans off: a scan of every embedding).
Also a filtered k-NN (a filter matching a tenth of the nodes). Needs pgvector: run it on the
embedded PostgreSQL (`--embedded`).

The vectors are loaded through create_nodes (the real write path: validation, the
embeddings trigger) in batches that fit the request body limit, 4 in flight; the HNSW index
is then built by the server in the background (storage/vectors.py), and the row waits for
it. The data: unit-length vectors around 1,000 random centres (clustered, as text
embeddings are; uniformly random vectors in 384 dimensions are the worst case for any
approximate index and are not what embeddings look like), rounded to 5 decimals."""
from __future__ import annotations

import asyncio
import math
import random
import statistics
import time
import uuid

from rpc_server.storage.node_filter import SqlArgs, compile_filter
from rpc_server.storage.repositories.embeddings import EmbeddingRepository

DIMS = 384
K = 10
CENTRES = 1000
BATCH = 200  # 384 numbers of ~8 characters each: ~3.3 KB a node, within the 1 MB body
QUERIES = 200  # distinct query vectors, cycled
RECALL_QUERIES = 50
GROUPS = 10


def unit(v: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in v)) or 1.0
    return [round(x / norm, 5) for x in v]


class Vectors:
    def __init__(self, seed: int = 42):
        self.rng = random.Random(seed)
        self.centres = [[self.rng.gauss(0, 1) for _ in range(DIMS)] for _ in range(CENTRES)]

    def one(self) -> list[float]:
        centre = self.centres[self.rng.randrange(CENTRES)]
        return unit([c + self.rng.gauss(0, 0.6) for c in centre])


async def load(bench, tid: str, type_id: str, count: int, vectors: Vectors) -> float:
    """count nodes through create_nodes; returns nodes/s."""
    started = time.perf_counter()

    async def batch(start: int):
        nodes = [{"node_type_id": type_id, "data": {"n": i, "g": i % GROUPS,
                                                    "embedding": vectors.one()}}
                 for i in range(start, min(start + BATCH, count))]
        await bench.rpc.call("create_nodes", {"tenant_id": tid, "nodes": nodes})

    for chunk in range(0, count, 4 * BATCH):
        await asyncio.gather(*(batch(s) for s in range(chunk, min(chunk + 4 * BATCH, count),
                                                       BATCH)))
        if chunk and chunk % 20_000 == 0:
            print(f"    {chunk:,} vectors loaded ...", flush=True)
    return count / (time.perf_counter() - started)


async def wait_for_index(pool, timeout: float = 1800) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        found = await pool.fetchval(
            "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = 'node_embeddings'::regclass AND i.indisvalid "
            f"AND c.relname LIKE 'node_embeddings_hnsw_%\\_{DIMS}\\_cos'")
        if found:
            return time.monotonic() - started
        await asyncio.sleep(1)
    raise RuntimeError("the HNSW index was not built in time")


async def exact(pool, tid: uuid.UUID, type_id: uuid.UUID, query: list[float],
                condition: str = "TRUE", cargs: list | None = None) -> list[uuid.UUID]:
    """The true k nearest: the same distance over every embedding (no index)."""
    args = list(cargs or [])
    n = len(args)
    async with pool.acquire() as conn:
        async with conn.transaction():
            await conn.execute("SET LOCAL enable_indexscan = off; "
                               "SET LOCAL enable_bitmapscan = off")
            rows = await conn.fetch(
                f"SELECT e.node_id FROM node_embeddings e WHERE e.tenant_id = ${n + 1} "
                f"AND e.node_type_id = ${n + 2} AND EXISTS (SELECT 1 FROM nodes WHERE "
                "nodes.tenant_id = e.tenant_id AND nodes.id = e.node_id AND "
                f"({condition})) ORDER BY e.embedding::vector({DIMS}) <=> "
                f"${n + 3}::float4[]::vector({DIMS}) LIMIT {K}", *args, tid, type_id, query)
    return [r["node_id"] for r in rows]


async def knn_rows(bench, count: int) -> None:
    rpc, pool = bench.rpc, bench.pool
    tenant = (await rpc.call("create_tenant", {"slug": f"knn-{uuid.uuid4().hex[:8]}",
                                               "name": "k-NN bench"}))["tenant"]
    tid = tenant["id"]
    node_type = (await rpc.call("create_node_type", {
        "tenant_id": tid, "name": "Doc", "embedding": {"field": "data.embedding",
                                                       "dimensions": DIMS}}))["node_type"]
    type_id = node_type["id"]
    tid_u, type_u = uuid.UUID(tid), uuid.UUID(type_id)
    vectors = Vectors()
    print(f"  loading {count:,} vectors of {DIMS} dimensions through create_nodes "
          f"(batches of {BATCH}, 4 in flight) ...", flush=True)
    rate = await load(bench, tid, type_id, count, vectors)
    print("  waiting for the server to build the HNSW index ...", flush=True)
    built_s = await wait_for_index(pool)
    await pool.execute("VACUUM ANALYZE node_embeddings")
    await pool.execute("VACUUM ANALYZE nodes")
    index_mb = await pool.fetchval(
        "SELECT sum(pg_relation_size(i.indexrelid)) / 1048576.0 FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = "
        "'node_embeddings'::regclass AND c.relname LIKE 'node_embeddings_hnsw_%'")
    bench.notes.append(f"k-NN load: {count:,} nodes with {DIMS}-dimension embeddings through "
                       f"create_nodes at {rate:,.0f} nodes/s ({count / rate:.0f} s); the "
                       "server's background HNSW index (m 16, ef_construction 64; built "
                       "once the type had FLEXDB_VECTOR_INDEX_MIN_NODES nodes, so mostly "
                       "filled by the load's own inserts) was valid "
                       f"{built_s:.0f} s after the load ended; index {index_mb:,.0f} MB")
    queries = [vectors.one() for _ in range(QUERIES)]
    settings_ef = 100  # FLEXDB_VECTOR_ EF_SEARCH default, as the server runs it

    for label, flt in (("", None), (f", filter matching 1/{GROUPS}",
                                    {"field": "data.g", "op": "eq", "value": 3})):
        name = "knn" if flt is None else "knn_filtered"
        # recall@10 of flexdb's answers against the exact ones
        hits = 0
        condition_args = SqlArgs()
        condition = compile_filter(flt, condition_args)
        for query in queries[:RECALL_QUERIES]:
            params = {"tenant_id": tid, "node_type_id": type_id,
                      "near": {"field": "data.embedding", "vector": query, "k": K}}
            if flt:
                params["filter"] = flt
            found = (await rpc.call("query_nodes", params))["nodes"]
            truth = await exact(pool, tid_u, type_u, query, condition,
                                list(condition_args.values))
            hits += len({uuid.UUID(n["id"]) for n in found} & set(truth))
        recall = hits / (K * RECALL_QUERIES)
        counter = iter(range(10**9))

        async def flex(_):
            query = queries[next(counter) % QUERIES]
            params = {"tenant_id": tid, "node_type_id": type_id,
                      "near": {"field": "data.embedding", "vector": query, "k": K}}
            if flt:
                params["filter"] = flt
            await rpc.call("query_nodes", params)

        async def raw(_):
            query = queries[next(counter) % QUERIES]
            args = SqlArgs()
            cond = compile_filter(flt, args)
            async with pool.acquire() as conn:
                await EmbeddingRepository(conn).nearest(
                    tid_u, type_u, DIMS, "cosine", query, K, cond, args, settings_ef,
                    "relaxed_order", 8 * 1_048_576)

        row = await bench.scenario(
            name, f"query_nodes near: k-NN k={K} over {count:,} × {DIMS} (cosine, HNSW){label}",
            flex, raw, concurrency=1, target="p95 ≤ 50 ms, recall@10 ≥ 0.95")
        row["recall_at_10"] = recall
        bench.notes.append(f"{name}: recall@10 {recall:.3f} over {RECALL_QUERIES} queries "
                           f"(exact: the same SQL with index scans off); p50 "
                           f"{row['p50_ms']:.1f} ms, p95 {row['p95_ms']:.1f} ms at c=1 "
                           f"(raw asyncpg, same statement: p50 {row['raw_p50_ms']:.1f} ms)")
    exact_times = []
    for query in queries[:10]:
        started = time.perf_counter()
        await exact(pool, tid_u, type_u, query)
        exact_times.append((time.perf_counter() - started) * 1000)
    bench.notes.append(f"exact k-NN (no index, every embedding read): p50 "
                       f"{statistics.median(exact_times):.0f} ms")
