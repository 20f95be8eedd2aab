"""Prometheus metrics for GET /metrics: calls by method and outcome, latency by method, and,
read at scrape time, the database pools, cache hits and misses and sandbox runs by status."""
from __future__ import annotations

import os
from bisect import bisect_left
from collections import defaultdict
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from rpc_server.api.context import AppState

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

    def watch(self, state: "AppState") -> None:
        self.registry.register(StateCollector(state))

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


class StateCollector:
    """Values other objects keep (pool sizes, cache and run counts), read when scraped."""

    def __init__(self, state: "AppState"):
        self.state = state

    def collect(self):
        worker = GaugeMetricFamily("flexdb_worker", "This server process (with FLEXDB_WORKERS, "
                                   "each worker answers scrapes for itself)", labels=["pid"])
        worker.add_metric([str(os.getpid())], 1)
        yield worker
        pools = GaugeMetricFamily("flexdb_db_pool_connections", "Database connections by "
                                  "pool and state", labels=["pool", "state"])
        for name, pool in (("main", self.state.pool), ("query", self.state.query.pool)):
            size, idle = pool.get_size(), pool.get_idle_size()
            pools.add_metric([name, "in_use"], size - idle)
            pools.add_metric([name, "free"], idle)
            pools.add_metric([name, "max"], pool.get_max_size())
        yield pools
        caches = CounterMetricFamily("flexdb_cache_lookups", "Cache lookups by cache and "
                                     "result", labels=["cache", "result"])
        caches_here = [("api_keys", self.state.auth._keys),
                       ("memberships", self.state.auth._roles),
                       ("validators", self.state.validators),
                       ("node_types", self.state.node_types.local)]
        if self.state.auth.shared is not None:
            caches_here.append(("shared_auth", self.state.auth.shared))
        if self.state.node_types.shared is not None:
            caches_here.append(("shared_node_types", self.state.node_types.shared))
        for name, cache in caches_here:
            caches.add_metric([name, "hit"], cache.hits)
            caches.add_metric([name, "miss"], cache.misses)
        yield caches
        redis = CounterMetricFamily("flexdb_redis_failures", "Redis operations that failed "
                                    "(the instance then falls back to in-process state)")
        redis.add_metric([], self.state.redis.failures if self.state.redis else 0)
        yield redis
        runs = CounterMetricFamily("flexdb_sandbox_runs", "Pipeline runs finished by this "
                                   "server, by status", labels=["status"])
        for status, count in sorted(self.state.pipelines.finished.items()):
            runs.add_metric([status], count)
        yield runs
