"""Checks on JSON text as orjson writes it, all but a step or two in C, with no import but
`re` (the sandbox's run processes use them too): how deep it nests, and how much larger it
gets once stored as jsonb and read back."""
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
