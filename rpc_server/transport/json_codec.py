"""JSON in and out of the server: fast parsing and writing with orjson, and nesting checks.

Valid JSON is always read, also numbers no 64-bit integer or double holds (beyond 64 bits,
1e400): they are read as OutOfRange, never rounded, and the param holding one refuses it
(invalid params naming the field, see api/params.py), so a batch's other members still run."""
from __future__ import annotations

import json
import re
from typing import Any, Iterable

import orjson

from rpc_server.storage.ids import uuid_text

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# orjson reads integers beyond 64 bits as floats (losing digits). Only bodies with a run of
# 19+ digits can hold one; those are parsed exactly by the standard library instead. The
# run is found by mapping digits to "0" and the rest to " " (a regex took 7x the parse).
_DIGITS_AS_ZEROS = bytes(48 if 48 <= b <= 57 else 32 for b in range(256))
_LONG_DIGIT_RUN = b"0" * 19
# Where a string may hold a lone surrogate (escaped: raw ones are invalid UTF-8), which the
# standard library reads but PostgreSQL cannot store.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
OUT_OF_RANGE = ("integers must fit in 64 bits (-2^63 .. 2^63-1) and other numbers in a "
                "double; send larger numbers as strings")


class JSONError(ValueError):
    pass


class JSONTooDeep(JSONError):
    """Nested deeper than the parser reads (orjson: 1024 levels)."""


class OutOfRange:
    """A JSON number no 64-bit integer or double holds, as written. No JSON writer takes
    it, so it can only be refused, never stored or sent on."""
    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return f"OutOfRange({self.text[:40]})"


def _refuse_constant(name: str):
    raise JSONError(f"{name} is not valid JSON")


def _int(text: str) -> int | OutOfRange:
    if len(text) > 20:  # (int() of a very long text is slow, and refused past 4300 digits)
        return OutOfRange(text)
    value = int(text)
    return value if INT64_MIN <= value <= INT64_MAX else OutOfRange(text)


def _float(text: str) -> float | OutOfRange:
    value = float(text)
    return OutOfRange(text) if value in (float("inf"), float("-inf")) else value


def loads(data: bytes | str) -> Any:
    """Parse JSON; raises JSONError for invalid JSON (JSONTooDeep when nested beyond what
    can be read). Numbers out of range are read as OutOfRange."""
    raw = data.encode() if isinstance(data, str) else data
    if _LONG_DIGIT_RUN not in raw.translate(_DIGITS_AS_ZEROS):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # perhaps valid JSON orjson does not take (1e400): read again to tell
    return _loads_exactly(raw)


def _loads_exactly(raw: bytes) -> Any:
    """The standard library's reading, with every number read as written or as OutOfRange.
    Slower than orjson: only for the rare bodies that need it."""
    try:
        # Strict UTF-8: no byte order mark skipped, no UTF-16 guessed (as orjson).
        value = json.loads(raw.decode(), parse_int=_int, parse_float=_float,
                           parse_constant=_refuse_constant)
    except RecursionError:
        raise JSONTooDeep("nested too deeply to read") from None
    except ValueError as exc:
        raise JSONError(str(exc)) from None
    if _SURROGATE_ESCAPE.search(raw) and _has_lone_surrogate(value):
        raise JSONError("a string holds an unpaired surrogate")
    return value


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode()
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def holds_out_of_range(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, OutOfRange):
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """Whether containers nest more than `limit` levels ({} and [] are one level)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children: Iterable[Any]
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


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=uuid_text)
