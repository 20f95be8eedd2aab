"""A small LRU whose entries expire: the per-instance caches in front of the database. It
holds at most `size` entries and, given `max_bytes`, entries whose sizes (as put() is told
them) add up to at most that: the least recently used go first."""
from __future__ import annotations

import time
from collections import OrderedDict

DEFAULT_SIZE = 10_000
# What one parsed JSON value costs in Python at most (an empty dict: 64 bytes plus its slot in
# its container; measured 32-90 per value over schemas of every shape), less its text.
BYTES_PER_JSON_VALUE = 96
_VALUE_STARTS = (b",", b":", b"[", b"{")


def parsed_json_bytes(text: bytes) -> int:
    """An upper estimate of the memory JSON text takes once parsed: its bytes, and
    BYTES_PER_JSON_VALUE for each value in it (counted, in C, by the characters that start
    or separate values: a schema of 256 KB of [{}, {}, ...] parses to 6 MB, not 256 KB)."""
    return len(text) + BYTES_PER_JSON_VALUE * (1 + sum(map(text.count, _VALUE_STARTS)))


class TTLCache:
    def __init__(self, ttl: float, size: int = DEFAULT_SIZE, max_bytes: int | None = None):
        self.ttl, self.size, self.max_bytes = ttl, size, max_bytes
        self._items: OrderedDict = OrderedDict()  # key -> (value, expires, bytes)
        self.bytes = 0
        self.hits = self.misses = 0  # read by /metrics

    def get(self, key):
        """(value, ...) when a live entry is cached (the value may be None), else None."""
        hit = self._items.get(key)
        if hit is None or hit[1] < time.monotonic():
            self.misses += 1
            return None
        self.hits += 1
        return hit

    def put(self, key, value, ttl: float | None = None, size: int = 0) -> None:
        """Keep `value` for the cache's TTL, or `ttl` if shorter; `size` is its bytes."""
        ttl = self.ttl if ttl is None else min(ttl, self.ttl)
        self.drop(key)
        self._items[key] = (value, time.monotonic() + ttl, size)
        self.bytes += size
        while len(self._items) > self.size or (
                self.max_bytes is not None and self.bytes > self.max_bytes
                and len(self._items) > 1):
            self.bytes -= self._items.popitem(last=False)[1][2]

    def drop(self, key) -> None:
        entry = self._items.pop(key, None)
        if entry is not None:
            self.bytes -= entry[2]

    def drop_where(self, predicate) -> None:
        for key in [k for k, (v, *_) in self._items.items() if predicate(k, v)]:
            self.drop(key)
