#!/usr/bin/env python3
"""What one hostile tenant can do to another: a victim's get_node latency, quiet and then
while an attacker (a user of its own, with its own key and its own tenants, nothing more)
runs each class of abuse, with the server's memory and what the attacker got.

    .venv/bin/python scripts/noisy_neighbour.py [--seconds 20] [--quiet-seconds 15]
        [--only schemas,filters,responses,pipelines,tenants]

It creates a fresh database (as scripts/bench.py does), starts `flexdb serve` with its
default settings (workers, limits) and the sandbox worker, gives the victim tenant a
steady get_node load (4 concurrent callers) and measures it quiet; then, for each class,
the same load while the attacker works. The attacker runs in a process of its own (its
work, parsing megabytes of answers included, must not stall the victim's measuring loop;
it shares the machine's cores, as a hostile client next door would). One Markdown row per
class: the victim's p50/p99 and errors, the server's resident memory (all its processes:
peak, and growth over the quiet run's), what the attacker's calls got, and whether the
targets hold: victim p99 within 3x the quiet p99 (or under 100 ms), no victim error,
memory growth under 300 MB. Exit status 1 when a target is missed."""
from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from multiprocessing import get_context
from pathlib import Path

import orjson
import uvloop

ROOT = Path(__file__).resolve().parent.parent
# Run as a file, the repository root is not on sys.path: the imports after this line need
# it first (hence their noqa: E402).
sys.path.insert(0, str(ROOT))

from scripts.bench import MemoryWatch, Rpc, database, encode, percentile  # noqa: E402
from tests.conftest import TEST_SANDBOX_SECRET, free_port, running_sandbox, running_server, unique  # noqa: E402

VICTIM_CALLERS = 4
CLASSES = ("schemas", "filters", "responses", "pipelines", "tenants")
TARGET_FACTOR, TARGET_FLOOR_MS, TARGET_RSS_MB = 3.0, 100.0, 300
SPIN = ("def run(input, db):\n    total = 0\n    for i in range(input):\n"
        "        total += i\n    return total\n")
# Answers are parsed only when small; in large ones the outcomes are counted by pattern.
PARSE_BELOW = 65_536
ERROR_TYPE = re.compile(rb'"error":\{"code":-?\d+,"message":"(?:[^"\\]|\\.)*",'
                        rb'"data":\{"type":"(\w+)"')


# ---------------------------------------------------------------- the victim

class Victim:
    """Four callers reading one node of the victim's tenant, for as long as asked."""

    def __init__(self, rpc: Rpc, tenant: str, node: str):
        self.body = encode("get_node", {"tenant_id": tenant, "id": node})
        self.rpc = rpc

    async def run(self, seconds: float) -> dict:
        latencies, errors = [], []
        deadline = time.perf_counter() + seconds

        async def caller():
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    await self.rpc.post(self.body)
                except Exception as exc:  # noqa: BLE001 - counted
                    errors.append(str(exc)[:200])
                latencies.append((time.perf_counter() - started) * 1000)
                await asyncio.sleep(0.005)

        await asyncio.gather(*(caller() for _ in range(VICTIM_CALLERS)))
        return {"p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99),
                "calls": len(latencies), "errors": errors}


# ---------------------------------------------------------------- the attacker

def error_type(answer: dict) -> str:
    """ok, or the error's data.type (its code when it has none)."""
    error = answer.get("error")
    if error is None:
        return "ok"
    data = error.get("data")
    return data.get("type") if isinstance(data, dict) and data.get("type") \
        else str(error.get("code"))


class Attacker:
    """Runs in the attacker's process: calls, and a tally of what they got."""

    def __init__(self, url: str, key: str, connections: int = 16):
        self.rpc = Rpc(url, key, connections)
        self.outcomes: Counter[str] = Counter()
        self.received: Counter[str] = Counter()
        self.notes: list[str] = []

    async def post(self, body: bytes):
        """The answer (parsed when small), counting its outcome(s) by error type."""
        rpc = self.rpc
        try:
            status, raw = await rpc.http.send(rpc.http.build("POST", rpc.path, rpc.headers,
                                                             body))
        except Exception as exc:  # noqa: BLE001 - the server dropped it: an outcome too
            self.outcomes[f"{type(exc).__name__}"] += 1
            await asyncio.sleep(0.1)
            return None
        self.received["MB"] += len(raw) / 2**20
        if status != 200:
            self.outcomes[f"HTTP {status}"] += 1
            return None
        if len(raw) >= PARSE_BELOW:
            errors = ERROR_TYPE.findall(raw)
            self.outcomes.update(e.decode() for e in errors)
            self.outcomes["ok"] += raw.count(b'"result":') or 0
            return raw
        reply = orjson.loads(raw)
        answers = reply if isinstance(reply, list) else [reply]
        self.outcomes.update(error_type(a) for a in answers)
        return reply

    async def attempt(self, method: str, params: dict):
        return await self.post(encode(method, params))

    async def call(self, method: str, params: dict):
        """A setup call of the attack: its result, or a failure raised."""
        return await self.rpc.call(method, params)

    async def repeat(self, seconds: float, callers: int, make_call) -> None:
        until = time.perf_counter() + seconds

        async def loop():
            while time.perf_counter() < until:
                await make_call()
        await asyncio.gather(*(loop() for _ in range(callers)))

    def summary(self) -> str:
        parts = [f"{kind} {count}" for kind, count in self.outcomes.most_common()]
        parts.append(f"{self.received['MB']:.0f} MB received")
        return ", ".join(parts + self.notes)


def exponential_schema(levels: int) -> dict:
    defs = {f"d{i}": {"anyOf": [{"$ref": f"#/$defs/d{i + 1}"}, {"$ref": f"#/$defs/d{i + 1}"}]}
            for i in range(levels)}
    defs[f"d{levels}"] = {"type": "string"}
    return {"$defs": defs, "$ref": "#/$defs/d0"}


def wide_schema() -> dict:
    """Within the save-time limits, costly for a large valid document (every item is
    checked against every branch)."""
    item = {"type": "object", "properties": {f"k{j}": {"type": "string", "minLength": 3}
                                             for j in range(40)}}
    return {"type": "object", "properties": {"items": {"type": "array",
                                                       "items": {"allOf": [item] * 100}}}}


async def attack_schemas(a: Attacker, tenant: str, seconds: float) -> None:
    wide = (await a.rpc.call("create_node_type", {"tenant_id": tenant, "name": unique("w"),
                                                  "schema": wide_schema()}))["node_type"]
    patterns = {"type": "object", "properties": {
        f"p{i}": {"type": "string", "pattern": f"^(a|b|c)*x{i}{'[a-z]' * 200}$"}
        for i in range(64)}}
    document = {"items": [{f"k{j}": "abcd" for j in range(40)}] * 1500}
    kinds = [
        ("create_node_type", {"tenant_id": tenant, "name": "exp",
                              "schema": exponential_schema(24)}),
        ("create_node_type", {"tenant_id": tenant, "name": "many-patterns",
                              "schema": patterns}),
        ("create_node", {"tenant_id": tenant, "node_type_id": wide["id"], "data": document}),
    ]
    turns = iter(range(10**9))

    async def one():
        method, params = kinds[next(turns) % len(kinds)]
        if method == "create_node_type":
            params = {**params, "name": unique(params["name"])}
        await a.attempt(method, params)

    await a.repeat(seconds, 4, one)


async def attack_filters(a: Attacker, tenant: str, node_type: str, seconds: float) -> None:
    values = [f"value-{i:06d}" for i in range(1000)]  # within the 32 KiB of a filter
    costly = [
        {"or": [{"field": "data.tags", "op": "contains", "value": values[:900]}]},
        {"and": [{"field": f"data.s{i % 4}", "op": "prefix", "value": f"v{i}"}
                 for i in range(50)]},
        {"not": {"field": "data", "op": "contains", "value": {"tags": values[:800]}}},
    ]
    turns = iter(range(10**9))

    async def one():
        await a.attempt("query_nodes", {
            "tenant_id": tenant, "node_type_id": node_type, "timeout_ms": 30000,
            "filter": costly[next(turns) % len(costly)], "pagination": {"page_size": 1000}})

    await a.repeat(seconds, 8, one)


async def attack_responses(a: Attacker, tenant: str, ids: list[str], seconds: float) -> None:
    batch = orjson.dumps([{"jsonrpc": "2.0", "id": i, "method": "get_node",
                           "params": {"tenant_id": tenant, "id": node}}
                          for i, node in enumerate(ids[:100])])
    list_page = encode("list_nodes", {"tenant_id": tenant, "pagination": {"page_size": 1000}})
    walk = encode("traverse", {"tenant_id": tenant, "start_node_id": ids[0], "limit": 10000,
                               "max_depth": 2})
    turns = iter(range(10**9))

    async def one():
        await a.post((list_page, batch, walk)[next(turns) % 3])

    await a.repeat(seconds, 8, one)


async def attack_pipelines(a: Attacker, tenant: str, seconds: float) -> None:
    pipeline = (await a.rpc.call("create_pipeline", {
        "tenant_id": tenant, "name": unique("spin"), "code": SPIN,
        "timeout_ms": 10000}))["pipeline"]

    async def flood():
        await a.attempt("run_pipeline", {"tenant_id": tenant, "pipeline_id": pipeline["id"],
                                         "input": 2_000_000, "wait": False})

    await a.repeat(seconds, 2, flood)
    queued = await a.rpc.call("list_pipeline_runs", {"tenant_id": tenant, "status": "queued",
                                                     "pagination": {"page_size": 1000}})
    for run in queued["runs"]:  # leave the queue empty for the next class
        await a.rpc.call("cancel_pipeline_run", {"tenant_id": tenant, "id": run["id"]})


async def attack_tenants(a: Attacker, seconds: float) -> None:
    async def one():
        await a.attempt("create_tenant", {"slug": unique("flood"), "name": "F"})

    await a.repeat(seconds, 4, one)


ATTACKS = {"schemas": attack_schemas, "filters": attack_filters,
           "responses": attack_responses, "pipelines": attack_pipelines,
           "tenants": attack_tenants}


def run_attack(name: str, url: str, key: str, args: tuple) -> str:
    """In the attacker's process: run one class, return what it got."""
    async def go() -> str:
        attacker = Attacker(url, key)
        try:
            await ATTACKS[name](attacker, *args)
        finally:
            await attacker.rpc.close()
        return attacker.summary()

    uvloop.install()
    return asyncio.run(go())


# ---------------------------------------------------------------- setup and report

async def preload(rpc: Rpc, tenant: str, node_type: str, count: int, make_data,
                  per_call: int = 500) -> list[str]:
    ids = []
    for start in range(0, count, per_call):
        result = await rpc.call("create_nodes", {"tenant_id": tenant, "nodes": [
            {"node_type_id": node_type, "data": make_data(i)}
            for i in range(start, min(count, start + per_call))]})
        ids += [n["id"] for n in result["nodes"]]
    return ids


async def attacker_tenant(rpc: Rpc, label: str) -> str:
    return (await rpc.call("create_tenant", {"slug": unique(label),
                                             "name": label}))["tenant"]["id"]


async def measure(args, server, watch: MemoryWatch, attackers: ProcessPoolExecutor) -> int:
    admin = Rpc(server.url, server.admin_key, 4)
    victim_tenant = (await admin.call("create_tenant", {"slug": unique("victim"),
                                                        "name": "Victim"}))["tenant"]["id"]
    victim_type = (await admin.call("create_node_type", {
        "tenant_id": victim_tenant, "name": "Doc"}))["node_type"]["id"]
    victim_node = (await admin.call("create_node", {
        "tenant_id": victim_tenant, "node_type_id": victim_type,
        "data": {"name": "steady"}}))["node"]["id"]
    user = (await admin.call("create_user", {"email": f"{unique('attacker')}@example.com",
                                             "display_name": "Attacker"}))["user"]
    key = (await admin.call("create_api_key", {"name": "attacker",
                                               "user_id": user["id"]}))["secret"]
    setup = Rpc(server.url, key, 4)  # the attacker's own calls, made here to set up
    victim = Victim(Rpc(server.url, server.admin_key, VICTIM_CALLERS), victim_tenant,
                    victim_node)
    loop = asyncio.get_running_loop()
    watch.start()
    print(f"# noisy neighbour: {args.quiet_seconds:g} s quiet, {args.seconds:g} s per class; "
          f"victim: {VICTIM_CALLERS} callers of get_node", flush=True)
    quiet = await victim.run(args.quiet_seconds)
    quiet_rss = max(rss for _, rss in watch.samples)
    rows = [("quiet", quiet, quiet_rss, "-")]

    async def under(label: str, name: str, attack_args: tuple, alongside=None) -> None:
        before = len(watch.samples)
        print(f"  {label} ...", flush=True)
        jobs = [victim.run(args.seconds),
                loop.run_in_executor(attackers, run_attack, name, server.url, key,
                                     attack_args)]
        if alongside is not None:
            jobs.append(alongside)
        result, got, *extra = await asyncio.gather(*jobs)
        if extra and extra[0]:
            got += f", {extra[0]}"
        peak = max(rss for _, rss in watch.samples[before:] or watch.samples[-1:])
        rows.append((label, result, peak, got))

    wanted = args.only or CLASSES
    if "schemas" in wanted:
        await under("costly schemas", "schemas",
                    (await attacker_tenant(setup, "schemas"), args.seconds))
    if "filters" in wanted:
        tenant = await attacker_tenant(setup, "filters")
        node_type = (await setup.call("create_node_type", {
            "tenant_id": tenant, "name": "Tagged"}))["node_type"]["id"]
        print("  preloading 50,000 attacker nodes ...", flush=True)
        await preload(setup, tenant, node_type, 50_000, lambda i: {
            "tags": [f"value-{(i * 7 + j) % 5000:06d}" for j in range(8)],
            "s0": f"v{i}", "s1": f"v{i % 97}", "s2": f"w{i}", "s3": "v" * 40})
        await under("costly filters", "filters", (tenant, node_type, args.seconds))
    if "responses" in wanted:
        tenant = await attacker_tenant(setup, "responses")
        big_type = (await setup.call("create_node_type", {
            "tenant_id": tenant, "name": "Big"}))["node_type"]["id"]
        print("  preloading 400 attacker nodes of 100 KB ...", flush=True)
        ids = await preload(setup, tenant, big_type, 400,
                            lambda i: {"i": i, "blob": "x" * 100_000}, per_call=9)
        await setup.call("create_relationships", {"tenant_id": tenant, "relationships": [
            {"source_node_id": ids[0], "target_node_id": target, "relationship_type": "r"}
            for target in ids[1:201]]})
        await under("large responses", "responses", (tenant, ids, args.seconds))
    if "pipelines" in wanted:
        await under("queued pipeline flood", "pipelines",
                    (await attacker_tenant(setup, "pipelines"), args.seconds),
                    alongside=victim_run_wait(admin, victim_tenant, args.seconds))
    if "tenants" in wanted:
        await under("tenant creation", "tenants", (args.seconds,))
    watch.stop()
    for client in (admin, setup, victim.rpc):
        await client.close()
    return report(rows, quiet, quiet_rss)


async def victim_run_wait(admin: Rpc, tenant: str, seconds: float) -> str:
    """The victim queues one quick run once the flood has queued its own: how long it
    waited to finish."""
    pipeline = (await admin.call("create_pipeline", {"tenant_id": tenant,
                                                     "name": unique("mine"),
                                                     "code": SPIN}))["pipeline"]
    await asyncio.sleep(min(3.0, seconds / 4))
    run = (await admin.call("run_pipeline", {"tenant_id": tenant, "pipeline_id": pipeline["id"],
                                             "input": 10, "wait": False}))["run"]
    queued_at = time.perf_counter()
    while time.perf_counter() - queued_at < seconds + 30:
        got = (await admin.call("get_pipeline_run", {"tenant_id": tenant,
                                                     "id": run["id"]}))["run"]
        if got["status"] not in ("queued", "running"):
            return (f"the victim's one run ({got['status']}) finished "
                    f"{time.perf_counter() - queued_at:.2f} s after it was queued")
        await asyncio.sleep(0.05)
    return "the victim's run did not finish"


def report(rows: list, quiet: dict, quiet_rss: int) -> int:
    print()
    print("| class | victim p50 ms | victim p99 ms | victim calls | victim errors | server RSS "
          "peak MB (growth) | attacker got | targets |")
    print("|---|---|---|---|---|---|---|---|")
    failed = False
    limit = max(TARGET_FACTOR * quiet["p99"], TARGET_FLOOR_MS)
    for name, result, peak, got in rows:
        growth = (peak - quiet_rss) / 2**20
        ok = result["p99"] <= limit and not result["errors"] and growth < TARGET_RSS_MB
        failed |= not ok
        verdict = "-" if name == "quiet" else ("met" if ok else "MISSED")
        print(f"| {name} | {result['p50']:.2f} | {result['p99']:.2f} | {result['calls']} | "
              f"{len(result['errors'])} | {peak / 2**20:.0f} ({growth:+.0f}) | {got} | "
              f"{verdict} |")
    print(f"\ntargets: victim p99 <= {limit:.1f} ms (3x the quiet p99 {quiet['p99']:.2f} ms, "
          f"or {TARGET_FLOOR_MS:.0f} ms), no victim error, RSS growth < {TARGET_RSS_MB} MB")
    for name, result, _, _ in rows:
        if result["errors"]:
            print(f"  {name}: first victim error: {result['errors'][0]}")
    return 1 if failed else 0


def main(args) -> int:
    with database() as db_url, ExitStack() as stack:
        server_port = free_port()
        sandbox = stack.enter_context(running_sandbox(
            f"http://127.0.0.1:{server_port}/jsonrpc", FLEXDB_LOG_LEVEL="WARNING"))
        server = stack.enter_context(running_server({
            "FLEXDB_DATABASE_URL": db_url, "FLEXDB_WORKERS": "",  # the default
            "FLEXDB_LOG_LEVEL": "WARNING", "FLEXDB_SANDBOX_URL": sandbox.base,
            "FLEXDB_SANDBOX_SECRET": TEST_SANDBOX_SECRET}, port=server_port))
        attackers = stack.enter_context(ProcessPoolExecutor(1, mp_context=get_context("spawn")))
        watch = MemoryWatch(server.proc.pid)
        uvloop.install()
        return asyncio.run(measure(args, server, watch, attackers))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--quiet-seconds", type=float, default=15)
    parser.add_argument("--only", type=lambda s: [x.strip() for x in s.split(",") if x.strip()])
    sys.exit(main(parser.parse_args()))
