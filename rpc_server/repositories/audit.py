from __future__ import annotations

import uuid
from datetime import datetime, timezone
from uuid import UUID

from .. import audit
from ..pagination import Page, fetch_page
from ..params import Pagination
from .base import Repository


class AuditRepository(Repository):
    table = "audit_events"
    kind = "audit_event"
    key_columns = ("tenant_id", "id")
    columns = ("id, tenant_id, seq, created_at, actor_user_id, actor_key_id, method, "
               "target_kind, target_id, outcome, request_id, summary, encode(hash, 'hex') AS hash")

    async def list(self, tenant_id: UUID, pagination: Pagination, *, actor: UUID | None,
                   method: str | None, target_id: str | None, since: datetime | None,
                   until: datetime | None) -> Page:
        where, args = ["tenant_id = $1"], [tenant_id]
        for condition, value in (("actor_user_id = ${}", actor), ("method = ${}", method),
                                 ("target_id = ${}", target_id), ("created_at >= ${}", since),
                                 ("created_at < ${}", until)):
            if value is not None:
                args.append(value)
                where.append(condition.format(len(args)))
        return await fetch_page(self.conn, scope="audit_events", select=self.columns,
                                table="audit_events", where=where, args=args,
                                pagination=pagination)

    async def append(self, *, tenant_id: uuid.UUID, actor_user_id, actor_key_id,
                     method: str, target_kind: str | None, target_id: str | None, outcome: str,
                     request_id: str, summary: str) -> None:
        """Append one event to the tenant's chain; call inside the change's transaction.
        Locks the chain head until commit, so writers of one tenant take turns."""
        head = await self.conn.fetchrow(
            "INSERT INTO audit_chain_heads (tenant_id, seq, hash) VALUES ($1, 0, $2) "
            "ON CONFLICT (tenant_id) DO UPDATE SET seq = audit_chain_heads.seq "
            "RETURNING seq, hash", tenant_id, audit.GENESIS)
        event = {"tenant_id": tenant_id, "seq": head["seq"] + 1, "id": uuid.uuid4(),
                 "created_at": datetime.now(timezone.utc), "actor_user_id": actor_user_id,
                 "actor_key_id": actor_key_id, "method": method, "target_kind": target_kind,
                 "target_id": target_id, "outcome": outcome, "request_id": request_id,
                 "summary": summary}
        digest = audit.event_hash(head["hash"], audit.hashed_fields(event))
        await self.conn.execute(
            "WITH e AS (INSERT INTO audit_events (tenant_id, seq, id, created_at, actor_user_id, "
            "actor_key_id, method, target_kind, target_id, outcome, request_id, summary, "
            "prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) "
            "RETURNING 1) "
            "UPDATE audit_chain_heads SET seq = $2, hash = $14 WHERE tenant_id = $1",
            tenant_id, event["seq"], event["id"], event["created_at"], actor_user_id, actor_key_id,
            method, target_kind, target_id, outcome, request_id, summary, head["hash"], digest)


    async def verify(self, tenant_id: uuid.UUID, batch: int = 1000) -> dict:
        """Walk the chain in order; report the first event that does not fit."""
        prev, expected_seq, last_seq = audit.GENESIS, 1, 0
        while True:
            rows = await self.conn.fetch(
                "SELECT * FROM audit_events WHERE tenant_id = $1 AND seq >= $2 ORDER BY seq LIMIT $3",
                tenant_id, expected_seq, batch)
            for row in rows:
                reason = None
                if row["seq"] != expected_seq:
                    reason = f"event {expected_seq} is missing"
                elif row["prev_hash"] != prev:
                    reason = "prev_hash does not match the previous event"
                elif row["hash"] != audit.event_hash(prev, audit.hashed_fields(row)):
                    reason = "the event's content does not match its hash"
                if reason:
                    return {"ok": False, "events_checked": expected_seq - 1,
                            "first_broken_seq": expected_seq, "event_id": str(row["id"]),
                            "reason": reason}
                prev, expected_seq, last_seq = row["hash"], expected_seq + 1, row["seq"]
            if len(rows) < batch:
                break
        head = await self.conn.fetchrow("SELECT seq, hash FROM audit_chain_heads WHERE tenant_id = $1",
                                   tenant_id)
        if head is not None and (head["seq"] != last_seq or head["hash"] != prev):
            return {"ok": False, "events_checked": last_seq, "first_broken_seq": last_seq + 1,
                    "event_id": None, "reason": "events at the end of the chain are missing"}
        return {"ok": True, "events_checked": last_seq}
