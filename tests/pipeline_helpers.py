"""Helpers shared by the pipeline tests (test_pipelines.py, test_pipeline_runs.py,
test_pipeline_queue.py, test_pipeline_cancel.py, test_pipeline_tokens.py,
test_pipeline_permissions.py, test_audit.py): store a pipeline, run it, wait for a run, list
runs and audit events, query the database."""
from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from rpc_server.client import PipelineFailed

from .conftest import unique

ECHO = "def run(input, db):\n    return input\n"
SPIN = "def run(input, db):\n    n = 0\n    while True:\n        n += 1\n"
RUN_KEYS = {"id", "tenant_id", "pipeline_id", "status", "input", "result", "error", "output",
            "debug_level", "timeout_ms", "memory_mb", "actor_user_id", "actor_key_id",
            "duration_ms", "cpu_ms", "peak_memory_kb", "db_operations", "created_at",
            "started_at", "finished_at", "updated_at"}
FAILING = '''def helper(x):
    return 10 / x


def run(input, db):
    print("dividing by", input)
    return helper(input)
'''


async def make_pipeline(client, tenant_id: str, code: str = ECHO, **extra) -> dict:
    return (await client.call("create_pipeline", {"tenant_id": tenant_id, "name": unique("p"),
                                                  "code": code, **extra}))["pipeline"]


async def run(client, tenant_id: str, pipeline_id: str, input=None, **extra) -> dict:
    params = {"tenant_id": tenant_id, "pipeline_id": pipeline_id, **extra}
    if input is not None:
        params["input"] = input
    return (await client.call("run_pipeline", params))["run"]


async def failed_run(client, tenant_id: str, pipeline_id: str, input=None, **extra) -> dict:
    """A wait: true run that does not succeed: -32007 with the run record in data.run."""
    with pytest.raises(PipelineFailed) as exc:
        await run(client, tenant_id, pipeline_id, input, **extra)
    assert exc.value.code == -32007 and exc.value.type == "pipeline_failed"
    return exc.value.data["run"]


async def get_run(client, tenant_id: str, run_id: str) -> dict:
    return (await client.call("get_pipeline_run", {"tenant_id": tenant_id, "id": run_id}))["run"]


async def wait_for(client, tenant_id: str, run_id: str, statuses, timeout: float = 15) -> dict:
    statuses = {statuses} if isinstance(statuses, str) else set(statuses)
    deadline = time.monotonic() + timeout
    while True:
        current = await get_run(client, tenant_id, run_id)
        if current["status"] in statuses:
            return current
        assert time.monotonic() < deadline, f"run still {current['status']}, wanted {statuses}"
        await asyncio.sleep(0.05)


async def all_runs(client, tenant_id: str, page_size: int = 100, **filters) -> list[dict]:
    runs, token = [], ""
    while True:
        page = await client.call("list_pipeline_runs", {
            "tenant_id": tenant_id, **filters,
            "pagination": {"page_size": page_size, "page_token": token}})
        runs += page["runs"]
        token = page["pagination"]["next_page_token"]
        if not token:
            return runs


async def audit_events(client, tenant_id: str, **filters) -> list[dict]:
    return (await client.call("list_audit_events", {"tenant_id": tenant_id, **filters,
                                                    "pagination": {"page_size": 1000}}))[
        "audit_events"]


async def sql(url: str, statement: str, *args):
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(statement, *args)
    finally:
        await conn.close()
