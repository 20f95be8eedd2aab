"""scripts/bench.py's schema-evolution rows: the dry run of a schema change
(check_node_type_schema) over every node of the preloaded type, in nodes checked per second,
next to raw asyncpg reading the same nodes with the same keyset statement (the floor: no
validation), and the server memory the dry run used (its processes' resident memory,
sampled every 20 ms, peak minus before); then the schema change itself (update_node_type,
which also stamps every node with the new schema version), there and back."""
from __future__ import annotations

import statistics
import threading
import time
import uuid

from rpc_server.storage.repositories.nodes import NodeRepository
from rpc_server.validation.existing_nodes import BATCH

RUNS = 3  # calls per schema; the row gives the median
# Proposed schemas for the preloaded nodes ({"n", "kind", "g", "label"}): a flat one that
# the fast path answers, and one that needs jsonschema (a pattern and an enum).
SCHEMAS = {
    "flat schema": {"type": "object", "required": ["n", "kind", "g", "label"],
                    "properties": {"n": {"type": "integer", "minimum": 0},
                                   "kind": {"type": "string", "maxLength": 20},
                                   "g": {"type": "integer"}, "label": {"type": "string"}}},
    "schema with pattern and enum": {
        "type": "object", "required": ["n", "kind"],
        "properties": {"n": {"type": "integer", "minimum": 0},
                       "kind": {"enum": [f"k{i}" for i in range(10)] + ["new", "upd", "bulk"]},
                       "label": {"type": "string", "pattern": "^[a-z]+ [0-9]+$"}}},
}


class PeakMemory:
    """The peak of a process tree's resident memory while it is watched."""

    def __init__(self, watch):
        self.watch, self.peak = watch, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.watch.rss())

    def __enter__(self):
        self.before = self.watch.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


async def raw_scan(pool, tid_u: uuid.UUID, type_u: uuid.UUID) -> int:
    """Every node of the type, read as the dry run reads them (NodeRepository.scan_of_type)."""
    read, after = 0, None
    async with pool.acquire() as conn:
        nodes = NodeRepository(conn)
        while True:
            rows = await nodes.scan_of_type(tid_u, type_u, after, BATCH)
            if not rows:
                return read
            read += len(rows)
            after = (rows[-1]["created_at"], rows[-1]["id"])


async def schema_check_rows(bench, watch, tid: str, type_id: str) -> None:
    tid_u, type_u = uuid.UUID(tid), uuid.UUID(type_id)
    raw_times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        count = await raw_scan(bench.pool, tid_u, type_u)
        raw_times.append(time.perf_counter() - started)
    raw_rate = count / statistics.median(raw_times)
    for label, schema in SCHEMAS.items():
        print(f"  check_node_type_schema, {label} ...", flush=True)
        times, peaks, failing, checked = [], [], 0, 0
        for _ in range(RUNS):
            with PeakMemory(watch) as memory:
                started = time.perf_counter()
                report = (await bench.rpc.call("check_node_type_schema", {
                    "tenant_id": tid, "id": type_id, "schema": schema,
                    "timeout_ms": 600_000}))["report"]
                times.append(time.perf_counter() - started)
            peaks.append(max(memory.peak - memory.before, 0))
            checked, failing = report["nodes_checked"], report["nodes_failing"]
        elapsed = statistics.median(times)
        rate = checked / elapsed
        bench.rows.append({
            "scenario": "schema_check", "label": f"check_node_type_schema over {checked:,} "
            f"nodes, {label} (nodes/s; one call)", "concurrency": 1, "unit": "nodes/s",
            "rate": rate, "p50_ms": elapsed * 1000, "p95_ms": max(times) * 1000,
            "p99_ms": max(times) * 1000, "errors": 0, "calls": RUNS, "raw_rate": raw_rate,
            "raw_p50_ms": None, "ratio": rate / raw_rate, "target": "≥ 20,000 nodes/s",
            "first_error": []})
        bench.notes.append(
            f"check_node_type_schema, {label}: {checked:,} nodes checked ({failing:,} failing) "
            f"in {', '.join(f'{t:.2f}' for t in times)} s; server RSS peak above the start "
            f"of the call {', '.join(f'{p / 2**20:.0f}' for p in peaks)} MB (of "
            f"{memory.before / 2**20:.0f} MB); raw asyncpg reads the same nodes at "
            f"{raw_rate:,.0f} nodes/s")
    original = (await bench.rpc.call("get_node_type", {"tenant_id": tid, "id": type_id}))[
        "node_type"]["schema"]
    for label, schema in (("to the flat schema", SCHEMAS["flat schema"]),
                          ("back to the original", original)):
        print(f"  update_node_type {label} ...", flush=True)
        started = time.perf_counter()
        report = (await bench.rpc.call("update_node_type", {
            "tenant_id": tid, "id": type_id, "schema": schema, "timeout_ms": 600_000}))["report"]
        elapsed = time.perf_counter() - started
        bench.notes.append(
            f"update_node_type {label} (mode validate): {report['nodes_checked']:,} nodes "
            f"checked and stamped with schema version {report['schema_version']} in "
            f"{elapsed:.2f} s ({report['nodes_checked'] / elapsed:,.0f} nodes/s)")
