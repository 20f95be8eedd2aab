"""Prometheus metrics for GET /metrics: calls by method and outcome, latency by method, and,
read at scrape time, the database pools, cache hits and misses and sandbox runs by status."""
from __future__ import annotations

import os
from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from prometheus_client import (
    CollectorRegistry,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
RATE_LIMITED = -32005
disable_created_metrics()  # no *_created series: half the output, nothing a dashboard uses


class Metrics:
    """One registry per app (not the process-global one), so tests can run several apps."""

    def __init__(self):
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, CPU, fds
        self.calls = CallCollector()
        self.registry.register(self.calls)

    def observe(self, method: str, outcome: int | None, seconds: float) -> None:
        self.calls.observe(method, outcome, seconds)

    def watch(self, readings: "Readings") -> None:
        self.registry.register(StateCollector(readings))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class CallCollector:
    """Calls by method and outcome, their latency by method, and the calls refused as
    busy or rate limited, kept in plain counters and turned into metric families when
    scraped: prometheus_client's own metrics take a lock on every update, a microsecond
    a call (the event loop is one thread, and scrapes run on it too)."""

    def __init__(self):
        self.counts: defaultdict[tuple, int] = defaultdict(int)  # (method, outcome) -> n
        self.latency: dict[str, list] = {}  # method -> per-bucket counts (+Inf last), sum
        self.rate_limited: defaultdict[str, int] = defaultdict(int)

    def observe(self, method: str, outcome: int | None, seconds: float) -> None:
        self.counts[(method, "ok" if outcome is None else str(outcome))] += 1
        histogram = self.latency.get(method)
        if histogram is None:
            histogram = self.latency[method] = [[0] * (len(BUCKETS) + 1), 0.0]
        histogram[0][bisect_left(BUCKETS, seconds)] += 1  # le: the first bound >= seconds
        histogram[1] += seconds
        if outcome == RATE_LIMITED:
            self.rate_limited[method] += 1

    def collect(self):
        calls = CounterMetricFamily("flexdb_calls", "JSON-RPC calls by method and outcome "
                                    "(ok, or the error code)", labels=["method", "outcome"])
        for (method, outcome), count in sorted(self.counts.items()):
            calls.add_metric([method, outcome], count)
        yield calls
        latency = HistogramMetricFamily("flexdb_call_duration_seconds", "JSON-RPC call "
                                        "latency by method", labels=["method"])
        bounds = [floatToGoString(b) for b in BUCKETS] + ["+Inf"]
        for method, (counts, total) in sorted(self.latency.items()):
            cumulative, running = [], 0
            for bound, count in zip(bounds, counts):
                running += count
                cumulative.append((bound, running))
            latency.add_metric([method], cumulative, sum_value=total)
        yield latency
        limited = CounterMetricFamily("flexdb_rate_limited", "Calls refused as busy or rate "
                                      "limited (-32005), by method", labels=["method"])
        for method, count in sorted(self.rate_limited.items()):
            limited.add_metric([method], count)
        yield limited


@dataclass(frozen=True)
class Readings:
    """Where the values other objects keep are read when scraped (the app supplies them)."""
    pools: Callable[[], dict[str, Any]]  # name -> asyncpg pool
    caches: Callable[[], list[tuple[str, Any]]]  # (name, object with hits and misses)
    redis_failures: Callable[[], int]
    runs_finished: Callable[[], Mapping[str, int]]  # by final status


class StateCollector:
    """Values other objects keep (pool sizes, cache and run counts), read when scraped."""

    def __init__(self, readings: Readings):
        self.readings = readings

    def collect(self):
        worker = GaugeMetricFamily("flexdb_worker", "This server process (with FLEXDB_WORKERS, "
                                   "each worker answers scrapes for itself)", labels=["pid"])
        worker.add_metric([str(os.getpid())], 1)
        yield worker
        pools = GaugeMetricFamily("flexdb_db_pool_connections", "Database connections by "
                                  "pool and state", labels=["pool", "state"])
        for name, pool in self.readings.pools().items():
            size, idle = pool.get_size(), pool.get_idle_size()
            pools.add_metric([name, "in_use"], size - idle)
            pools.add_metric([name, "free"], idle)
            pools.add_metric([name, "max"], pool.get_max_size())
        yield pools
        caches = CounterMetricFamily("flexdb_cache_lookups", "Cache lookups by cache and "
                                     "result", labels=["cache", "result"])
        for name, cache in self.readings.caches():
            caches.add_metric([name, "hit"], cache.hits)
            caches.add_metric([name, "miss"], cache.misses)
        yield caches
        redis = CounterMetricFamily("flexdb_redis_failures", "Redis operations that failed "
                                    "(the instance then falls back to in-process state)")
        redis.add_metric([], self.readings.redis_failures())
        yield redis
        runs = CounterMetricFamily("flexdb_sandbox_runs", "Pipeline runs finished by this "
                                   "server, by status", labels=["status"])
        for status, count in sorted(self.readings.runs_finished().items()):
            runs.add_metric([status], count)
        yield runs
