"""Linear-time matching for the regular expressions that callers put in JSON Schemas.

jsonschema matches `pattern`, `patternProperties` (and `additionalProperties`, which
consults them) with Python's backtracking `re`: a pattern like `^(a+)+$` against a few dozen
characters stalls the event loop for seconds. RE2 matches in linear time. It has no
backreferences or lookaround, so schemas using those are refused when saved
(`unsupported_reason`), and at run time every caller pattern goes through RE2."""
from __future__ import annotations

import re
import threading
from collections import OrderedDict

import jsonschema._keywords
import jsonschema._utils
import re2

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False
# Bytes one pattern's program and its matching state (RE2's DFA) may use: a pattern that
# needs more is refused when the schema is saved.
_OPTIONS.max_mem = 1 << 20
# What a cached pattern is counted as: its forward and reverse programs (RE2 instructions
# are ~16 bytes) plus an allowance for the DFA states matching builds (up to max_mem).
INSTRUCTION_BYTES = 16
DFA_ALLOWANCE = 64 << 10


class UnsupportedPattern(ValueError):
    pass


class PatternCache:
    """Compiled patterns, the least recently used dropped once their estimated size passes
    the budget (a count would let a few huge patterns take any amount of memory). Used from
    the event loop and from validation threads."""

    def __init__(self, budget_bytes: int):
        self.budget = budget_bytes
        self._items: OrderedDict[str, tuple] = OrderedDict()  # pattern -> (compiled, bytes)
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, pattern: str):
        with self._lock:
            hit = self._items.get(pattern)
            if hit is not None:
                self._items.move_to_end(pattern)
                return hit[0]
        try:
            compiled = re2.compile(pattern, _OPTIONS)
        except re2.error as exc:
            raise UnsupportedPattern(str(exc)) from None
        size = ((compiled.programsize + compiled.reverseprogramsize) * INSTRUCTION_BYTES
                + len(pattern) + DFA_ALLOWANCE)
        with self._lock:
            if pattern not in self._items:
                self._items[pattern] = (compiled, size)
                self._bytes += size
                while self._bytes > self.budget and len(self._items) > 1:
                    _, (_, dropped) = self._items.popitem(last=False)
                    self._bytes -= dropped
        return compiled

    @property
    def size(self) -> int:
        return self._bytes


CACHE = PatternCache(32 << 20)


def set_cache_budget(budget_bytes: int) -> None:
    CACHE.budget = budget_bytes


def _compile(pattern: str):
    return CACHE.get(pattern)


def unsupported_reason(pattern: str) -> str | None:
    """Why RE2 cannot run `pattern`, or None when it can."""
    try:
        _compile(pattern)
        return None
    except UnsupportedPattern as exc:
        return exc.args[0] if exc.args else "unsupported pattern"


class _RE2Search:
    """Stands in for the `re` module inside jsonschema's keyword code, which only calls
    `re.search(pattern, string)` on caller patterns."""

    def search(self, pattern, string, flags=0):
        if flags or not isinstance(pattern, str):
            return re.search(pattern, string, flags)
        return _compile(pattern).search(string)

    def __getattr__(self, name):
        return getattr(re, name)


def install() -> None:
    # jsonschema's private modules import re; the stubs do not declare it.
    jsonschema._keywords.re = _RE2Search()  # type: ignore[attr-defined]
    jsonschema._utils.re = _RE2Search()  # type: ignore[attr-defined]
