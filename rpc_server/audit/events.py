"""The audit trail's rules: how params are redacted into an event's summary (stored as the
exact canonical text its hash covers: storage/audit_chain.py) and the platform tenant that
platform events belong to. Refused calls are counted apart (audit/denied_calls.py). The SQL
is in storage/repositories/audit.py."""
from __future__ import annotations

import re
import uuid
from typing import Any

from rpc_server.storage.audit_chain import canonical

PLATFORM_TENANT = uuid.UUID(int=0)
# Matched in a key folded to lower case letters and digits ("key" covers api_key,
# private_key and X-Api-Key; "token" covers access_token and refresh-token).
SECRET_WORDS = ("password", "passwd", "secret", "token", "key", "authorization", "cookie",
                "credential")
REDACTED = "[redacted]"
DOCUMENT_FIELDS = ("data", "schema", "schema_")
MAX_TEXT = 200  # longer strings are kept as their length
MAX_KEY = 100  # characters of a key name kept
MAX_ITEMS = 50  # bigger lists and objects are kept as their size
MAX_DEPTH = 6  # deeper values are kept as their size
MAX_SUMMARY = 4000  # characters of kept text per summary (keys and values)
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
    """Canonical JSON of the params with secrets removed at any depth, documents and bulk
    lists reduced to their size, and the whole kept within about MAX_SUMMARY characters."""
    room = Room(MAX_SUMMARY)
    return canonical(_mapping(params, 0, room, top=True))


class Room:
    """What a summary may still hold, in characters of kept text."""

    def __init__(self, chars: int):
        self.chars = chars

    def take(self, chars: int) -> bool:
        self.chars -= chars
        return self.chars >= 0


def is_secret(name: Any) -> bool:
    """A key that names a secret, in any case and spelling: db_password, X-Api-Key,
    refresh-token, privateKey …"""
    folded = re.sub(r"[^a-z0-9]", "", str(name).lower())
    return any(word in folded for word in SECRET_WORDS)


def size_of(value: Any) -> Any:
    """What is kept of a value too big (or too deep) to store: its type and size."""
    if isinstance(value, str):
        return f"<str {len(value):,} chars>"
    if isinstance(value, list):
        return f"<list {len(value):,} items>"
    if isinstance(value, dict):
        return f"<dict {len(value):,} keys>"
    return value  # None, a bool (a schema may be one), a number: small already


def _mapping(value: dict, depth: int, room: Room, top: bool = False) -> dict:
    out: dict[str, Any] = {}
    for index, (name, item) in enumerate(value.items()):
        key = str(name)[:MAX_KEY]
        if not room.take(len(key) + 4):
            out["…"] = f"<{len(value) - index:,} more keys>"
            break
        if is_secret(name):
            out[key] = REDACTED
        elif top and (name in DOCUMENT_FIELDS or isinstance(item, list)):
            out[key] = _sized(item, room)  # documents and bulk calls: never item by item
        else:
            out[key] = _kept(item, depth + 1, room)
    return out


def _sequence(value: list, depth: int, room: Room) -> list:
    out: list[Any] = []
    for index, item in enumerate(value):
        if room.chars <= 0:
            out.append(f"<{len(value) - index:,} more items>")
            break
        out.append(_kept(item, depth + 1, room))
    return out


def _kept(value: Any, depth: int, room: Room) -> Any:
    """`value` with every secret-named entry redacted, at any depth and inside lists;
    what is too long, too deep or past the summary's room kept as its size."""
    if isinstance(value, (dict, list)) and depth <= MAX_DEPTH and len(value) <= MAX_ITEMS \
            and room.take(2):
        return _mapping(value, depth, room) if isinstance(value, dict) \
            else _sequence(value, depth, room)
    if isinstance(value, str) and len(value) <= MAX_TEXT and room.take(len(value) + 2):
        return value
    return _sized(value, room)


def _sized(value: Any, room: Room) -> Any:
    kept = size_of(value)
    room.take(len(canonical(kept)))
    return kept
