"""Linear-time matching for the regular expressions that callers put in JSON Schemas.

jsonschema matches `pattern`, `patternProperties` (and `additionalProperties`, which
consults them) with Python's backtracking `re`: a pattern like `^(a+)+$` against a few dozen
characters stalls the event loop for seconds. RE2 matches in linear time. It has no
backreferences or lookaround, so schemas using those are refused when saved
(`unsupported_reason`), and at run time every caller pattern goes through RE2."""
from __future__ import annotations

import re
from functools import lru_cache

import jsonschema._keywords
import jsonschema._utils
import re2

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False
_OPTIONS.max_mem = 8 << 20  # bytes of compiled program per pattern


class UnsupportedPattern(ValueError):
    pass


@lru_cache(maxsize=4096)
def _compile(pattern: str):
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        raise UnsupportedPattern(str(exc)) from None


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
    jsonschema._keywords.re = _RE2Search()
    jsonschema._utils.re = _RE2Search()
