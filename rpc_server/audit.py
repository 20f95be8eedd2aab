"""The audit trail's rules: what an event's hash covers, how params are redacted, and the
interval refused calls are counted over (denied_calls.py). The SQL is in
repositories/audit.py.

hash = sha256(prev_hash || canonical JSON of the event), where the event includes its
tenant, sequence number, time, actor, method, target, outcome, request id and the redacted
params summary (stored as the exact canonical text that was hashed)."""
from __future__ import annotations

import hashlib
import time
import uuid
from datetime import timezone
from typing import Any

import orjson

PLATFORM_TENANT = uuid.UUID(int=0)
GENESIS = b"\x00" * 32
SECRET_WORDS = ("secret", "password", "token", "key")
DOCUMENT_FIELDS = ("data", "schema", "schema_")
MAX_TEXT = 200
DENIED_WINDOW_S = 60.0


def params_of(model: Any) -> dict:
    """A call's params by wire name, as summarize needs them: lists (only their length is
    kept) and documents are not converted, so a bulk call is not dumped item by item."""
    if model is None:
        return {}
    out: dict[str, Any] = {}
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        key = field.alias or name
        if value is None or isinstance(value, (str, int, float, list)) or (
                isinstance(value, dict) and key in DOCUMENT_FIELDS):
            out[key] = value
        else:  # ids, times, nested models: their JSON form
            out[key] = model.model_dump(by_alias=True, mode="json", include={name})[key]
    return out


def summarize(params: dict) -> str:
    """Canonical JSON of the params with secrets removed and documents reduced to a size."""
    out: dict[str, Any] = {}
    for name, value in params.items():
        if any(word in name.lower() for word in SECRET_WORDS):
            out[name] = "[redacted]"
        elif name in DOCUMENT_FIELDS:
            out[name] = value if value is None or type(value) is bool \
                else f"<{type(value).__name__} of {len(value)}>"  # (a schema may be a bool)
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

