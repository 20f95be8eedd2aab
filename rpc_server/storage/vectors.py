"""Vector similarity search storage (pgvector): detection and set-up at start, the
node_embeddings side table and its trigger, and the background builder of the per-tenant,
per-type HNSW indexes.

Set-up (ensure_vector_storage, once per start before the workers, under an advisory lock,
idempotent): when the `vector` extension is available on the database server it is created
(CREATE EXTENSION needs a superuser, or the extension pre-created by one: otherwise vector
search is reported unavailable, nothing else changes), then the side table

    node_embeddings (tenant_id, node_id, node_type_id, embedding vector)
        PRIMARY KEY (tenant_id, node_id), FOREIGN KEY (tenant_id, node_id) REFERENCES nodes
        ON DELETE CASCADE

and the statement-level triggers on nodes that keep it in step with each node write, in
the write's own transaction (a k-NN search right after a write sees it): on insert, and on
an update that changes data, the value at the node type's declared embedding path is
stored (an array; an absent path or JSON null stores nothing, and an update to such a value
removes the row); a node's deletion removes it by the foreign key. The values were checked
(dimensions, finite numbers) by the method before the write (validation/embeddings.py).
This is not a migration because a migration cannot depend on an optional extension, and an
extension installed later must be picked up by the next start (migrations are immutable).

Indexes (VectorIndexer, one sweep every FLEXDB_VECTOR_INDEX_INTERVAL_S in each server
process, one builder at a time across processes by an advisory lock): a node type with an
embedding gets, once it has FLEXDB_VECTOR_INDEX_MIN_NODES nodes, one HNSW index per metric
it declares, a partial expression index built CONCURRENTLY (writes go on meanwhile):

    CREATE INDEX CONCURRENTLY node_embeddings_hnsw_<hash>_<D>_<metric> ON node_embeddings
        USING hnsw ((CASE WHEN vector_dims(embedding) = D THEN embedding::vector(D)
                     ELSE NULL::vector(D) END) vector_cosine_ops)
        WHERE tenant_id = '<tenant>' AND node_type_id = '<type>'

The CASE keeps an index of an older declaration out of the way of rows of a new one (of
other dimensions: NULL, which HNSW does not index) until the next sweep drops it, as it
drops the indexes of deleted types; and, unlike a predicate on the dimensions, it leaves
the planner's row estimates alone (extended statistics tell it that node_type_id implies
tenant_id). Searches order by the same expression (distance_sql). Below the threshold a
search is exact (the btree on (tenant_id, node_type_id) finds the type's rows).
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable
from uuid import UUID

import asyncpg

from rpc_server.storage.db import Connection

log = logging.getLogger(__name__)

SETUP_LOCK_KEY = 0x666C6578_7665  # "flexve": one start's set-up at a time
INDEX_LOCK_KEY = 0x666C6578_7669  # "flexvi": one index builder at a time
MAX_DIMENSIONS = 2000  # HNSW indexes vectors of at most 2,000 dimensions
# metric -> (distance operator, HNSW operator class, short name in index names)
METRICS = {"cosine": ("<=>", "vector_cosine_ops", "cos"),
           "l2": ("<->", "vector_l2_ops", "l2"),
           "inner": ("<#>", "vector_ip_ops", "ip")}
INDEX_PREFIX = "node_embeddings_hnsw_"
# The largest magnitude a vector element (float4) holds.
FLOAT4_MAX = 3.4028234663852886e38

# The declared path, as text[], of node type row `t` ("data.a.b" -> {a,b}).
_PATH = "string_to_array(substr(t.embedding->>'field', 6), '.')"

SYNC_FUNCTION = f"""
CREATE OR REPLACE FUNCTION node_embeddings_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO node_embeddings (tenant_id, node_id, node_type_id, embedding)
        SELECT n.tenant_id, n.id, n.node_type_id, (n.data #> {_PATH})::text::vector
        FROM new_rows n JOIN node_types t ON t.tenant_id = n.tenant_id AND t.id = n.node_type_id
        WHERE t.embedding IS NOT NULL AND jsonb_typeof(n.data #> {_PATH}) = 'array';
    ELSE
        DELETE FROM node_embeddings e USING new_rows n, node_types t
        WHERE t.tenant_id = n.tenant_id AND t.id = n.node_type_id AND t.embedding IS NOT NULL
          AND e.tenant_id = n.tenant_id AND e.node_id = n.id
          AND jsonb_typeof(n.data #> {_PATH}) IS DISTINCT FROM 'array';
        INSERT INTO node_embeddings (tenant_id, node_id, node_type_id, embedding)
        SELECT n.tenant_id, n.id, n.node_type_id, (n.data #> {_PATH})::text::vector
        FROM new_rows n JOIN old_rows o ON o.tenant_id = n.tenant_id AND o.id = n.id
        JOIN node_types t ON t.tenant_id = n.tenant_id AND t.id = n.node_type_id
        WHERE t.embedding IS NOT NULL AND o.data IS DISTINCT FROM n.data
          AND jsonb_typeof(n.data #> {_PATH}) = 'array'
        ON CONFLICT (tenant_id, node_id) DO UPDATE SET embedding = EXCLUDED.embedding;
    END IF;
    RETURN NULL;
END $$"""

SETUP = [
    """CREATE TABLE IF NOT EXISTS node_embeddings (
           tenant_id    uuid NOT NULL,
           node_id      uuid NOT NULL,
           node_type_id uuid NOT NULL,
           embedding    vector NOT NULL,
           PRIMARY KEY (tenant_id, node_id),
           FOREIGN KEY (tenant_id, node_id) REFERENCES nodes (tenant_id, id) ON DELETE CASCADE)""",
    "CREATE INDEX IF NOT EXISTS node_embeddings_type ON node_embeddings "
    "(tenant_id, node_type_id)",
    "REVOKE ALL ON node_embeddings FROM PUBLIC",
    "CREATE STATISTICS IF NOT EXISTS node_embeddings_keys (dependencies, ndistinct) "
    "ON tenant_id, node_type_id FROM node_embeddings",
    SYNC_FUNCTION,
]
TRIGGERS = {
    "nodes_embeddings_inserts": "CREATE TRIGGER nodes_embeddings_inserts AFTER INSERT ON nodes "
    "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION "
    "node_embeddings_sync()",
    "nodes_embeddings_updates": "CREATE TRIGGER nodes_embeddings_updates AFTER UPDATE ON nodes "
    "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE "
    "FUNCTION node_embeddings_sync()",
}


@dataclass(frozen=True)
class VectorSupport:
    """Whether this server can store and search embeddings (found at start)."""
    available: bool
    version: str | None = None
    reason: str | None = None  # why not

    def check(self) -> dict:
        """Its entry in GET /ready's checks (never makes the server degraded: optional)."""
        if self.available:
            return {"status": "ok", "extension": "vector", "version": self.version,
                    "latency_ms": None, "error": None}
        return {"status": "unavailable", "extension": "vector", "version": None,
                "latency_ms": None, "error": self.reason}


UNAVAILABLE = VectorSupport(False, reason="the vector extension (pgvector) is not installed "
                                          "in the database")


async def detect(conn: Connection) -> VectorSupport:
    """What ensure_vector_storage left: the extension installed and the side table there."""
    row = await _fetch_one(
        conn, "SELECT (SELECT extversion FROM pg_extension WHERE extname = 'vector') AS version, "
        "to_regclass('node_embeddings') IS NOT NULL AS has_table, "
        "EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector') AS available")
    if row["version"] and row["has_table"]:
        return VectorSupport(True, row["version"])
    if not row["available"]:
        return VectorSupport(False, reason="the vector extension (pgvector) is not available "
                                           "on the database server")
    return UNAVAILABLE


async def ensure_vector_storage(conn: Connection) -> VectorSupport:
    """Create the extension (when available) and the vector storage, if missing. Never
    raises for a database that cannot have them: it answers why not."""
    available = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector')")
    if not available:
        support = await detect(conn)
        log.info("vector search unavailable: %s", support.reason)
        return support
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", SETUP_LOCK_KEY)
            await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            for statement in SETUP:
                await conn.execute(statement)
            present = {r["tgname"] for r in await conn.fetch(
                "SELECT tgname FROM pg_trigger WHERE tgrelid = 'nodes'::regclass "
                "AND tgname = ANY($1::text[])", list(TRIGGERS))}
            for name, statement in TRIGGERS.items():
                if name not in present:
                    await conn.execute(statement)
    except asyncpg.PostgresError as exc:
        reason = (f"the vector extension could not be set up: {exc.sqlstate} "
                  f"{(exc.message or str(exc))[:200]} (CREATE EXTENSION vector needs a "
                  "superuser, or the extension created beforehand by one)")
        log.warning("vector search unavailable: %s", reason)
        return VectorSupport(False, reason=reason)
    support = await detect(conn)
    log.info("vector search available (pgvector %s)", support.version)
    return support


async def _fetch_one(conn: Connection, sql: str) -> asyncpg.Record:
    row = await conn.fetchrow(sql)
    assert row is not None  # a SELECT without FROM
    return row


def embedding_path(field: str) -> list[str]:
    """The keys of a declared "data.a.b" field inside data."""
    return field.split(".")[1:]


def index_name(tenant_id: UUID | str, node_type_id: UUID | str, dimensions: int,
               metric: str) -> str:
    digest = hashlib.sha256(f"{tenant_id}:{node_type_id}".encode()).hexdigest()[:16]
    return f"{INDEX_PREFIX}{digest}_{dimensions}_{METRICS[metric][2]}"


def embedding_sql(column: str, dimensions: int) -> str:
    """The indexed expression: the embedding as vector(D), NULL when of other dimensions."""
    d = int(dimensions)
    # (the typed ELSE keeps the dimensions in the expression's type: HNSW needs them)
    return (f"(CASE WHEN vector_dims({column}) = {d} THEN {column}::vector({d}) "
            f"ELSE NULL::vector({d}) END)")


def distance_sql(column: str, dimensions: int, metric: str, query: str) -> str:
    """The distance a search orders by (the form the index answers); `query` a placeholder
    or literal of a real[] (or vector)."""
    d = int(dimensions)
    return f"{embedding_sql(column, d)} {METRICS[metric][0]} {query}::vector({d})"


def index_sql(tenant_id: UUID, node_type_id: UUID, dimensions: int, metric: str) -> str:
    """The partial HNSW index of one tenant's node type and metric (UUIDs and an int: the
    literals are safe; DDL takes no parameters)."""
    ops = METRICS[metric][1]
    return (f"CREATE INDEX CONCURRENTLY IF NOT EXISTS "
            f"{index_name(tenant_id, node_type_id, dimensions, metric)} ON node_embeddings "
            f"USING hnsw ({embedding_sql('embedding', dimensions)} {ops}) "
            f"WHERE tenant_id = '{UUID(str(tenant_id))}'::uuid AND node_type_id = "
            f"'{UUID(str(node_type_id))}'::uuid")


@dataclass
class IndexPolicy:
    min_nodes: int
    interval_s: float
    build_memory_mb: int


class VectorIndexer:
    """Builds the HNSW indexes types have grown into, drops those no declaration wants
    (see the module's doc). `sweep()` does one pass (also called by tests and tools)."""

    def __init__(self, pool: asyncpg.Pool, connect: Callable[[], Awaitable[Connection]],
                 policy: IndexPolicy):
        self.pool, self.connect, self.policy = pool, connect, policy
        self._task: asyncio.Task | None = None
        self.built: list[str] = []  # names built by this process (for logs and tests)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="flexdb-vector-indexer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - logged; the next sweep tries again
                log.exception("vector index sweep failed")
            await asyncio.sleep(self.policy.interval_s)

    async def wanted(self) -> dict[str, tuple[Any, Any, int, str, int]]:
        """index name -> (tenant, type, dimensions, metric, nodes) for every declared
        embedding's metric, whatever its size."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT t.tenant_id, t.id, (t.embedding->>'dimensions')::int AS dimensions, "
                "m.metric, coalesce(c.n, 0) AS nodes "
                "FROM node_types t CROSS JOIN LATERAL "
                "jsonb_array_elements_text(t.embedding->'metrics') AS m (metric) "
                "LEFT JOIN (SELECT tenant_id, node_type_id, sum(n) AS n FROM node_counts "
                "GROUP BY tenant_id, node_type_id) c "
                "ON c.tenant_id = t.tenant_id AND c.node_type_id = t.id "
                "WHERE t.embedding IS NOT NULL")
        return {index_name(r["tenant_id"], r["id"], r["dimensions"], r["metric"]):
                (r["tenant_id"], r["id"], r["dimensions"], r["metric"], r["nodes"])
                for r in rows if r["metric"] in METRICS}

    async def sweep(self) -> list[str]:
        """One pass; the names of the indexes built."""
        wanted = await self.wanted()
        async with self.pool.acquire() as pooled:
            present = {r["name"]: r["valid"] for r in await pooled.fetch(
                "SELECT c.relname AS name, i.indisvalid AS valid FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE i.indrelid = 'node_embeddings'::regclass AND c.relname LIKE $1",
                INDEX_PREFIX + "%")}
        to_build = [name for name, (_, _, _, _, nodes) in wanted.items()
                    if nodes >= self.policy.min_nodes and not present.get(name, False)]
        to_drop = [name for name, valid in present.items()
                   if name not in wanted or (not valid and name in to_build)]
        if not to_build and not to_drop:
            return []
        built = []
        conn: Connection = await self.connect()
        try:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", INDEX_LOCK_KEY):
                return []  # another process is at it
            try:
                await conn.execute("SET statement_timeout = 0")
                await conn.execute(
                    f"SET maintenance_work_mem = '{int(self.policy.build_memory_mb)}MB'")
                for name in to_drop:
                    await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
                    log.info("dropped vector index %s", name)
                for name in to_build:
                    tenant_id, node_type_id, dimensions, metric, nodes = wanted[name]
                    await conn.execute(index_sql(tenant_id, node_type_id, dimensions, metric))
                    log.info("built vector index %s (%s nodes)", name, nodes)
                    built.append(name)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", INDEX_LOCK_KEY)
        finally:
            await conn.close()
        self.built += built
        return built
