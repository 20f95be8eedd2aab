"""Logs: JSON lines, one access line per request with its request id, methods, tenants,
actor, duration and outcome, in rpc_server and the REST facade; no API key or token ever
appears in them."""
from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from rpc_server.client import FlexDBClient, PipelineFailed, Unauthenticated

from .conftest import migrated_database, running_facade, server_with_sandbox, unique


def json_lines(output: str) -> list[dict]:
    """The log lines (the banner and the admin key printed once at first start are not logs)."""
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def stack(pg_server_url):
    with migrated_database(pg_server_url) as url, server_with_sandbox(url) as server, \
            running_facade(server.url) as facade:
        yield server, facade


async def test_requests_leave_json_access_lines_without_secrets(stack):
    server, facade = stack
    async with FlexDBClient(server.url, api_key=server.admin_key) as admin:
        tenant = (await admin.call("create_tenant", {"slug": unique("l"), "name": "L"}))["tenant"]
        created = await admin.call("create_api_key", {"name": "logged"})
        secret = created["secret"]
        pipeline = (await admin.call("create_pipeline", {
            "tenant_id": tenant["id"], "name": "talk",
            "code": "def run(input, db):\n    print(input)\n    return db.get_node(input)\n"}))
        with pytest.raises(PipelineFailed) as exc:  # fails inside: the id is not a node
            await admin.call("run_pipeline", {"tenant_id": tenant["id"], "input": secret,
                                              "pipeline_id": pipeline["pipeline"]["id"]})
        assert exc.value.type == "pipeline_failed"
    async with FlexDBClient(server.url, api_key=secret,
                            headers={"X-Request-ID": "log-test-1"}) as user:
        await user.call("list_tenants", {})
    async with FlexDBClient(server.url, api_key="fdb_" + "x" * 40) as stranger:
        with pytest.raises(Unauthenticated):
            await stranger.call("get_tenant", {"id": tenant["id"]})
    async with httpx.AsyncClient(base_url=facade.base, timeout=30) as rest:
        response = await rest.get(f"/tenants/{tenant['id']}", headers={
            "Authorization": f"Bearer {secret}", "X-Request-ID": "log-test-2"})
        assert response.status_code == 200

    # The facade logs a request once its answer is sent: under load, a moment after the
    # client has read it.
    for _ in range(100):
        facade_lines = json_lines(facade.output())
        if any(line.get("request_id") == "log-test-2" for line in facade_lines):
            break
        await asyncio.sleep(0.05)
    server_lines = json_lines(server.output())
    worker_lines = json_lines(server.sandbox.output())
    assert server_lines and facade_lines  # the worker may have nothing to log

    access = {line["request_id"]: line for line in server_lines
              if line["logger"] == "flexdb.access"}
    mine = access["log-test-1"]
    assert mine["methods"] == ["list_tenants"] and mine["outcome"] == "ok"
    assert mine["actor_key_id"] == created["api_key"]["id"]
    assert mine["duration_ms"] >= 0
    refused = [line for line in access.values() if line["methods"] == ["get_tenant"]
               and line["outcomes"] == [-32002]]
    assert refused and refused[0]["tenants"] == [tenant["id"]]
    # The facade's request id reaches rpc_server, and the facade logs its own line.
    assert access["log-test-2"]["methods"] == ["get_tenant"]
    assert any(line.get("request_id") == "log-test-2" and line.get("status") == 200
               for line in facade_lines)

    everything = server.output() + facade.output() + server.sandbox.output()
    for leaked in (secret, "fdb_" + "x" * 40):
        assert leaked not in everything
    # The admin key appears once: the line that shows it at the first start, never in a log.
    assert everything.count(server.admin_key) <= 1
    assert all(server.admin_key not in json.dumps(line)
               for line in server_lines + facade_lines + worker_lines)
