"""A small LRU whose entries expire: the per-instance caches in front of the database."""
from __future__ import annotations

import time
from collections import OrderedDict

DEFAULT_SIZE = 10_000


class TTLCache:
    def __init__(self, ttl: float, size: int = DEFAULT_SIZE):
        self.ttl, self.size = ttl, size
        self._items: OrderedDict = OrderedDict()
        self.hits = self.misses = 0  # read by /metrics

    def get(self, key):
        """(value,) when a live entry is cached (the value may be None), else None."""
        hit = self._items.get(key)
        if hit is None or hit[1] < time.monotonic():
            self.misses += 1
            return None
        self.hits += 1
        return hit

    def put(self, key, value, ttl: float | None = None) -> None:
        """Keep `value` for the cache's TTL, or `ttl` if shorter."""
        ttl = self.ttl if ttl is None else min(ttl, self.ttl)
        self._items[key] = (value, time.monotonic() + ttl)
        self._items.move_to_end(key)
        if len(self._items) > self.size:
            self._items.popitem(last=False)

    def drop(self, key) -> None:
        self._items.pop(key, None)

    def drop_where(self, predicate) -> None:
        for key in [k for k, (v, _) in self._items.items() if predicate(k, v)]:
            del self._items[key]
