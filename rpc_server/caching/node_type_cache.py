"""The node types writes validate against ({tenant_id, id, version, schema}), cached so that
create_node makes one round trip. The cache never decides what is valid on its own: the
INSERT checks that the node type still has the version the data was validated against
(NodeRepository.create_checked), and update_node reads the version in its transaction, so a
stale entry costs a re-read, never a node validated against an old schema. A change of a
node type drops its entry here and, through Redis pub/sub, on every instance; with Redis, a
lookup missing here is tried in the shared cache before the database."""
from __future__ import annotations

from uuid import UUID

import orjson

from rpc_server.caching.shared_cache import MISSING, SharedCache
from rpc_server.caching.ttl_cache import TTLCache, parsed_json_bytes
from rpc_server.storage.db import Connection
from rpc_server.storage.repositories import NodeTypeRepository

SIZE = 4096


class NodeTypeCache:
    kinds = frozenset({"node_type"})  # the invalidation messages `apply` acts on
    announce = None  # set when Redis is configured: tells the other instances

    def __init__(self, ttl_s: float, max_bytes: int):
        self.local = TTLCache(ttl_s, SIZE, max_bytes)  # (schemas may be large: by bytes too)
        self.shared: SharedCache | None = None  # set when Redis is configured

    async def get(self, conn: Connection, tenant_id: UUID, node_type_id: UUID,
                  version: int | None = None) -> dict:
        """The node type (NotFound if it does not exist). With `version` (read from the
        database in the caller's transaction), an entry of another version is not used."""
        key = (tenant_id, node_type_id)
        hit = self.local.get(key)
        if hit is not None and version in (None, hit[0]["version"]):
            return hit[0]
        generation = None
        if self.shared is not None:
            value, generation, _ = await self.shared.get("node_type",
                                                         f"{tenant_id}:{node_type_id}")
            if value is not MISSING and version in (None, value["version"]):
                entry = {"tenant_id": tenant_id, "id": node_type_id, **value}
                self._keep(key, entry)
                return entry
        return await self.read(conn, tenant_id, node_type_id, generation)

    async def read(self, conn: Connection, tenant_id: UUID, node_type_id: UUID,
                   generation: int | None = None) -> dict:
        """The node type as the database has it now, which then replaces the cached one."""
        row = await NodeTypeRepository(conn).get(tenant_id, node_type_id)
        entry = {"tenant_id": tenant_id, "id": node_type_id, "version": row["version"],
                 "schema": row["schema"], "embedding": row["embedding"]}
        self._keep((tenant_id, node_type_id), entry)
        if self.shared is not None:
            await self.shared.put("node_type", f"{tenant_id}:{node_type_id}",
                                  {"version": row["version"], "schema": row["schema"],
                                   "embedding": row["embedding"]}, generation)
        return entry

    def _keep(self, key: tuple[UUID, UUID], entry: dict) -> None:
        self.local.put(key, entry, size=parsed_json_bytes(orjson.dumps(entry["schema"])))

    def forget(self, tenant_id: UUID, node_type_id: UUID) -> None:
        """After a node type changed or was deleted (and the change committed)."""
        self.apply("node_type", tenant_id, node_type_id)
        if self.announce is not None:
            self.announce("node_type", tenant_id, node_type_id)

    def apply(self, kind: str, *ids: UUID) -> None:
        if kind == "node_type":
            self.local.drop((ids[0], ids[1]))
