"""JSON in and out of the server: fast parsing and writing with orjson, nesting checks,
and integers beyond 64 bits refused rather than silently rounded."""
from __future__ import annotations

import json
import re
from typing import Any

import orjson
from asyncpg.pgproto.pgproto import UUID as PG_UUID

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# orjson reads integers beyond 64 bits as floats (losing digits). Only bodies with a run of
# 19+ digits can hold one; those are parsed exactly by the standard library instead.
_LONG_DIGITS = re.compile(rb"\d{19,}")


class JSONError(ValueError):
    pass


def _refuse_constant(name: str):
    raise JSONError(f"{name} is not valid JSON")


def loads(data: bytes | str) -> Any:
    """Parse JSON; raises JSONError for invalid JSON and for integers outside 64 bits."""
    raw = data.encode() if isinstance(data, str) else data
    if not _LONG_DIGITS.search(raw):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise JSONError(str(exc)) from None
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise JSONError(str(exc) if not isinstance(exc, RecursionError)
                        else "nested too deeply") from None
    if _has_big_int(value):
        raise JSONError("integers must fit in 64 bits (-2^63 .. 2^63-1); "
                        "send larger numbers as strings")
    return value


def _has_big_int(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, int) and not isinstance(item, bool):
            if not INT64_MIN <= item <= INT64_MAX:
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def json_depth_exceeds(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, (dict, list)))
    return False


def _default(value: Any) -> Any:
    # asyncpg returns its own UUID class, which orjson does not know.
    if type(value) is PG_UUID:
        return str(value)
    raise TypeError(f"cannot serialize {type(value).__name__}")


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_default)
