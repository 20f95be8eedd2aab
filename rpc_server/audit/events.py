"""The audit trail's rules: how params are redacted into an event's summary (stored as the
exact canonical text its hash covers: storage/audit_chain.py) and the platform tenant that
platform events belong to. Refused calls are counted apart (audit/denied_calls.py). The SQL
is in storage/repositories/audit.py."""
from __future__ import annotations

import base64
import re
import unicodedata
import uuid
from functools import lru_cache
from typing import Any

import orjson

from rpc_server.ops.logs import SECRET_PATTERNS as KEYS_AND_BEARERS
from rpc_server.storage.audit_chain import canonical

PLATFORM_TENANT = uuid.UUID(int=0)
# Matched in a key folded to lower case letters and digits ("key" covers api_key,
# private_key and X-Api-Key; "token" covers access_token and refresh-token).
SECRET_WORDS = ("password", "passwd", "secret", "token", "key", "authorization", "cookie",
                "credential")
SECRET_WORD = re.compile("|".join(SECRET_WORDS))
REDACTED = "[redacted]"
# A pair like {"name": "DB_PASSWORD", "value": "…"}: the value is secret when the name is.
PAIR_NAMES = ("name", "key", "header")
PAIR_VALUES = ("value", "val")
# Values that are credentials whatever their key: flexdb keys and bearer tokens (as the logs
# mask them), JWTs (three base64url parts), Basic credentials (base64 of user:password) and
# a URL's password.
CREDENTIAL_VALUES = (
    KEYS_AND_BEARERS,
    re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+"),
)
BASIC = re.compile(r"(?i:basic)\s+(?P<token>[A-Za-z0-9+/]{4,}={0,2})")
URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/?#@:\s]*:)[^/?#@\s]*(?=@)")
# What each pattern above needs to match at all: text without any of these has nothing to
# mask (every call's ids and names pass here; one search is far cheaper than four subs).
MAY_HOLD_CREDENTIAL = re.compile(r"://|(?i:basic)|eyJ|fdb_|(?i:bearer)")
MAX_PARSED = 65_536  # a string this long or shorter holding a JSON object or array is parsed
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
        elif isinstance(value, uuid.UUID):  # (its JSON form, without a model_dump per id)
            out[key] = str(value)
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


def folded(name: Any) -> str:
    """A name as letters and digits only, compatibility-folded (fullwidth ｐａｓｓ is pass)."""
    name = str(name)
    # Names repeat (every call's param names): short ones are remembered.
    return _folded_short(name) if len(name) <= MAX_KEY else _fold(name)


def _fold(name: str) -> str:
    return NOT_LETTER_OR_DIGIT.sub("", unicodedata.normalize("NFKC", name).casefold())


NOT_LETTER_OR_DIGIT = re.compile(r"[^a-z0-9]")
_folded_short = lru_cache(maxsize=4096)(_fold)


def is_secret(name: Any) -> bool:
    """A key that names a secret, in any case and spelling: db_password, X-Api-Key,
    refresh-token, privateKey …"""
    return SECRET_WORD.search(folded(name)) is not None


def masked(text: str) -> str:
    """`text` with every credential-looking part replaced (a URL keeps all but its
    password)."""
    if not MAY_HOLD_CREDENTIAL.search(text):
        return text
    text = URL_PASSWORD.sub(lambda m: m["head"] + REDACTED, text)
    text = BASIC.sub(lambda m: REDACTED if is_basic_credential(m["token"]) else m[0], text)
    for pattern in CREDENTIAL_VALUES:
        text = pattern.sub(REDACTED, text)
    return text


# Keys repeat (every call's param names) and are cut to MAX_KEY characters: remembered.
_masked_key = lru_cache(maxsize=4096)(masked)


def is_basic_credential(token: str) -> bool:
    try:
        return b":" in base64.b64decode(token, validate=True)
    except ValueError:  # binascii.Error: not base64 (just a word after "basic")
        return False


def secret_pair_value(value: dict) -> str | None:
    """In a name/value pair whose name is secret-like, the key holding the value."""
    names = [item for key, item in value.items() if folded(key) in PAIR_NAMES]
    if not any(isinstance(name, str) and is_secret(name) for name in names):
        return None
    return next((key for key in value if folded(key) in PAIR_VALUES), None)


def parsed_json(text: str) -> Any:
    """A string holding a JSON object or array (not too long to parse), as that value;
    else None."""
    if len(text) > MAX_PARSED or not text.lstrip().startswith(("{", "[")):
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, (dict, list)) else None


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
    secret_value = secret_pair_value(value)
    for index, (name, item) in enumerate(value.items()):
        key = _masked_key(str(name)[:MAX_KEY])
        if not room.take(len(key) + 4):
            out["…"] = f"<{len(value) - index:,} more keys>"
            break
        if is_secret(name) or name == secret_value:
            out[key] = REDACTED
        elif top and (name in DOCUMENT_FIELDS or isinstance(item, list)):
            out[key] = _sized(item, room)  # documents and bulk calls: never item by item
        else:
            out[key] = _kept(item, depth + 1, room)
    return out


def _sequence(value: list, depth: int, room: Room) -> list:
    out: list[Any] = []
    # A pair like ["X-Api-Key", "…"] (headers as a list of lists): its value is secret.
    secret_pair = len(value) == 2 and isinstance(value[0], str) and is_secret(value[0])
    for index, item in enumerate(value):
        if room.chars <= 0:
            out.append(f"<{len(value) - index:,} more items>")
            break
        out.append(REDACTED if secret_pair and index == 1 else _kept(item, depth + 1, room))
    return out


def _kept(value: Any, depth: int, room: Room) -> Any:
    """`value` with every secret-named entry and credential-looking text redacted, at any
    depth and inside lists (and inside strings holding JSON); what is too long, too deep or
    past the summary's room kept as its size."""
    if isinstance(value, str) and (inner := parsed_json(value)) is not None:
        value = inner
    if isinstance(value, (dict, list)) and depth <= MAX_DEPTH and len(value) <= MAX_ITEMS \
            and room.take(2):
        return _mapping(value, depth, room) if isinstance(value, dict) \
            else _sequence(value, depth, room)
    if isinstance(value, str) and len(value) <= MAX_TEXT and room.take(len(value) + 2):
        return masked(value)
    return _sized(value, room)


def _sized(value: Any, room: Room) -> Any:
    kept = size_of(value)
    room.take(len(canonical(kept)))
    return kept
