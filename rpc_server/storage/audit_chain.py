"""What each stored audit event's hash covers: the event's fields in one canonical form,
chained to the previous event's hash (the first one to GENESIS). The repository
(storage/repositories/audit.py) appends and verifies with these; nothing else may change them
without breaking every stored chain."""
from __future__ import annotations

import hashlib
from datetime import timezone
from typing import Any

import orjson

GENESIS = b"\x00" * 32


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
