"""Operations endpoints: GET /ready (each dependency with its latency, overall ok, degraded
or down) and GET /metrics (Prometheus text)."""
from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rpc_server.client import FlexDBClient, NotFound, Unauthenticated

from .conftest import (
    TEST_SANDBOX_SECRET,
    database_name,
    free_port,
    migrated_database,
    missing_id,
    running_server,
    unique,
)


def samples(metrics_text: str) -> dict[tuple, float]:
    """{(sample name, sorted labels): value} of a /metrics answer."""
    found = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict, name: str, **labels) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def test_ready_reports_each_dependency(server):
    response = httpx.get(server.base + "/ready", timeout=10)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    checks = body["checks"]
    assert set(checks) == {"database", "sandbox", "redis", "vector"}
    # vector search: what the server found at start; optional, so never "failing"
    assert checks["vector"]["status"] in ("ok", "unavailable")
    for name in ("database", "sandbox"):
        assert checks[name]["status"] == "ok" and checks[name]["error"] is None
        assert 0 <= checks[name]["latency_ms"] < 2000
    assert checks["redis"]["status"] == "disabled"


def test_ready_is_degraded_when_the_sandbox_worker_is_unreachable(database_url):
    env = {"FLEXDB_DATABASE_URL": database_url, "FLEXDB_SANDBOX_SECRET": TEST_SANDBOX_SECRET,
           "FLEXDB_SANDBOX_URL": f"http://127.0.0.1:{free_port()}"}
    with running_server(env) as srv:
        response = httpx.get(srv.base + "/ready", timeout=10)
    assert response.status_code == 200  # still serving: only pipelines are affected
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["sandbox"]["status"] == "failing"
    assert body["checks"]["sandbox"]["error"]


@pytest.fixture
def server_on_own_database(pg_server_url):
    with migrated_database(pg_server_url) as url, \
            running_server({"FLEXDB_DATABASE_URL": url, "FLEXDB_DB_POOL_MIN": "0",
                            "FLEXDB_DB_CONNECT_TIMEOUT_S": "1"}) as srv:
        yield srv, url


async def test_ready_is_down_while_the_database_refuses_connections_then_recovers(
        server_on_own_database, pg_server_url):
    srv, url = server_on_own_database
    name = database_name(url)  # the URL may carry a socket dir after the path
    admin = await asyncpg.connect(pg_server_url)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = $1", name)
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.get(srv.base + "/ready")
            assert response.status_code == 503
            body = response.json()
            assert body["status"] == "down"
            assert body["checks"]["database"]["status"] == "failing"
            assert body["checks"]["database"]["error"]
            assert url not in response.text  # no connection string in the answer
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            for _ in range(50):  # recovers by itself, no restart
                response = await http.get(srv.base + "/ready")
                if response.status_code == 200:
                    break
                await asyncio.sleep(0.1)
            assert response.status_code == 200 and response.json()["status"] == "ok"
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()


async def test_metrics_count_calls_latency_pools_caches_and_runs(server, rpc):
    before = samples(httpx.get(server.base + "/metrics", timeout=10).text)
    tenant = (await rpc.call("create_tenant", {"slug": unique("m"), "name": "M"}))["tenant"]
    for _ in range(3):
        await rpc.call("get_tenant", {"id": tenant["id"]})
    with pytest.raises(NotFound):
        await rpc.call("get_tenant", {"id": missing_id()})
    pipeline = (await rpc.call("create_pipeline", {
        "tenant_id": tenant["id"], "name": "one",
        "code": "def run(input, db):\n    return 1\n"}))["pipeline"]
    await rpc.call("run_pipeline", {"tenant_id": tenant["id"], "pipeline_id": pipeline["id"]})
    async with FlexDBClient(server.url) as anonymous:
        with pytest.raises(Unauthenticated):  # counted as an error below
            await anonymous.call("list_tenants", {})

    response = httpx.get(server.base + "/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = samples(response.text)

    def grew(name, by=1, **labels):
        assert value(after, name, **labels) - value(before, name, **labels) >= by, (name, labels)

    grew("flexdb_calls_total", 3, method="get_tenant", outcome="ok")
    grew("flexdb_calls_total", 1, method="get_tenant", outcome="-32001")
    grew("flexdb_calls_total", 1, method="list_tenants", outcome="-32002")
    grew("flexdb_call_duration_seconds_count", 4, method="get_tenant")
    assert value(after, "flexdb_call_duration_seconds_bucket", method="get_tenant",
                 le="+Inf") == value(after, "flexdb_call_duration_seconds_count",
                                     method="get_tenant")
    grew("flexdb_cache_lookups_total", 3, cache="api_keys", result="hit")
    grew("flexdb_sandbox_runs_total", 1, status="succeeded")
    assert value(after, "flexdb_db_pool_connections", pool="main", state="max") >= 1
    assert (value(after, "flexdb_db_pool_connections", pool="main", state="in_use")
            + value(after, "flexdb_db_pool_connections", pool="main", state="free")) >= 1
    assert server.admin_key not in response.text
