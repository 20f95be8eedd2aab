from __future__ import annotations

import builtins  # `list` in AuditRepository names its method
import re
import uuid
from datetime import datetime
from functools import lru_cache
from typing import NamedTuple, get_args, get_type_hints
from uuid import UUID

from rpc_server.storage import audit_chain as audit
from rpc_server.storage.pagination import (
    TOTAL_COLUMN,
    Page,
    PageRequest,
    decode_token_text,
    encode_token,
    invalid_token,
)
from rpc_server.storage.repositories.base import Repository

CHAIN_BATCH = 1000  # events chained per transaction
SEQ_TEXT = re.compile(r"[0-9]{1,18}")  # a page token's seq: ASCII digits, within bigint
class PendingEvent(NamedTuple):
    """One audit event as audit_pending stores it (the fields are its columns, in order;
    a tuple, so it is passed as the statement's parameters as it is)."""
    tenant_id: uuid.UUID
    id: uuid.UUID
    created_at: datetime
    actor_user_id: uuid.UUID | None
    actor_key_id: uuid.UUID | None
    method: str
    target_kind: str | None
    target_id: str | None
    outcome: str
    request_id: str | None
    summary: str


PENDING_COLUMNS = PendingEvent._fields
# Each column's SQL type (from its annotation), for the parameters of with_event's INSERT.
PENDING_TYPES = tuple(
    {UUID: "uuid", datetime: "timestamptz"}.get((get_args(hint) or (hint,))[0], "text")
    for hint in get_type_hints(PendingEvent).values())


@lru_cache(maxsize=256)
def with_event(change_sql: str, first_param: int) -> str:
    """`change_sql` (one INSERT/UPDATE/DELETE … RETURNING) and, in the same statement (so
    one transaction: both or neither), the recording of its audit event, whose values are
    the parameters from `first_param` on (in PENDING_COLUMNS order, then the id of the
    pipeline run whose token made the change, or NULL). The event is recorded only when the
    change returned a row; the statement returns the change's rows."""
    values = ", ".join(f"${first_param + i}::{t}" for i, t in enumerate(PENDING_TYPES))
    # The change feed's triggers run after the whole statement (CTEs included), so the
    # actor noted here is on the change's events (sql/0015_change_feed.sql).
    user, key = (f"${first_param + PENDING_COLUMNS.index(c)}::uuid"
                 for c in ("actor_user_id", "actor_key_id"))
    run = f"${first_param + len(PENDING_COLUMNS)}::uuid"  # the run whose token made it
    return (f"WITH change AS ({change_sql}), event AS ("
            f"INSERT INTO audit_pending ({', '.join(PENDING_COLUMNS)}) "
            f"SELECT {values} WHERE EXISTS (SELECT 1 FROM change) "
            f"AND flexdb_note_actor({user}, {key}, {run})) SELECT * FROM change")


class AuditRepository(Repository):
    table = "audit_events"
    kind = "audit_event"
    key_columns = ("tenant_id", "id")
    columns = ("id, tenant_id, seq, created_at, actor_user_id, actor_key_id, method, "
               "target_kind, target_id, outcome, request_id, summary, encode(hash, 'hex') AS hash")

    async def list(self, tenant_id: UUID, pagination: PageRequest, *, actor: UUID | None,
                   method: str | None, target_id: str | None, since: datetime | None,
                   until: datetime | None) -> Page:
        """Events in chain order (seq), filtered; keyset pagination on seq."""
        where = ["tenant_id = $1"]
        args: list[object] = [tenant_id]
        for condition, value in (("actor_user_id = ${}", actor), ("method = ${}", method),
                                 ("target_id = ${}", target_id), ("created_at >= ${}", since),
                                 ("created_at < ${}", until)):
            if value is not None:
                args.append(value)
                where.append(condition.format(len(args)))
        count_sql = f"SELECT count(*) FROM audit_events WHERE {' AND '.join(where)}"
        filters, page_args = list(where), list(args)
        if pagination.page_token:
            text, _ = decode_token_text(pagination.page_token, "audit_events")
            if not SEQ_TEXT.fullmatch(text):
                raise invalid_token()
            page_args.append(int(text))
            filters.append(f"seq > ${len(page_args)}")
        counted = f", ({count_sql}) AS {TOTAL_COLUMN}" if pagination.include_total else ""
        page_args.append(pagination.page_size + 1)
        rows = await self.conn.fetch(
            f"SELECT {self.columns}{counted} FROM audit_events WHERE {' AND '.join(filters)} "
            f"ORDER BY seq LIMIT ${len(page_args)}", *page_args)
        next_token = ""
        if len(rows) > pagination.page_size:
            rows = rows[:pagination.page_size]
            next_token = encode_token("audit_events", str(rows[-1]["seq"]), rows[-1]["id"])
        total = None
        if pagination.include_total:
            total = rows[0][TOTAL_COLUMN] if rows else await self.conn.fetchval(count_sql, *args)
        return Page(rows, next_token, total)

    async def append(self, event: PendingEvent) -> None:
        """Record one event; call inside the change's
        transaction. It waits in audit_pending (no lock) until chain_pending puts it on the
        tenant's chain, right after commit."""
        await self.conn.execute(
            f"INSERT INTO audit_pending ({', '.join(PENDING_COLUMNS)}) "
            f"VALUES ({', '.join(f'${i}' for i in range(1, len(PENDING_COLUMNS) + 1))})",
            *event)

    async def chain_pending(self, tenant_id: uuid.UUID, limit: int = CHAIN_BATCH) -> int:
        """Move up to `limit` of the tenant's pending events onto its chain, in the order
        they were recorded; call inside a transaction. Locks the chain head until commit,
        so two servers never chain one tenant at once. Returns how many were chained."""
        head = await self._fetch_one(
            "INSERT INTO audit_chain_heads (tenant_id, seq, hash) VALUES ($1, 0, $2) "
            "ON CONFLICT (tenant_id) DO UPDATE SET seq = audit_chain_heads.seq "
            "RETURNING seq, hash", tenant_id, audit.GENESIS)
        rows = await self.conn.fetch(
            "DELETE FROM audit_pending WHERE tenant_id = $1 AND pending_id = ANY(ARRAY("
            "SELECT pending_id FROM audit_pending WHERE tenant_id = $1 ORDER BY pending_id "
            "LIMIT $2)) RETURNING *", tenant_id, limit)
        if not rows:
            return 0
        seq, prev = head["seq"], head["hash"]
        records = []
        for row in sorted(rows, key=lambda r: r["pending_id"]):
            seq += 1
            event = {**dict(row), "seq": seq}
            digest = audit.event_hash(prev, audit.hashed_fields(event))
            records.append((tenant_id, seq, row["id"], row["created_at"], row["actor_user_id"],
                            row["actor_key_id"], row["method"], row["target_kind"],
                            row["target_id"], row["outcome"], row["request_id"],
                            row["summary"], prev, digest))
            prev = digest
        await self.conn.copy_records_to_table("audit_events", records=records, columns=(
            "tenant_id", "seq", "id", "created_at", "actor_user_id", "actor_key_id", "method",
            "target_kind", "target_id", "outcome", "request_id", "summary", "prev_hash",
            "hash"))
        await self.conn.execute("UPDATE audit_chain_heads SET seq = $2, hash = $3 "
                                "WHERE tenant_id = $1", tenant_id, seq, prev)
        return len(rows)

    async def pending_tenants(self, limit: int = 1000) -> builtins.list[uuid.UUID]:
        """Tenants with events waiting to be chained."""
        rows = await self.conn.fetch(
            "SELECT DISTINCT tenant_id FROM audit_pending LIMIT $1", limit)
        return [r["tenant_id"] for r in rows]

    async def has_pending(self, tenant_id: uuid.UUID) -> bool:
        return await self.conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM audit_pending WHERE tenant_id = $1)", tenant_id)

    async def verify(self, tenant_id: uuid.UUID, batch: int = 250) -> dict:
        """Walk the chain in order; report the first event that does not fit. A batch's
        hashes take ~2 ms of the event loop between reads."""
        prev, expected_seq, last_seq = audit.GENESIS, 1, 0
        while True:
            rows = await self.conn.fetch(
                "SELECT * FROM audit_events WHERE tenant_id = $1 AND seq >= $2"
                " ORDER BY seq LIMIT $3",
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
        head = await self.conn.fetchrow(
            "SELECT seq, hash FROM audit_chain_heads WHERE tenant_id = $1", tenant_id)
        if head is not None and (head["seq"] != last_seq or head["hash"] != prev):
            return {"ok": False, "events_checked": last_seq, "first_broken_seq": last_seq + 1,
                    "event_id": None, "reason": "events at the end of the chain are missing"}
        return {"ok": True, "events_checked": last_seq}
