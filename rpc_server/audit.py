"""The audit trail: events appended in the caller's transaction, hash-chained per tenant.

hash = sha256(prev_hash || canonical JSON of the event), where the event includes its
tenant, sequence number, time, actor, method, target, outcome, request id and the redacted
params summary (stored as the exact canonical text that was hashed)."""
from __future__ import annotations

import hashlib
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import asyncpg
import orjson

PLATFORM_TENANT = uuid.UUID(int=0)
GENESIS = b"\x00" * 32
SECRET_WORDS = ("secret", "password", "token", "key")
DOCUMENT_FIELDS = ("data", "schema", "schema_")
MAX_TEXT = 200
DENIED_WINDOW_S = 60.0


def summarize(params: dict) -> str:
    """Canonical JSON of the params with secrets removed and documents reduced to a size."""
    out: dict[str, Any] = {}
    for name, value in params.items():
        if any(word in name.lower() for word in SECRET_WORDS) and name != "api_key_id":
            out[name] = "[redacted]"
        elif name in DOCUMENT_FIELDS:
            out[name] = None if value is None else f"<{type(value).__name__} of {len(value)}>"
        elif isinstance(value, list):
            out[name] = f"<{len(value)} items>"
        elif isinstance(value, dict):
            out[name] = {k: v for k, v in value.items() if not isinstance(v, (dict, list))}
        elif isinstance(value, str) and len(value) > MAX_TEXT:
            out[name] = value[:MAX_TEXT] + "…"
        else:
            out[name] = value
    return canonical(out)


def canonical(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str).decode()


def event_hash(prev_hash: bytes, event: dict) -> bytes:
    return hashlib.sha256(prev_hash + canonical(event).encode()).digest()


def hashed_fields(row: Any) -> dict:
    """The fields the hash covers, from a row or a new event, in one canonical form."""
    created = row["created_at"].astimezone(timezone.utc).isoformat()
    return {"tenant_id": str(row["tenant_id"]), "seq": row["seq"], "id": str(row["id"]),
            "created_at": created,
            "actor_user_id": None if row["actor_user_id"] is None else str(row["actor_user_id"]),
            "actor_key_id": None if row["actor_key_id"] is None else str(row["actor_key_id"]),
            "method": row["method"], "target_kind": row["target_kind"],
            "target_id": row["target_id"], "outcome": row["outcome"],
            "request_id": row["request_id"], "summary": row["summary"]}


async def append(conn: asyncpg.Connection, *, tenant_id: uuid.UUID, actor_user_id, actor_key_id,
                 method: str, target_kind: str | None, target_id: str | None, outcome: str,
                 request_id: str, summary: str) -> None:
    """Append one event to the tenant's chain; call inside the change's transaction.
    Locks the chain head until commit, so writers of one tenant take turns."""
    head = await conn.fetchrow(
        "INSERT INTO audit_chain_heads (tenant_id, seq, hash) VALUES ($1, 0, $2) "
        "ON CONFLICT (tenant_id) DO UPDATE SET seq = audit_chain_heads.seq "
        "RETURNING seq, hash", tenant_id, GENESIS)
    event = {"tenant_id": tenant_id, "seq": head["seq"] + 1, "id": uuid.uuid4(),
             "created_at": datetime.now(timezone.utc), "actor_user_id": actor_user_id,
             "actor_key_id": actor_key_id, "method": method, "target_kind": target_kind,
             "target_id": target_id, "outcome": outcome, "request_id": request_id,
             "summary": summary}
    digest = event_hash(head["hash"], hashed_fields(event))
    await conn.execute(
        "WITH e AS (INSERT INTO audit_events (tenant_id, seq, id, created_at, actor_user_id, "
        "actor_key_id, method, target_kind, target_id, outcome, request_id, summary, "
        "prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) "
        "RETURNING 1) "
        "UPDATE audit_chain_heads SET seq = $2, hash = $14 WHERE tenant_id = $1",
        tenant_id, event["seq"], event["id"], event["created_at"], actor_user_id, actor_key_id,
        method, target_kind, target_id, outcome, request_id, summary, head["hash"], digest)


async def verify(conn: asyncpg.Connection, tenant_id: uuid.UUID, batch: int = 1000) -> dict:
    """Walk the chain in order; report the first event that does not fit."""
    prev, expected_seq, last_seq = GENESIS, 1, 0
    while True:
        rows = await conn.fetch(
            "SELECT * FROM audit_events WHERE tenant_id = $1 AND seq >= $2 ORDER BY seq LIMIT $3",
            tenant_id, expected_seq, batch)
        for row in rows:
            reason = None
            if row["seq"] != expected_seq:
                reason = f"event {expected_seq} is missing"
            elif row["prev_hash"] != prev:
                reason = "prev_hash does not match the previous event"
            elif row["hash"] != event_hash(prev, hashed_fields(row)):
                reason = "the event's content does not match its hash"
            if reason:
                return {"ok": False, "events_checked": expected_seq - 1,
                        "first_broken_seq": expected_seq, "event_id": str(row["id"]),
                        "reason": reason}
            prev, expected_seq, last_seq = row["hash"], expected_seq + 1, row["seq"]
        if len(rows) < batch:
            break
    head = await conn.fetchrow("SELECT seq, hash FROM audit_chain_heads WHERE tenant_id = $1",
                               tenant_id)
    if head is not None and (head["seq"] != last_seq or head["hash"] != prev):
        return {"ok": False, "events_checked": last_seq, "first_broken_seq": last_seq + 1,
                "event_id": None, "reason": "events at the end of the chain are missing"}
    return {"ok": True, "events_checked": last_seq}


class DeniedLimiter:
    """At most one denied-attempt event per (actor, method, tenant) a minute; the next one
    carries how many were left out."""

    def __init__(self, window: float = DENIED_WINDOW_S, size: int = 10_000):
        self.window, self.size = window, size
        self._seen: dict[tuple, tuple[float, int]] = {}

    def admit(self, key: tuple) -> int | None:
        """None to skip; otherwise the number of attempts suppressed since the last event."""
        now = time.monotonic()
        started, suppressed = self._seen.get(key, (0.0, 0))
        if now - started < self.window:
            self._seen[key] = (started, suppressed + 1)
            return None
        if len(self._seen) >= self.size:
            self._seen.clear()
        self._seen[key] = (now, 0)
        return suppressed
