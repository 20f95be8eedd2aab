"""The change feed's SQL (sql/0015_change_feed.sql records the events): numbering committed
events, reading a tenant's events after a position, dropping old ones."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from rpc_server.storage.repositories.base import Repository

# Notified (payload "<tenant id>:<last position>") each time a tenant's events are numbered.
CHANNEL = "flexdb_changes"
# Each position's event: change_positions p, then EVENTS_OF_POSITIONS. A lateral lookup by the
# event's whole key, kept apart (OFFSET 0) so that the plan cannot join on tenant_id alone:
# planned while a tenant's tables were still empty (a new database, a prepared statement's
# generic plan), that join read every event of the tenant for each position, and each hub
# read of a busy new tenant took longer than the last.
EVENTS_OF_POSITIONS = ("CROSS JOIN LATERAL (SELECT * FROM change_events e "
                       "WHERE e.tenant_id = p.tenant_id AND e.seq = p.seq OFFSET 0) AS e")
# An event's columns but its object (read within a byte budget, see read()), over
# change_positions p and EVENTS_OF_POSITIONS.
EVENT_FIELDS = ("p.position, e.occurred_at, e.operation, e.kind, e.object_id, e.version, "
                "e.actor_user_id, e.actor_key_id, e.actor_run_id, e.node_type_id, "
                "e.relationship_type, "
                "e.object_bytes")
# What an event costs in a response beside its object (ids, times, names).
EVENT_OVERHEAD = 512


@dataclass(frozen=True)
class ChangeWindow:
    """What one read saw, in one snapshot: the tenant's last position, the position through
    which retention dropped events, the events read, and the position through which the read
    looked (`after` of the next read)."""
    head: int
    trimmed_through: int
    rows: list[asyncpg.Record]
    scanned_to: int


@dataclass(frozen=True)
class EventFilter:
    """Which events a read returns (None: any)."""
    kinds: list[str] | None = None
    operations: list[str] | None = None
    node_type_id: UUID | None = None
    relationship_type: str | None = None


class ChangeRepository(Repository):
    table = "change_events"
    kind = "change"
    key_columns = ("tenant_id", "seq")

    async def note_actor(self, user_id: UUID | None, key_id: UUID | None,
                         run_id: UUID | None) -> None:
        """Name the caller (and the pipeline run whose token it used) on the events of this
        transaction's changes."""
        await self.conn.execute("SELECT flexdb_note_actor($1::uuid, $2::uuid, $3::uuid)",
                                user_id, key_id, run_id)

    async def sequence(self, tenant_id: UUID, batch: int) -> int:
        """Number up to `batch` of the tenant's committed events; how many it numbered."""
        return await self.conn.fetchval("SELECT flexdb_sequence_changes($1, $2)",
                                        tenant_id, batch)

    async def has_pending(self, tenant_id: UUID) -> bool:
        """Whether the tenant has committed events not numbered yet."""
        return bool(await self.conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM change_pending WHERE tenant_id = $1)", tenant_id))

    async def pending_tenants(self) -> list[UUID]:
        rows = await self.conn.fetch(
            "SELECT DISTINCT tenant_id FROM change_pending")
        return [r["tenant_id"] for r in rows]

    async def head(self, tenant_id: UUID) -> tuple[int, int]:
        """(last position, trimmed through) of the tenant: (0, 0) before its first event."""
        row = await self.conn.fetchrow(
            "SELECT last_position, trimmed_through FROM change_heads WHERE tenant_id = $1",
            tenant_id)
        return (row["last_position"], row["trimmed_through"]) if row else (0, 0)

    async def read(self, tenant_id: UUID, after: int | None, limit: int, scan: int,
                   only: EventFilter | None = None, max_bytes: int = 2**62,
                   for_trigger: bool = False) -> ChangeWindow:
        """Events after position `after` (None: after the last one dropped by retention),
        at most `limit` of those matching `only`, looking at no more than `scan` positions
        (a filter that matches little costs a bounded read), and stopping before the objects
        would pass `max_bytes` (each counted with EVENT_OVERHEAD; the first event always comes
        whole). One statement, so the head, the trimmed mark and the events come from one
        snapshot. `for_trigger`: leave out the changes of runs that triggers started (they
        fire no trigger: none can loop)."""
        only = only or EventFilter()
        rows = await self.conn.fetch(
            "SELECT h.last_position AS _head, h.trimmed_through AS _trimmed, "
            "least(h.last_position, coalesce($2, h.trimmed_through) + $4) AS _scan_end, e.* "
            "FROM change_heads h LEFT JOIN LATERAL ("
            f"  SELECT {EVENT_FIELDS}, "
            "  CASE WHEN sum(e.object_bytes + $10) OVER w <= $9 OR row_number() OVER w = 1 "
            "  THEN e.object::text END AS object, "
            "  sum(e.object_bytes + $10) OVER w > $9 AND row_number() OVER w > 1 AS _cut "
            f"  FROM change_positions p {EVENTS_OF_POSITIONS} "
            "  WHERE p.tenant_id = h.tenant_id "
            "  AND p.position > coalesce($2, h.trimmed_through) "
            "  AND p.position <= least(h.last_position, coalesce($2, h.trimmed_through) + $4) "
            "  AND ($5::text[] IS NULL OR e.kind = ANY($5)) "
            "  AND ($6::text[] IS NULL OR e.operation = ANY($6)) "
            "  AND ($7::uuid IS NULL OR e.node_type_id = $7) "
            "  AND ($8::text IS NULL OR e.relationship_type = $8) "
            "  AND NOT ($11 AND e.actor_run_id IS NOT NULL AND EXISTS (SELECT 1 "
            "    FROM pipeline_runs r WHERE r.tenant_id = p.tenant_id "
            "    AND r.id = e.actor_run_id AND r.started_by_trigger IS NOT NULL)) "
            "  WINDOW w AS (ORDER BY p.position) ORDER BY p.position LIMIT $3) AS e ON true "
            "WHERE h.tenant_id = $1",
            tenant_id, after, limit, scan, only.kinds, only.operations, only.node_type_id,
            only.relationship_type, max_bytes, EVENT_OVERHEAD, for_trigger)
        if not rows:  # no event yet
            return ChangeWindow(0, 0, [], 0 if after is None else after)
        first = rows[0]
        events = [r for r in rows if r["position"] is not None]
        scanned_to = first["_scan_end"]
        kept = [r for r in events if not r["_cut"]]
        if len(kept) < len(events) or len(events) == limit:
            # stopped by size or by the limit: the next read goes on after the last one kept
            scanned_to = kept[-1]["position"]
        start = first["_trimmed"] if after is None else after
        return ChangeWindow(first["_head"], first["_trimmed"], kept, max(scanned_to, start))

    async def trim(self, tenant_id: UUID, keep: int, before: datetime, batch: int) -> int:
        """Drop up to `batch` of the tenant's oldest events that are beyond the last `keep` or
        older than `before`; how many it dropped. The trimmed mark moves in the same
        transaction, so a reader sees either the events or the mark past them."""
        async with self.conn.transaction():
            row = await self.conn.fetchrow(
                "SELECT last_position, trimmed_through FROM change_heads "
                "WHERE tenant_id = $1 FOR UPDATE", tenant_id)
            if row is None:
                return 0
            # Positions are dense: the oldest events are the `batch` after the mark; the cut
            # is the last of them that is beyond the count or too old.
            cut = await self.conn.fetchval(
                "SELECT max(position) FROM (SELECT p.position, e.occurred_at "
                f"FROM change_positions p {EVENTS_OF_POSITIONS} "
                "WHERE p.tenant_id = $1 AND p.position > $2 ORDER BY p.position LIMIT $3) "
                "AS oldest WHERE position <= $4 OR occurred_at < $5",
                tenant_id, row["trimmed_through"], batch, row["last_position"] - keep, before)
            if cut is None:
                return 0
            await self.conn.execute(
                "UPDATE change_heads SET trimmed_through = $2 WHERE tenant_id = $1",
                tenant_id, cut)
            status = await self.conn.execute(
                "WITH dropped AS (DELETE FROM change_positions WHERE tenant_id = $1 "
                "AND position > $2 AND position <= $3 RETURNING seq) "
                "DELETE FROM change_events WHERE tenant_id = $1 "
                "AND seq IN (SELECT seq FROM dropped)", tenant_id, row["trimmed_through"], cut)
            return int(status.split()[-1])

    async def tenants(self) -> list[UUID]:
        """Tenants that have had events."""
        return [r["tenant_id"] for r in await self.conn.fetch("SELECT tenant_id FROM change_heads")]

    async def forget_tenant(self, tenant_id: UUID) -> None:
        """A deleted tenant's feed goes with it."""
        # The head row first: the sequencer and retention lock it before the other tables,
        # and taking the locks in the same order is what keeps this from deadlocking with
        # them (it waits for a numbering in flight instead).
        for table in ("change_heads", "change_pending", "change_positions", "change_events"):
            await self.conn.execute(f"DELETE FROM {table} WHERE tenant_id = $1", tenant_id)
