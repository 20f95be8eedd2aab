"""scripts/bench.py's full-text search rows: query_nodes with a `search` condition over
--search-nodes nodes of short text (8-12 words each, drawn from a 5,000-word vocabulary with
Zipf frequencies, as words in text are), sorted by rank and by creation time, page of 10:
p50/p95 at concurrency 1 and req/s at the run's concurrency, next to raw asyncpg running the
statement the server builds (NodeRepository.query_statement) in the same run."""
from __future__ import annotations

import asyncio
import random
import time
import uuid

import orjson

from rpc_server.api.params import Pagination
from rpc_server.storage.node_filter import SqlArgs, compile_filter, parse_sort
from rpc_server.storage.node_search import SearchScope, SearchSql
from rpc_server.storage.repositories.nodes import NodeRepository

VOCABULARY = 5000
QUERIES = 300
PAGE = 10
MAX_BYTES = 4 * 1_048_576


def words(rng: random.Random) -> list[str]:
    """The vocabulary: pronounceable made-up words, most frequent first."""
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "xe", "zu", "bra", "pel"]
    made: list[str] = []
    seen = set()
    while len(made) < VOCABULARY:
        word = "".join(rng.choice(syllables) for _ in range(rng.randint(2, 4)))
        if word not in seen:
            seen.add(word)
            made.append(word)
    return made


async def search_rows(bench, tid: str, count: int) -> None:
    rng = random.Random(23)
    vocabulary = words(rng)
    weights = [1 / (rank + 1) for rank in range(VOCABULARY)]  # Zipf
    note = (await bench.rpc.call("create_node_type", {"tenant_id": tid, "name": "Note"}))[
        "node_type"]
    type_id = note["id"]
    print(f"  loading {count:,} short texts for the search rows ...", flush=True)
    started = time.perf_counter()

    async def batch(start: int):
        nodes = [{"node_type_id": type_id, "data": {"text": " ".join(
            rng.choices(vocabulary, weights, k=rng.randint(8, 12)))}}
            for _ in range(start, min(start + 1000, count))]
        await bench.rpc.call("create_nodes", {"tenant_id": tid, "nodes": nodes})

    for chunk in range(0, count, 4000):
        await asyncio.gather(*(batch(s) for s in range(chunk, min(chunk + 4000, count), 1000)))
    load_s = time.perf_counter() - started
    await bench.pool.execute("VACUUM ANALYZE nodes")
    # Queries of one or two words from ranks 10..3,000: each matches from about 0.05% to 8%
    # of the texts.
    queries = [" ".join(rng.sample(vocabulary[10:3000], rng.choice((1, 1, 2))))
               for _ in range(QUERIES)]
    tid_u, type_u = uuid.UUID(tid), uuid.UUID(type_id)
    scope_rows = [{"id": type_u, "search_config": None}]
    for sort in ({"by": "rank"}, None):
        bodies, statements = [], []
        for text in queries:
            search_filter = {"field": "data", "op": "search", "value": text}
            params = {"tenant_id": tid, "node_type_id": type_id, "filter": search_filter,
                      "pagination": {"page_size": PAGE, "include_total": False}}
            if sort:
                params["sort"] = sort
            bodies.append(encode(params))
            args = SqlArgs()
            search = SearchSql(SearchScope.of(scope_rows), args)
            condition = compile_filter(search_filter, args, search)
            statement = NodeRepository.query_statement(
                tid_u, type_u, condition, args, parse_sort(sort),
                Pagination(page_size=PAGE, include_total=False), MAX_BYTES, search)
            statements.append((statement.sql, statement.args))
        label = "rank" if sort else "created_at"
        picks = random.Random(5)

        def flex(_):
            return bench.rpc.post(picks.choice(bodies))

        def raw(_):
            sql, args = picks.choice(statements)
            return bench.pool.fetch(sql, *args)

        for concurrency in (1, bench.args.concurrency):
            await bench.scenario(
                f"search_{label}", f"query_nodes search over {count:,} short texts, by "
                f"{label}, page {PAGE}", flex, raw, concurrency=concurrency,
                target="p95 ≤ 50 ms at c=1")
    bench.notes.append(f"search rows: {count:,} texts of 8-12 words loaded through create_nodes "
                       f"at {count / load_s:,.0f} nodes/s (the search vector is made in the "
                       f"same statement); {QUERIES} queries of 1-2 words")


def encode(params: dict) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "query_nodes", "params": params})
