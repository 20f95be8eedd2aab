#!/usr/bin/env python3
"""Change feed benchmark: what issue 21 asks to measure, on a fresh database each part.

    .venv/bin/python scripts/bench_changes.py [--only latency,idle,webhooks,create,crash]

- latency: `--rate` changes/s (create_node, paced; with `--batch N`, create_nodes of N nodes
  at rate/N calls/s) while `--subscribers` streams (GET /events) follow the tenant, in a
  process of their own; each event's latency is from its change (the event's `time`: the
  database's clock as the write's statement recorded it, just before the commit and its WAL
  flush) to the moment a subscriber read it, p50/p99 over the `--sampled` subscribers'
  copies (the others count theirs). The writes' own latency is shown beside it.
- idle: how many idle streams one server process (FLEXDB_WORKERS=1) holds, with its RSS.
- webhooks: deliveries/s to a local receiver (scripts/bench_webhooks.measure_deliveries).
- create: create_node req/s at c=32 against a server with the feed on and one with it off
  (FLEXDB_CHANGE_FEED=false), alternating rounds in the same run, on one database.
- crash: a writer at full speed and a resuming reader; the server is killed with SIGKILL and
  started again; counts acknowledged writes whose event never came, and events received twice.

The database server is FLEXDB_BENCH_DATABASE_URL (default the local one)."""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import re
import resource
import signal
import sys
import time
from datetime import datetime
from pathlib import Path

import aiohttp
import orjson
import psutil

ROOT = Path(__file__).resolve().parent.parent
# Run as a file, the repository root is not on sys.path: the imports after this line need
# it first (hence their noqa: E402).
sys.path.insert(0, str(ROOT))

from rpc_server.client import FlexDBClient  # noqa: E402
from scripts.bench import Rpc, load, percentile  # noqa: E402
from scripts.bench_webhooks import measure_deliveries  # noqa: E402
from tests.conftest import (  # noqa: E402
    ServerProcess,
    fresh_database,
    make_node_type,
    make_tenant,
    running_server,
)

SERVER = os.environ.get("FLEXDB_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PARTS = ("latency", "idle", "webhooks", "create", "crash")
# The event's time: when its write's statement recorded it (then comes the commit), by the
# database's clock, which is this machine's.
COMMITTED_AT = re.compile(rb'"time":"([^"]+)"')


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def subscriber(session: aiohttp.ClientSession, url: str, key: str, tenant: str,
                     latencies: list[float] | None, opened: asyncio.Event,
                     counter: list[int]) -> None:
    """Follow the stream; count its events (counter[2]) and, when `latencies` is given, note
    for each event now minus its commit time."""
    async with session.get(url, params={"tenant_id": tenant},
                           headers={"Authorization": f"Bearer {key}"}) as response:
        assert response.status == 200, await response.text()
        counter[0] += 1
        if counter[0] == counter[1]:
            opened.set()
        async for chunk in response.content.iter_any():
            if latencies is None:
                counter[2] += chunk.count(b"event: change")
                continue
            now = time.time()
            for committed in COMMITTED_AT.findall(chunk):
                at = datetime.fromisoformat(committed.decode()).timestamp()
                latencies.append((now - at) * 1000)


def follow_in_a_process(url: str, key: str, tenant: str, subscribers: int, sampled: int,
                        ready, stop, results) -> None:
    """The subscribers, in a process of their own (the writer's pacing must not wait for
    them): `sampled` of them time every event, the others only count theirs."""
    async def run():
        latencies: list[float] = []
        opened, counter = asyncio.Event(), [0, subscribers, 0]
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None),
                                        connector=aiohttp.TCPConnector(limit=0))
        streams = [asyncio.ensure_future(subscriber(
            session, url, key, tenant, latencies if i < sampled else None, opened, counter))
            for i in range(subscribers)]
        await asyncio.wait_for(opened.wait(), 60)
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.1)
        for stream in streams:
            stream.cancel()
        await session.close()
        results.put((latencies, counter[2]))
    asyncio.run(run())


def part_latency(args) -> dict:
    with fresh_database(SERVER) as url, running_server({
            "FLEXDB_DATABASE_URL": url, "FLEXDB_WORKERS": "2",
            "FLEXDB_FEED_STREAMS_PER_KEY": str(args.subscribers)}) as srv:
        return asyncio.run(latency(args, srv))


async def latency(args, srv) -> dict:
    async with FlexDBClient(srv.url, api_key=srv.admin_key) as admin:
        t = (await make_tenant(admin))["id"]
        nt = (await make_node_type(admin, t))["id"]
    ready, stop, results = multiprocessing.Event(), multiprocessing.Event(), \
        multiprocessing.Queue()
    followers = multiprocessing.Process(target=follow_in_a_process, args=(
        srv.base + "/events", srv.admin_key, t, args.subscribers, args.sampled, ready, stop,
        results))
    followers.start()
    await asyncio.get_running_loop().run_in_executor(None, ready.wait, 60)
    rpc = Rpc(srv.url, srv.admin_key, 64)
    interval, sent = args.batch / args.rate, 0
    start = time.perf_counter()
    deadline = start + args.seconds
    in_flight: set[asyncio.Task] = set()
    errors = 0
    write_ms: list[float] = []

    async def write():
        nonlocal errors
        began = time.perf_counter()
        try:
            if args.batch == 1:
                await rpc.call("create_node", {"tenant_id": t, "node_type_id": nt,
                                               "data": {"n": 1}})
            else:
                await rpc.call("create_nodes", {"tenant_id": t, "nodes": [
                    {"node_type_id": nt, "data": {"n": i}} for i in range(args.batch)]})
        except Exception:  # noqa: BLE001 - counted
            errors += args.batch
        write_ms.append((time.perf_counter() - began) * 1000)

    while time.perf_counter() < deadline:  # paced: the n-th write at start + n/rate
        sent += 1
        task = asyncio.ensure_future(write())
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
        delay = start + sent * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    elapsed = time.perf_counter() - start
    await asyncio.gather(*in_flight)
    await asyncio.sleep(3)  # the last events on their way
    stop.set()
    latencies, counted = await asyncio.get_running_loop().run_in_executor(
        None, results.get, True, 60)
    followers.join(10)
    await rpc.close()
    written = sent * args.batch - errors
    return {"part": "latency", "changes/s sent": round(sent * args.batch / elapsed),
            "changes a call": args.batch,
            "subscribers": args.subscribers, "timed subscribers": args.sampled,
            "events received (untimed subscribers)": counted,
            "expected": written * (args.subscribers - args.sampled),
            "timed events": len(latencies), "timed expected": written * args.sampled,
            "write errors": errors, "write p50 ms": round(percentile(write_ms, 0.5), 1),
            "write p99 ms": round(percentile(write_ms, 0.99), 1),
            "p50 ms": round(percentile(latencies, 0.5), 1),
            "p99 ms": round(percentile(latencies, 0.99), 1),
            "max ms": round(max(latencies, default=0), 1)}


def part_idle(args) -> dict:
    with fresh_database(SERVER) as url, running_server({
            "FLEXDB_DATABASE_URL": url, "FLEXDB_WORKERS": "1",
            "FLEXDB_FEED_STREAMS_PER_KEY": str(args.idle),
            "FLEXDB_FEED_STREAMS_PER_TENANT": str(args.idle),
            "FLEXDB_FEED_STREAMS_MAX": str(args.idle)}) as srv:
        return asyncio.run(idle(args, srv))


async def idle(args, srv) -> dict:
    async with FlexDBClient(srv.url, api_key=srv.admin_key) as admin:
        t = (await make_tenant(admin))["id"]
    proc = psutil.Process(srv.proc.pid)
    server_processes = [proc] + proc.children(recursive=True)
    before = sum(p.memory_info().rss for p in server_processes)
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None),
                                    connector=aiohttp.TCPConnector(limit=0))
    latencies: list[float] = []
    opened, counter = asyncio.Event(), [0, args.idle, 0]
    streams = []
    for i in range(args.idle):
        streams.append(asyncio.ensure_future(subscriber(
            session, srv.base + "/events", srv.admin_key, t, latencies, opened, counter)))
        if i % 100 == 99:
            await asyncio.sleep(0.05)
    try:
        await asyncio.wait_for(opened.wait(), 120)
    except asyncio.TimeoutError:
        pass
    await asyncio.sleep(2)
    held = counter[0]
    failed = sum(1 for s in streams if s.done() and s.exception() is not None)
    after = sum(p.memory_info().rss for p in server_processes)
    for s in streams:
        s.cancel()
    await session.close()
    return {"part": "idle", "streams asked": args.idle, "streams open": held,
            "refused or failed": failed, "server RSS MB before": round(before / 2**20),
            "with streams MB": round(after / 2**20),
            "KB per stream": round((after - before) / max(held, 1) / 1024, 1)}


def part_webhooks(args) -> dict:
    with fresh_database(SERVER) as url, running_server({
            "FLEXDB_DATABASE_URL": url, "FLEXDB_WORKERS": "1",
            "FLEXDB_WEBHOOK_ALLOW_PRIVATE": "true"}) as srv:
        return asyncio.run(webhooks(args, srv))


async def webhooks(args, srv) -> dict:
    async with FlexDBClient(srv.url, api_key=srv.admin_key) as admin:
        one = await measure_deliveries(admin, args.webhook_events, 1)
        several = await measure_deliveries(admin, args.webhook_events, 8)
    return {"part": "webhooks", "events": args.webhook_events,
            "deliveries/s, 1 webhook": round(one), "deliveries/s, 8 webhooks": round(several)}


def part_create(args) -> dict:
    with fresh_database(SERVER) as url:
        with running_server({"FLEXDB_DATABASE_URL": url}) as on, \
                running_server({"FLEXDB_DATABASE_URL": url, "FLEXDB_CHANGE_FEED": "false"}) as off:
            return asyncio.run(create(args, on, off))


async def create(args, on, off) -> dict:
    figures: dict[str, list[float]] = {"on": [], "off": []}
    for server in (on, off):
        async with FlexDBClient(server.url, api_key=on.admin_key) as admin:
            t = (await make_tenant(admin))["id"]
            server.target = (t, (await make_node_type(admin, t))["id"])
    for _ in range(args.rounds):
        for name, server in (("on", on), ("off", off)):
            rpc = Rpc(server.url, on.admin_key, 32)
            t, nt = server.target
            body = {"tenant_id": t, "node_type_id": nt, "data": {"name": "x", "n": 1}}
            result = await load(lambda _: rpc.call("create_node", body), 32,
                                args.seconds)
            figures[name].append(result["rps"])
            await rpc.close()
    on_rps, off_rps = sorted(figures["on"]), sorted(figures["off"])
    return {"part": "create", "feed on req/s": [round(x) for x in figures["on"]],
            "feed off req/s": [round(x) for x in figures["off"]],
            "median on/off": round(on_rps[len(on_rps) // 2] / off_rps[len(off_rps) // 2], 3)}


def part_crash(args) -> dict:
    with fresh_database(SERVER) as url:
        env = {"FLEXDB_DATABASE_URL": url, "FLEXDB_WORKERS": "1"}
        with running_server(env) as first:
            port, key = first.port, first.admin_key
        return asyncio.run(crash(args, env, port, key))


async def crash(args, env, port, key) -> dict:
    server = ServerProcess(env, ROOT, port=port)
    server.wait_ready()
    acknowledged: list[str] = []
    received: list[dict] = []
    stop = asyncio.Event()
    try:
        async with FlexDBClient(server.url, api_key=key, timeout=5) as client:
            t = (await make_tenant(client))["id"]
            nt = (await make_node_type(client, t))["id"]
            start = (await client.call("list_changes", {"tenant_id": t}))["head"]

            async def follow():
                async for event in client.changes(t, after=start, retry_delay=0.1,
                                                  max_retry_delay=0.5):
                    received.append(event)

            async def write():
                while not stop.is_set():
                    try:
                        node = await client.call("create_node", {
                            "tenant_id": t, "node_type_id": nt, "data": {}})
                        acknowledged.append(node["node"]["id"])
                    except Exception:  # noqa: BLE001 - the server is down: again
                        await asyncio.sleep(0.05)

            reader = asyncio.ensure_future(follow())
            writers = [asyncio.ensure_future(write()) for _ in range(8)]
            await asyncio.sleep(args.seconds)
            os.kill(server.proc.pid, signal.SIGKILL)
            server.proc.wait()
            at_kill = len(acknowledged)
            server = ServerProcess(env, ROOT, port=port)
            await asyncio.get_running_loop().run_in_executor(None, server.wait_ready)
            await asyncio.sleep(args.seconds)
            stop.set()
            await asyncio.gather(*writers)
            head = (await client.call("list_changes", {"tenant_id": t}))["head"]
            for _ in range(300):
                if received and received[-1]["position"] >= head:
                    break
                await asyncio.sleep(0.05)
            reader.cancel()
    finally:
        server.stop()
    ids = [e["id"] for e in received]
    return {"part": "crash", "acknowledged writes": len(acknowledged),
            "acknowledged before the kill": at_kill, "events received": len(received),
            "lost": len(set(acknowledged) - set(ids)), "received twice": len(ids) - len(set(ids)),
            "events of unacknowledged writes": len(set(ids) - set(acknowledged))}


def main(args) -> None:
    for part in args.only:
        result = globals()[f"part_{part}"](args)
        print(orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(PARTS),
                        type=lambda v: [p for p in v.split(",") if p])
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=1,
                        help="latency: changes a write call makes (1: create_node, more: "
                             "create_nodes)")
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--sampled", type=int, default=10,
                        help="subscribers that time each event (the others count them)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--idle", type=int, default=2000)
    parser.add_argument("--webhook-events", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    unknown = set(arguments.only) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts: {sorted(unknown)}")
    raise_fd_limit()
    main(arguments)
