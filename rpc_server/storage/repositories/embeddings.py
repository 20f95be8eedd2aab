"""node_embeddings (storage/vectors.py): k-nearest-neighbour search, and rebuilding a node
type's embeddings when its declaration changes. Only used when vector search is available."""
from __future__ import annotations

from uuid import UUID

from rpc_server.storage.node_filter import SqlArgs
from rpc_server.storage.pagination import cut_to_budget, within_bytes
from rpc_server.storage.repositories.base import Repository
from rpc_server.storage.repositories.nodes import NodeRepository
from rpc_server.storage.response_budget import response_too_large
from rpc_server.storage.vectors import FLOAT4_MAX, distance_sql

# A JSON value `v` that is an embedding of $dims finite numbers within float4's range.
_FITS = ("(jsonb_typeof(v) = 'array' AND jsonb_array_length(v) = DIMS AND NOT EXISTS ("
         "SELECT 1 FROM jsonb_array_elements(v) AS e (x) WHERE jsonb_typeof(x) <> 'number' "
         f"OR abs((x #>> '{{}}')::numeric) > {FLOAT4_MAX:.8e}))")


class EmbeddingRepository(Repository):
    table = "node_embeddings"
    kind = "node_embedding"
    key_columns = ("tenant_id", "node_id")

    async def nearest(self, tenant_id: UUID, node_type_id: UUID, dimensions: int, metric: str,
                      vector: list[float], k: int, condition: str, args: SqlArgs,
                      ef_search: int, iterative: str, max_bytes: int) -> tuple[list, int]:
        """The k nodes of the type nearest to `vector` that match `condition` (SQL from
        node_filter over `nodes`, values already in `args`), nearest first, each with its
        `distance`; and the bytes their documents take. With the type's HNSW index the
        search is approximate: an iterative index scan (pgvector 0.8, hnsw.iterative_scan)
        goes on past ef_search candidates until k rows pass the filter (or
        hnsw.max_scan_tuples were read). The relaxed order of its results is put right by
        the outer ORDER BY. Custom plans only: the partial index's predicate (tenant and
        type) must be proven from the parameters' values."""
        query = args.add(vector, "float4[]")
        tenant = args.add(tenant_id, "uuid")
        node_type = args.add(node_type_id, "uuid")
        limit = args.add(k, "int4")
        budget = args.add(max_bytes, "int8")

        def statement(matching: str) -> str:
            nearest = (
                f"SELECT e.node_id, {distance_sql('e.embedding', dimensions, metric, query)} "
                "AS distance FROM node_embeddings e "
                f"WHERE e.tenant_id = {tenant} AND e.node_type_id = {node_type} {matching}"
                f"ORDER BY distance LIMIT {limit}")
            columns = ", ".join("n." + c.strip()
                                for c in NodeRepository.read_columns.split(","))
            # (a NULL distance: an embedding of other dimensions, left by an older
            # declaration in a transaction that has not ended yet)
            page = (f"WITH found AS MATERIALIZED ({nearest}) SELECT {columns}, "
                    f"found.distance FROM found JOIN nodes n ON n.tenant_id = {tenant} "
                    "AND n.id = found.node_id WHERE found.distance IS NOT NULL "
                    "ORDER BY found.distance, n.id")
            return within_bytes(page, "octet_length(data)", budget)

        def matches(fence: str) -> str:  # (the condition may hold braces: no format())
            return ("AND EXISTS (SELECT 1 FROM nodes WHERE nodes.tenant_id = e.tenant_id "
                    "AND nodes.id = e.node_id AND (" + condition + ")" + fence + ") ")
        async with self.conn.transaction():
            await self.conn.execute(
                f"SET LOCAL hnsw.ef_search = {int(ef_search)}; "
                f"SET LOCAL hnsw.iterative_scan = {iterative}; "
                "SET LOCAL plan_cache_mode = force_custom_plan")
            if condition == "TRUE":  # every embedding's node matches (the foreign key)
                rows = await self.conn.fetch(statement(""), *args.values)
            else:
                # First the filter checked on each candidate as the index yields it (the
                # OFFSET keeps the planner from turning it into a join: its estimates of
                # JSON filters are guesses, and a join over every matching node costs
                # what an exact search does). When that finds fewer than k (a selective
                # filter: the iterative scan gave up after hnsw.max_scan_tuples), the
                # planner's own plan, which then answers from the filter's index, exactly.
                rows = await self.conn.fetch(statement(matches(" OFFSET 0")),
                                             *args.values)
                if len(rows) < k:
                    rows = await self.conn.fetch(statement(matches("")),
                                                 *args.values)
        rows, cut, used = cut_to_budget(rows, max_bytes)
        if cut:  # one page of k: fewer than asked would look like the answer
            raise response_too_large(max_bytes, "FLEXDB_MAX_PAGE_BYTES, or what is left of "
                                     "FLEXDB_MAX_RESPONSE_BYTES")
        return [{key: value for key, value in r.items() if key != "_through"} for r in rows], used

    async def misfits(self, tenant_id: UUID, node_type_id: UUID, path: list[str],
                      dimensions: int, sample: int = 5) -> tuple[int, list[UUID]]:
        """How many of the type's nodes hold, at `path`, something other than nothing (absent
        or null) or an embedding of `dimensions` finite numbers; and the first few of them."""
        row = await self._fetch_one(
            "SELECT count(*) AS n, (array_agg(id ORDER BY id))[1:$4] AS ids FROM ("
            "SELECT id, data #> $3::text[] AS v FROM nodes "
            "WHERE tenant_id = $1 AND node_type_id = $2) AS s "
            "WHERE v IS NOT NULL AND v <> 'null'::jsonb AND NOT "
            + _FITS.replace("DIMS", str(int(dimensions))), tenant_id, node_type_id, path, sample)
        return row["n"], list(row["ids"] or [])

    async def rebuild(self, tenant_id: UUID, node_type_id: UUID,
                      path: list[str] | None) -> int:
        """In a transaction: drop the type's embeddings and (path given) store them again from
        its nodes' data (checked with misfits first). The count stored."""
        await self.conn.execute(
            "DELETE FROM node_embeddings WHERE tenant_id = $1 AND node_type_id = $2",
            tenant_id, node_type_id)
        if path is None:
            return 0
        status = await self.conn.execute(
            "INSERT INTO node_embeddings (tenant_id, node_id, node_type_id, embedding) "
            "SELECT $1::uuid, n.id, n.node_type_id, (n.data #> $3::text[])::text::vector "
            "FROM nodes n WHERE n.tenant_id = $1 AND n.node_type_id = $2 "
            "AND jsonb_typeof(n.data #> $3::text[]) = 'array'", tenant_id, node_type_id, path)
        return int(status.split()[-1])

    async def count(self, tenant_id: UUID, node_type_id: UUID) -> int:
        return await self.conn.fetchval(
            "SELECT count(*) FROM node_embeddings WHERE tenant_id = $1 AND node_type_id = $2",
            tenant_id, node_type_id)

