"""PostgreSQL going away and coming back, on a PostgreSQL this test owns (embedded, never the
shared server): calls fail fast with a clear "unavailable" error, every acknowledged write is
there afterwards, and service resumes without restarting flexdb. And a SIGTERM lets
in-flight calls finish."""
from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from pathlib import Path

import asyncpg
import pytest

from rpc_server.client import FlexDBClient, RpcError, TransportError

from .conftest import ServerProcess, admin_key, running_server, unique
from .services import own_postgres


@pytest.fixture(scope="module")
def flaky_database():
    with own_postgres() as (url, stop, start), \
            running_server({"FLEXDB_DATABASE_URL": url, "FLEXDB_DB_CONNECT_TIMEOUT_S": "2",
                            "FLEXDB_DB_POOL_MIN": "2"}) as srv:
        yield srv, url, stop, start


async def test_a_database_restart_loses_no_acknowledged_write(flaky_database):
    srv, url, stop_db, start_db = flaky_database
    async with FlexDBClient(srv.url, api_key=srv.admin_key, timeout=30) as rpc:
        tenant = (await rpc.call("create_tenant", {"slug": unique("f"), "name": "F"}))["tenant"]
        node_type = (await rpc.call("create_node_type", {"tenant_id": tenant["id"],
                                                         "name": "N"}))["node_type"]
        acknowledged, failures, slowest = [], [], 0.0
        running = True

        async def writer(n: int):
            nonlocal slowest
            i = 0
            while running:
                started = time.monotonic()
                try:
                    node = (await rpc.call("create_node", {
                        "tenant_id": tenant["id"], "node_type_id": node_type["id"],
                        "data": {"writer": n, "i": i}}))["node"]
                    acknowledged.append(node["id"])
                except RpcError as exc:
                    failures.append((exc.code, exc.type, time.monotonic()))
                    await asyncio.sleep(0.05)
                slowest = max(slowest, time.monotonic() - started)
                i += 1

        writers = [asyncio.create_task(writer(n)) for n in range(4)]
        await asyncio.sleep(1.0)
        before_stop = len(acknowledged)
        await asyncio.to_thread(stop_db)
        stopped_at = time.monotonic()
        await asyncio.sleep(2.0)
        during = [f for f in failures if f[2] >= stopped_at]
        await asyncio.to_thread(start_db)
        restarted_at = time.monotonic()
        recovered_at = None
        while time.monotonic() - restarted_at < 20:
            count = len(acknowledged)
            await asyncio.sleep(0.2)
            if len(acknowledged) > count:
                recovered_at = time.monotonic()
                break
        running = False
        await asyncio.gather(*writers)

    assert before_stop > 0
    assert during, "no call failed while the database was down"
    # A clear, retryable error, quickly: no hang while the database is gone.
    assert {(code, kind) for code, kind, _ in during} <= {(-32603, "unavailable")}, during
    assert slowest < 5, f"a call took {slowest:.1f} s"
    assert recovered_at is not None, "writes did not resume after the restart"
    # Every write the server acknowledged is stored.
    conn = await asyncpg.connect(url)
    try:
        stored = {str(r["id"]) for r in await conn.fetch(
            "SELECT id FROM nodes WHERE tenant_id = $1", uuid.UUID(tenant["id"]))}
    finally:
        await conn.close()
    missing = set(acknowledged) - stored
    assert not missing, f"{len(missing)} acknowledged writes lost"


@pytest.mark.parametrize("signals", [1, 2])
def test_sigterm_lets_in_flight_calls_finish(database_url, signals):
    """A second signal (Ctrl-C reaches the whole process group) must not cut it short."""
    server = ServerProcess({"FLEXDB_DATABASE_URL": database_url}, Path(__file__).parent.parent)
    try:
        server.wait_ready()
        key = admin_key(database_url)

        async def scenario():
            async with FlexDBClient(server.url, api_key=key, timeout=30) as rpc:
                tenant = (await rpc.call("create_tenant", {"slug": unique("g"),
                                                           "name": "G"}))["tenant"]
                slow = asyncio.create_task(rpc.call("execute_query", {
                    "tenant_id": tenant["id"], "timeout_ms": 20000,
                    "sql": "SELECT count(*) AS n FROM generate_series(1, 3000000)"}))
                await asyncio.sleep(0.3)  # the query is running
                for _ in range(signals):
                    server.proc.send_signal(signal.SIGTERM)
                    await asyncio.sleep(0.1)
                result = await slow
                assert result["rows"] == [[3000000]]
                await asyncio.sleep(0.5)
                with pytest.raises(TransportError):  # no longer accepting
                    await rpc.call("list_tenants", {})

        asyncio.run(scenario())
        assert server.proc.wait(30) == 0
    finally:
        server.stop()
        os.unlink(server.log.name)
