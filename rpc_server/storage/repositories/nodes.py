from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from rpc_server.errors import InvalidParams, NotFound
from rpc_server.storage.node_filter import NodeSort, SqlArgs
from rpc_server.storage.node_search import SNIPPET_BYTES, SearchSql, html_snippet
from rpc_server.storage.pagination import (
    BUDGET_COLUMNS,
    SORT_KEY_COLUMN,
    TOTAL_COLUMN,
    Page,
    PageRequest,
    cut_to_budget,
    decode_token_text,
    encode_token,
    fetch_page,
    invalid_token,
    parse_token_time,
    within_bytes,
)
from rpc_server.storage.repositories.base import Repository
from rpc_server.storage.response_budget import ROW_OVERHEAD


@dataclass(frozen=True)
class PageStatement:
    sql: str
    args: list
    count_sql: str
    count_args: list


class NodeRepository(Repository):
    table = "nodes"
    kind = "node"
    key_columns = ("tenant_id", "id")
    columns = ("id, tenant_id, node_type_id, data, created_at, updated_at, version,"
               " schema_version")
    read_columns = ("id, tenant_id, node_type_id, data::text AS data, created_at, updated_at,"
                    " version, schema_version")
    document = "data"
    size_sql = f"octet_length({document})"

    # Writes checked against the node type version the data was validated against: they
    # touch no row when the node type has changed since (or is gone). For Call.write.
    # An insert holds the node type key-share-locked until commit (the foreign key's check
    # takes that lock anyway, so it costs nothing), and update_node_type locks the row FOR
    # UPDATE before changing it: a schema change waits for inserts in flight instead of
    # leaving a node checked against a version no longer current.
    # The node records the node type's schema version it was validated against.
    # $1 tenant, $2 node id, $3 node type, $4 data, $5 node type version.
    INSERT_CHECKED = (
        "INSERT INTO nodes (tenant_id, id, node_type_id, data, schema_version) "
        "SELECT $1::uuid, $2::uuid, $3::uuid, $4::jsonb, t.schema_version FROM node_types t "
        "WHERE t.tenant_id = $1 AND t.id = $3 AND t.version = $5::int FOR KEY SHARE "
        "RETURNING " + read_columns)
    # ... and $6 the expected node version (NULL: any). An update takes no lock on the node
    # type: a lock there is a row lock shared by every concurrent update of the type's nodes
    # (a MultiXact each time), which cost a quarter of update_node's throughput at 32 in
    # flight. Instead, a schema change stamps every node it found valid with its new schema
    # version, row by row, before it commits (check_nodes in validation/existing_nodes.py):
    # an update whose statement began before that commit waits for the stamp's row lock,
    # and then finds the node's schema_version above the one it validated against and
    # touches no row, so it is validated again against the new schema.
    UPDATE_CHECKED = (
        "UPDATE nodes n SET data = $4::jsonb, updated_at = now(), version = n.version + 1, "
        "schema_version = t.schema_version FROM node_types t "
        "WHERE n.tenant_id = $1::uuid AND n.id = $2::uuid AND n.node_type_id = $3::uuid "
        "AND ($6::int IS NULL OR n.version = $6::int) AND t.tenant_id = $1 AND t.id = $3 "
        "AND t.version = $5::int AND n.schema_version <= t.schema_version "
        "RETURNING " + ", ".join("n." + c.strip() for c in read_columns.split(",")))

    async def create_many(self, tenant_id: UUID, ids: list[UUID], node_type_ids: list[UUID],
                          datas: list[dict]) -> list[asyncpg.Record]:
        """One set-based INSERT; rows come back in input order. Each node records its node
        type's current schema version (the caller holds the node types locked: see
        NodeTypeRepository.lock_versions)."""
        rows = await self.conn.fetch(
            "INSERT INTO nodes (tenant_id, id, node_type_id, data, schema_version) "
            "SELECT $1, i.id, i.node_type_id, i.data, t.schema_version "
            "FROM unnest($2::uuid[], $3::uuid[], $4::jsonb[]) AS i (id, node_type_id, data) "
            "JOIN node_types t ON t.tenant_id = $1 AND t.id = i.node_type_id "
            f"RETURNING {self.read_columns}", tenant_id, ids, node_type_ids, datas)
        by_id = {r["id"]: r for r in rows}
        return [by_id[i] for i in ids]

    async def get(self, tenant_id: UUID, node_id: UUID) -> asyncpg.Record:
        return await self._require(tenant_id, node_id)

    async def require_exists(self, tenant_id: UUID, node_id: UUID) -> None:
        """NotFound unless the node exists (its document is not read)."""
        if not await self.existing_ids(tenant_id, [node_id]):
            raise NotFound(self.kind, node_id)

    # ------------------------------------------------------------ migration jobs

    @staticmethod
    def _migration_where(after: tuple | None, below_version: int | None) -> str:
        where = ("tenant_id = $1 AND node_type_id = $2 AND created_at <= $3"
                 " AND ($4::int IS NULL OR schema_version < $4::int)")
        if after is not None:
            where += " AND (created_at, id) > ($5, $6)"
        return where

    async def migration_count(self, tenant_id: UUID, node_type_id: UUID, until: datetime,
                              below_version: int | None) -> int:
        """How many nodes of the type a migration job will go through: created by `until`
        (the job's start), and recording a schema version below `below_version` if given."""
        return await self.conn.fetchval(
            f"SELECT count(*) FROM nodes WHERE {self._migration_where(None, below_version)}",
            tenant_id, node_type_id, until, below_version)

    async def migration_batch(self, tenant_id: UUID, node_type_id: UUID, until: datetime,
                              below_version: int | None, after: tuple[datetime, UUID] | None,
                              limit: int, max_bytes: int) -> list[asyncpg.Record]:
        """A migration job's next nodes after the keyset `after` ((created_at, id) of the
        last one done), in that order (nodes_type_keyset_idx): id, created_at, version and
        data (as JSON text). At most `limit` of them, and only while their data takes at
        most `max_bytes` (as text, counted in the database: the first one whatever its
        size), so a batch never reads more than it keeps."""
        args: list = [tenant_id, node_type_id, until, below_version]
        if after is not None:
            args += list(after)
        args.append(limit)
        page = ("SELECT id, created_at, version, data::text AS data FROM nodes "
                f"WHERE {self._migration_where(after, below_version)} "
                f"ORDER BY created_at, id LIMIT ${len(args)}")
        args.append(max_bytes)
        rows = await self.conn.fetch(
            within_bytes(page, self.size_sql, f"${len(args)}"), *args)
        return [row for n, row in enumerate(rows) if n == 0 or row["_through"] <= max_bytes]

    async def apply_migration(self, tenant_id: UUID, node_type_id: UUID, to_version: int,
                              changes: list[tuple[UUID, int, Any]]) -> set[UUID]:
        """A migration batch's new data (id, version read, data): written (version + 1,
        schema_version = to_version) where the node is still at the version the batch read
        and was not validated against a schema newer than `to_version`. The caller holds
        the node type share-locked at to_version. The ids written (the others changed or
        went meanwhile). Nodes whose data stays are stamped instead (stamp_schema_version)."""
        if not changes:
            return set()
        rows = await self.conn.fetch(
            "UPDATE nodes n SET data = i.data, version = n.version + 1, updated_at = now(), "
            "schema_version = $3 FROM unnest($4::uuid[], $5::int[], $6::jsonb[]) "
            "AS i (id, version, data) WHERE n.tenant_id = $1 AND n.node_type_id = $2 "
            "AND n.id = i.id AND n.version = i.version AND n.schema_version <= $3 "
            "RETURNING n.id", tenant_id, node_type_id, to_version,
            [c[0] for c in changes], [c[1] for c in changes], [c[2] for c in changes])
        return {r["id"] for r in rows}

    async def get_pairs(self, tenant_ids: list, node_ids: list
                        ) -> list[asyncpg.Record | None]:
        """The node of each (tenant_ids[i], node_ids[i]) pair (UUIDs or their text), or
        None, in that order: one index probe each."""
        rows = await self.conn.fetch(
            f"SELECT {self.read_columns} FROM unnest($1::uuid[], $2::uuid[]) "
            "WITH ORDINALITY AS k (t, i, n) LEFT JOIN nodes ON tenant_id = k.t AND id = k.i "
            "ORDER BY k.n", tenant_ids, node_ids)
        return [row if row[0] is not None else None for row in rows]

    async def get_pairs_within(self, tenant_ids: list, node_ids: list, max_bytes: int,
                               starting: bool = False
                               ) -> list[tuple[asyncpg.Record | None, bool]]:
        """get_pairs, reading documents only while their running total (each with
        ROW_OVERHEAD) stays within `max_bytes` (`starting`: while the total before them
        does, so the first is read whatever its size): (row or None, whether it was left
        out)."""
        through = "_through - coalesce(octet_length(data), 0) - $4" if starting else "_through"
        columns = self.columns.replace(
            "data", f"CASE WHEN {through} <= $3 THEN data END AS data")
        rows = await self.conn.fetch(
            f"SELECT {columns} FROM ("
            "  SELECT found.*, sum(coalesce(octet_length(data), 0) + $4) OVER (ORDER BY n) "
            "  AS _through FROM ("
            f"    SELECT k.n, {self.read_columns} FROM unnest($1::uuid[], $2::uuid[]) "
            "    WITH ORDINALITY AS k (t, i, n) LEFT JOIN nodes ON tenant_id = k.t AND id = k.i"
            "  ) AS found) AS sized ORDER BY n", tenant_ids, node_ids, max_bytes, ROW_OVERHEAD)
        # A node's data is never NULL: NULL data is a document left out.
        return [(row, row["data"] is None) if row[0] is not None else (None, False)
                for row in rows]

    async def versions_of(self, tenant_id: UUID, node_id: UUID) -> asyncpg.Record | None:
        """The node's version and node_type_id, and that node type's current version
        (type_version)."""
        return await self.conn.fetchrow(
            "SELECT n.version, n.node_type_id, t.version AS type_version "
            "FROM nodes n JOIN node_types t "
            "ON t.tenant_id = n.tenant_id AND t.id = n.node_type_id "
            "WHERE n.tenant_id = $1 AND n.id = $2", tenant_id, node_id)

    async def scan_of_type(self, tenant_id: UUID, node_type_id: UUID, after: tuple | None,
                           limit: int, with_data: bool = True,
                           max_bytes: int | None = None) -> list[asyncpg.Record]:
        """Up to `limit` of the type's nodes after `after` ((created_at, id) of the last one
        read; None: from the first), in that order, through the type's keyset index: id,
        version, created_at and (with_data) data as JSON text; with `max_bytes`, only as
        many as start within that many bytes of data (at least one)."""
        after_time, after_id = after if after is not None else (None, None)
        data = ", data::text AS data" if with_data else ""
        sql = (f"SELECT id, version, created_at{data} FROM nodes "
               "WHERE tenant_id = $1 AND node_type_id = $2 AND (created_at, id) > "
               "(coalesce($3::timestamptz, '-infinity'), "
               "coalesce($4::uuid, '00000000-0000-0000-0000-000000000000')) "
               "ORDER BY created_at, id LIMIT $5")
        args: list = [tenant_id, node_type_id, after_time, after_id, limit]
        if with_data and max_bytes is not None:
            sql = within_bytes(sql, "octet_length(data)", "$6")
            args.append(max_bytes)
        return await self.conn.fetch(sql, *args)

    async def current_of(self, tenant_id: UUID, ids: list[UUID],
                         with_data: bool = True) -> list[asyncpg.Record]:
        """The nodes of these ids as scan_of_type reads them (those still there)."""
        data = ", data::text AS data" if with_data else ""
        return await self.conn.fetch(
            f"SELECT id, version, created_at{data} FROM nodes "
            "WHERE tenant_id = $1 AND id = ANY($2::uuid[]) ORDER BY created_at, id",
            tenant_id, ids)

    async def stamp_schema_version(self, tenant_id: UUID, ids: list[UUID], versions: list[int],
                                   schema_version: int) -> set[UUID]:
        """Record that these nodes, each at the version it was read with, were validated
        against `schema_version`; the ids of those stamped (a node written or deleted since
        it was read is not). A stamp is no change of the node's data: it records no change
        event (the node type's own event says its schema changed) and keeps version and
        updated_at."""
        rows = await self._without_events(
            "UPDATE nodes n SET schema_version = $4 "
            "FROM unnest($2::uuid[], $3::int[]) AS s (id, version) "
            "WHERE n.tenant_id = $1 AND n.id = s.id AND n.version = s.version RETURNING n.id",
            tenant_id, ids, versions, schema_version)
        return {r["id"] for r in rows}

    async def reindex_search(self, tenant_id: UUID, node_type_id: UUID,
                             search_config: dict) -> None:
        """In a transaction: the search vectors of the type's nodes under new settings (no
        change events: their data did not change)."""
        await self._without_events(
            "UPDATE nodes SET search_vector = flexdb_search_vector($3, data) "
            "WHERE tenant_id = $1 AND node_type_id = $2", tenant_id, node_type_id,
            search_config)

    async def _without_events(self, sql: str, *args) -> list[asyncpg.Record]:
        """In a transaction: a statement whose changes record no change event."""
        feed = await self.conn.fetchval("SELECT current_setting('flexdb.change_feed', true)")
        await self.conn.execute("SELECT set_config('flexdb.change_feed', 'off', true)")
        rows = await self.conn.fetch(sql, *args)
        await self.conn.execute("SELECT set_config('flexdb.change_feed', $1, true)", feed or "")
        return rows

    async def existing_ids(self, tenant_id: UUID, ids: list[UUID]) -> set[UUID]:
        rows = await self.conn.fetch(
            "SELECT id FROM nodes WHERE tenant_id = $1 AND id = ANY($2::uuid[])", tenant_id, ids)
        return {r["id"] for r in rows}

    async def update(self, tenant_id: UUID, node_id: UUID, changes: dict,
                     expected_version: int | None) -> asyncpg.Record:
        return await self._update((tenant_id, node_id), changes, expected_version)

    async def delete(self, tenant_id: UUID, node_id: UUID) -> None:
        await self._delete(tenant_id, node_id)

    async def list(self, tenant_id: UUID, node_type_id: UUID | None,
                   pagination: PageRequest, max_bytes: int | None = None) -> Page:
        where, args = ["tenant_id = $1"], [tenant_id]
        if node_type_id is not None:
            where.append("node_type_id = $2")
            args.append(node_type_id)
        # The total comes from the counts maintained by triggers (sql/0006_counts.sql): a few
        # rows per node type, whatever the tenant's size.
        count_sql = ("SELECT coalesce(sum(n), 0)::bigint FROM node_counts"
                     f" WHERE {' AND '.join(where)}")
        return await fetch_page(self.conn, scope="nodes", select=self.read_columns, table="nodes",
                                where=where, args=args, pagination=pagination,
                                count_sql=count_sql, size_sql=self.size_sql,
                                max_bytes=max_bytes, document=self.document)

    @classmethod
    def query_statement(cls, tenant_id: UUID, node_type_id: UUID | None, condition: str,
                        args: SqlArgs, sort: NodeSort, pagination: PageRequest,
                        max_bytes: int | None = None, search: SearchSql | None = None,
                        highlight: bool = False) -> PageStatement:
        """The SQL of one query_nodes page: nodes matching `condition` (SQL from node_filter,
        whose values are already in `args`), sorted by a timestamp column through its index,
        by a data path (missing values sort as JSON null) or by the search rank, after the
        page token's key. With a search in the condition (`search`, its compiler), each
        row has its `rank`, and with `highlight` its `snippet`."""
        where = [f"tenant_id = {args.add(tenant_id, 'uuid')}"]
        if node_type_id is not None:
            where.append(f"node_type_id = {args.add(node_type_id, 'uuid')}")
        where.append(f"({condition})")
        count_sql = f"SELECT count(*) FROM nodes WHERE {' AND '.join(where)}"
        count_args = list(args.values)
        searched = search is not None and search.searched
        rank = search.rank() if searched and search is not None else None
        if sort.rank:
            if rank is None:
                raise InvalidParams.field("sort", "{\"by\": \"rank\"} needs a search "
                                                  "condition in the filter")
            key = rank
        else:
            key = sort.column or \
                f"COALESCE(data #> {args.add(sort.path, 'text[]')}, 'null'::jsonb)"
        extra = ""
        if rank is not None and not sort.rank:  # (sorted by it: the sort key is the rank)
            extra += f", {rank} AS rank"
        if highlight:
            if not searched or search is None:
                raise InvalidParams.field("highlight", "needs a search condition in the filter")
            extra += f", {search.snippet()} AS snippet"
        if pagination.page_token:
            text, last_id = decode_token_text(pagination.page_token, sort.scope)
            if sort.rank:
                try:
                    last = args.add(float(text), "float4")
                except ValueError:
                    raise invalid_token() from None
            elif sort.column:
                last = args.add(parse_token_time(text), "timestamptz")
            else:
                try:  # re-written by orjson: a value PostgreSQL cannot hold is refused here
                    text = orjson.dumps(orjson.loads(text)).decode()
                except (orjson.JSONDecodeError, orjson.JSONEncodeError):
                    raise invalid_token() from None
                if "\\u0000" in text:
                    raise invalid_token()
                last = args.add_json(text)
            where.append(f"({key}, id) {'<' if sort.descending else '>'} "
                         f"({last}, {args.add(last_id, 'uuid')})")
        counted = f", ({count_sql}) AS {TOTAL_COLUMN}" if pagination.include_total else ""
        order = " DESC" if sort.descending else ""
        limit = args.add(pagination.page_size + 1, "int4")
        sql = (f"SELECT {cls.read_columns}{extra}, {key} AS {SORT_KEY_COLUMN}{counted} FROM nodes "
               f"WHERE {' AND '.join(where)} ORDER BY {key}{order}, id{order} LIMIT {limit}")
        if max_bytes is not None:  # (a snippet counts at its largest)
            size = f"{cls.size_sql} + {SNIPPET_BYTES}" if highlight else cls.size_sql
            sql = within_bytes(sql, size, args.add(max_bytes, "int8"))
        return PageStatement(sql, args.values, count_sql, count_args)

    async def query(self, tenant_id: UUID, node_type_id: UUID | None, condition: str,
                    args: SqlArgs, sort: NodeSort, pagination: PageRequest,
                    max_bytes: int | None = None, search: SearchSql | None = None,
                    highlight: bool = False) -> Page:
        statement = self.query_statement(tenant_id, node_type_id, condition, args, sort,
                                         pagination, max_bytes, search, highlight)
        rows = await self.conn.fetch(statement.sql, *statement.args)
        cut, used = False, 0
        if max_bytes is not None:
            rows, cut, used = cut_to_budget(rows, max_bytes)
        next_token = ""
        if len(rows) > pagination.page_size or cut:
            rows = rows[:pagination.page_size]
            last_row = rows[-1]
            value = last_row[SORT_KEY_COLUMN]
            next_token = encode_token(sort.scope, repr(value) if sort.rank else value
                                      if sort.column else orjson.dumps(value).decode(),
                                      last_row["id"])
        total = rows[0][TOTAL_COLUMN] if pagination.include_total and rows else None
        if pagination.include_total and not rows:
            total = await self.conn.fetchval(statement.count_sql, *statement.count_args)
        if not sort.rank and not highlight:
            # the rows as they are: the shaper leaves out the columns the read added
            # (api/shaping.py LEFT_OUT), without a dict made per row here
            return Page(rows, next_token, total, used)
        hidden = (SORT_KEY_COLUMN, TOTAL_COLUMN, *BUDGET_COLUMNS)
        items = [{k: v for k, v in r.items() if k not in hidden} for r in rows]
        if sort.rank:
            for item, row in zip(items, rows):
                item["rank"] = row[SORT_KEY_COLUMN]
        if highlight:
            for item in items:
                item["snippet"] = html_snippet(item["snippet"])
        return Page(items, next_token, total, used)
