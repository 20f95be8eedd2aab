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
# 19+ digits can hold one; those are parsed exactly by the standard library instead. The
# run is found by mapping digits to "0" and the rest to " " (a regex took 7x the parse).
_DIGITS_AS_ZEROS = bytes(48 if 48 <= b <= 57 else 32 for b in range(256))
_LONG_DIGIT_RUN = b"0" * 19


class JSONError(ValueError):
    pass


def _refuse_constant(name: str):
    raise JSONError(f"{name} is not valid JSON")


def loads(data: bytes | str) -> Any:
    """Parse JSON; raises JSONError for invalid JSON and for integers outside 64 bits."""
    raw = data.encode() if isinstance(data, str) else data
    if _LONG_DIGIT_RUN not in raw.translate(_DIGITS_AS_ZEROS):
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


_BRACKETS_AND_QUOTES = b'[]{}"'
_ALL_BUT_BRACKETS_AND_QUOTES = bytes(sorted(set(range(256)) - set(_BRACKETS_AND_QUOTES)))
_INNERMOST_PAIR = re.compile(rb"\{\}|\[\]")


def json_text_depth_exceeds(text: bytes, limit: int) -> bool:
    """json_depth_exceeds(loads(text), limit) for valid JSON text, without walking the
    value in Python (a walk was a tenth of a 100-call batch's time); all in C: strings are
    cut out, then each pass over the brackets left removes the innermost level. With
    duplicate keys it may say True where the parsed value (which keeps the last copy) is
    shallow: use it to rule a walk out, not in."""
    # Without escaped backslashes and quotes, every string is a plain "...": keep the
    # brackets and quotes, and of the pieces between quotes those outside strings.
    if b"\\" in text:
        text = text.replace(b"\\\\", b"").replace(b'\\"', b"")
    kept = text.translate(None, _ALL_BUT_BRACKETS_AND_QUOTES)
    if len(kept) - kept.count(b'"') <= 2 * limit:  # too few brackets to be deeper
        return False
    brackets = b"".join(kept.split(b'"')[::2])
    for _ in range(limit):
        if not brackets:
            return False
        brackets = _INNERMOST_PAIR.sub(b"", brackets)
    return bool(brackets)


def _default(value: Any) -> Any:
    # asyncpg returns its own UUID class, which orjson does not know.
    if type(value) is PG_UUID:
        return str(value)
    raise TypeError(f"cannot serialize {type(value).__name__}")


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_default)
