from __future__ import annotations

from uuid import UUID

import asyncpg

from rpc_server.storage.pagination import Page, PageRequest, fetch_page
from rpc_server.storage.repositories.base import Repository


class RelationshipRepository(Repository):
    table = "relationships"
    kind = "relationship"
    key_columns = ("tenant_id", "id")
    columns = ("id, tenant_id, source_node_id, target_node_id, relationship_type, data, "
               "created_at, updated_at, version")
    read_columns = columns.replace("data,", "data::text AS data,")
    document = "data"
    size_sql = f"octet_length({document})"

    # For Call.write: $1 tenant, $2 id, $3 source, $4 target, $5 type, $6 data.
    INSERT = ("INSERT INTO relationships (tenant_id, id, source_node_id, target_node_id, "
              "relationship_type, data) VALUES ($1, $2, $3, $4, $5, $6) RETURNING "
              + read_columns)

    async def create_many(self, tenant_id: UUID, ids: list[UUID], sources: list[UUID],
                          targets: list[UUID], types: list[str],
                          datas: list[dict]) -> list[asyncpg.Record]:
        """One set-based INSERT; rows come back in input order."""
        rows = await self.conn.fetch(
            "INSERT INTO relationships "
            "(tenant_id, id, source_node_id, target_node_id, relationship_type, data) "
            "SELECT $1, i.id, i.source, i.target, i.type, i.data "
            "FROM unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::jsonb[]) "
            "AS i (id, source, target, type, data) "
            f"RETURNING {self.read_columns}", tenant_id, ids, sources, targets, types, datas)
        by_id = {r["id"]: r for r in rows}
        return [by_id[i] for i in ids]

    async def get(self, tenant_id: UUID, relationship_id: UUID) -> asyncpg.Record:
        return await self._require(tenant_id, relationship_id)

    async def update(self, tenant_id: UUID, relationship_id: UUID, changes: dict,
                     expected_version: int | None) -> asyncpg.Record:
        return await self._update((tenant_id, relationship_id), changes, expected_version)

    async def delete(self, tenant_id: UUID, relationship_id: UUID) -> None:
        await self._delete(tenant_id, relationship_id)

    async def list(self, tenant_id: UUID, pagination: PageRequest,
                   source_node_id: UUID | None = None, target_node_id: UUID | None = None,
                   relationship_type: str | None = None, max_bytes: int | None = None) -> Page:
        where = ["tenant_id = $1"]
        args: list[object] = [tenant_id]
        for column, value in (("source_node_id", source_node_id),
                              ("target_node_id", target_node_id),
                              ("relationship_type", relationship_type)):
            if value is not None:
                args.append(value)
                where.append(f"{column} = ${len(args)}")
        return await fetch_page(self.conn, scope="relationships", select=self.read_columns,
                                table="relationships", where=where, args=args,
                                pagination=pagination, size_sql=self.size_sql,
                                max_bytes=max_bytes, document=self.document)
