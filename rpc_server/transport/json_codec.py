"""JSON in and out of the server: fast parsing and writing with orjson, and nesting checks.

Valid JSON is always read, also numbers no 64-bit integer or double holds (beyond 64 bits,
1e400): they are read as OutOfRange, never rounded, and the param holding one refuses it
(invalid params naming the field, see api/params.py), so a batch's other members still run."""
from __future__ import annotations

import json
import re
from typing import Any, Iterable

import orjson
from asyncpg.pgproto.pgproto import UUID as PG_UUID

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


_BRACKETS_AND_QUOTES = b'[]{}"'
_ALL_BUT_BRACKETS_AND_QUOTES = bytes(sorted(set(range(256)) - set(_BRACKETS_AND_QUOTES)))
_INNERMOST_PAIR = re.compile(rb"\{\}|\[\]")


def _without_escapes(text: bytes) -> bytes:
    """Valid JSON text without its escaped backslashes and quotes: every string is then a
    plain "..." (for functions that look only at what lies outside strings)."""
    if b"\\" in text:
        return text.replace(b"\\\\", b"").replace(b'\\"', b"")
    return text


def json_text_depth_exceeds(text: bytes, limit: int) -> bool:
    """json_depth_exceeds(loads(text), limit) for valid JSON text, without walking the
    value in Python (a walk was a tenth of a 100-call batch's time); all in C: strings are
    cut out, then each pass over the brackets left removes the innermost level. With
    duplicate keys it may say True where the parsed value (which keeps the last copy) is
    shallow: use it to rule a walk out, not in."""
    # Keep the brackets and quotes, and of the pieces between quotes those outside strings.
    text = _without_escapes(text)
    kept = text.translate(None, _ALL_BUT_BRACKETS_AND_QUOTES)
    if len(kept) - kept.count(b'"') <= 2 * limit:  # too few brackets to be deeper
        return False
    brackets = b"".join(kept.split(b'"')[::2])
    for _ in range(limit):
        if not brackets:
            return False
        brackets = _INNERMOST_PAIR.sub(b"", brackets)
    return bool(brackets)


# A float orjson writes with an exponent (1e-300) is kept by jsonb as a numeric, which
# PostgreSQL writes back in plain notation (0.000…1: 302 characters).
_EXPONENT = re.compile(rb"e[-+]?[0-9]")
_EXPONENT_NUMBER = re.compile(rb"([0-9]+)(?:\.([0-9]+))?e([-+]?[0-9]+)")


def written_out_growth(text: bytes) -> int:
    """How many bytes longer JSON text written by orjson gets once stored as jsonb and
    read back: the plain notation of its numbers with an exponent, less their length here.
    In C but for one step per such number: strings are cut out as json_text_depth_exceeds
    does (an "e5" in a string, as in many a UUID, is no number)."""
    if _EXPONENT.search(text) is None:
        return 0
    text = _without_escapes(text)
    outside_strings = b" ".join(text.split(b'"')[::2])
    growth = 0
    for number in _EXPONENT_NUMBER.finditer(outside_strings):
        whole, fraction, exponent = number.groups()
        digits = len(whole) + len(fraction or b"")
        shift = int(exponent) - len(fraction or b"")
        if shift >= 0:  # 1e16: the digits, then zeros
            plain = digits + shift
        else:  # 1.5e-7: 0.00000015
            plain = max(digits + shift, 1) + 1 - shift
        growth += max(plain - (number.end() - number.start()), 0)
    return growth


def _default(value: Any) -> Any:
    # asyncpg returns its own UUID class, which orjson does not know.
    if type(value) is PG_UUID:
        return str(value)
    raise TypeError(f"cannot serialize {type(value).__name__}")


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_default)
