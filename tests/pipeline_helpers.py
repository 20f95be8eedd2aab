"""Helpers shared by the pipeline tests (test_pipelines.py, test_audit.py): store a pipeline,
run it."""
from __future__ import annotations

from .conftest import unique

ECHO = "def run(input, db):\n    return input\n"


async def make_pipeline(client, tenant_id: str, code: str = ECHO, **extra) -> dict:
    return (await client.call("create_pipeline", {"tenant_id": tenant_id, "name": unique("p"),
                                                  "code": code, **extra}))["pipeline"]


async def run(client, tenant_id: str, pipeline_id: str, input=None, **extra) -> dict:
    params = {"tenant_id": tenant_id, "pipeline_id": pipeline_id, **extra}
    if input is not None:
        params["input"] = input
    return (await client.call("run_pipeline", params))["run"]
