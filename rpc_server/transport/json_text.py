"""Checks on JSON text as orjson writes it, all but a step or two in C, with no import but
`re` (the sandbox's run processes use them too): how deep it nests, and how large it is
once stored as jsonb and read back."""
from __future__ import annotations

import re

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


def stored_size_over(text: bytes, limit: int) -> int:
    """0 when JSON text written by orjson (compact) takes at most `limit` bytes once stored
    as jsonb and read back, else the bytes it takes then. PostgreSQL writes it back with a
    space after each comma and colon, and its numbers with an exponent in plain notation.
    In C but for one step per such number; strings (where a ", " or an "e5", as in many a
    UUID, is neither) are cut out only when counting them in would pass the limit."""
    exponents = _EXPONENT.search(text) is not None
    if not exponents:
        if len(text) + len(text) // 2 <= limit:  # (at most every other byte a separator)
            return 0
        if len(text) + text.count(b",") + text.count(b":") <= limit:  # (strings' too)
            return 0
    text_outside = _without_escapes(text)
    outside_strings = b" ".join(text_outside.split(b'"')[::2])
    size = len(text) + outside_strings.count(b",") + outside_strings.count(b":")
    if exponents:
        size += _plain_notation_growth(outside_strings)
    return size if size > limit else 0


def _plain_notation_growth(outside_strings: bytes) -> int:
    """How many bytes the numbers with an exponent in JSON text (strings cut out) take more
    in plain notation."""
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
