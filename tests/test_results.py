"""Every method's result matches its declared result model (rpc_server/api/results.py), end to
end through the real JSON-RPC server: no key missing, none extra, every value of its type.
The variants that change a result's shape are driven too (totals on and off, bulk creates,
the secret of a new key, paths found and not found, runs that fail, broken audit chains,
FLEXDB_JSON_FIELDS=string). A method without a result model, or without coverage here,
fails the suite."""
from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest
from pydantic import BaseModel, ValidationError

import rpc_server.methods  # noqa: F401 - registers every method
from rpc_server.api import results
from rpc_server.api.params import Params
from rpc_server.api.registry import REGISTRY, rpc_method
from rpc_server.client import FlexDBClient, PipelineFailed
from rpc_server.security.auth import AUTHENTICATED

from .auth_helpers import WEBHOOK_URL
from .conftest import running_server, unique

PERSON_SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}},
                 "required": ["name"]}
VERBOSE_PIPELINE = '''
def run(input, db):
    try:
        db.get_node(input["missing"])
    except DbError:
        pass
    node = db.get_node(input["node"])["node"]
    print("got", node["id"])
    return {"name": node["data"]["name"], "input": input}
'''
FAILING_PIPELINE = "def run(input, db):\n    raise ValueError('no')\n"
MIGRATION_PIPELINE = ("def run(input, db):\n"
                      "    if input['name'] == 'raises':\n"
                      "        raise ValueError('no')\n"
                      "    if input['name'] == 'invalid':\n"
                      "        return {'name': 5}\n"
                      "    return {'name': input['name'], 'more': 1}\n")
SPIN_PIPELINE = "def run(input, db):\n    n = 0\n    while True:\n        n += 1\n"


def key_tree(value: Any) -> Any:
    """The keys of every object in a JSON value, nested as in the value."""
    if isinstance(value, dict):
        return {k: key_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [key_tree(v) for v in value]
    return None


def check_shape(model: type[BaseModel], result: Any) -> BaseModel:
    """`result` (as the client got it off the wire) fits `model` exactly: validated as the
    consumers will, strictly as JSON, and a dump of the model gives back the same keys."""
    validated = model.model_validate(result)
    model.model_validate_json(json.dumps(result), strict=True)
    assert key_tree(validated.model_dump(mode="json")) == key_tree(result)
    return validated


class Checked:
    """Calls methods and checks each result against its method's result model."""

    def __init__(self, client: FlexDBClient):
        self.client = client
        self.validated: set[str] = set()

    async def __call__(self, method: str, params: dict) -> dict:
        result = await self.client.call(method, params)
        check_shape(REGISTRY[method].result_model, result)
        self.validated.add(method)
        return result


async def tamper_audit(database_url: str, statement: str, *args) -> None:
    conn = await asyncpg.connect(database_url)  # a superuser, able to switch the guard off
    try:
        await conn.execute("ALTER TABLE audit_events DISABLE TRIGGER USER")
        try:
            await conn.execute(statement, *args)
        finally:
            await conn.execute("ALTER TABLE audit_events ENABLE TRIGGER USER")
    finally:
        await conn.close()


# ---------------------------------------------------------------- unit

def test_every_method_declares_a_result_model_with_a_json_schema():
    assert REGISTRY
    for name, spec in REGISTRY.items():
        assert issubclass(spec.result_model, results.ResultModel), name
        for mode in ("validation", "serialization"):
            schema = spec.result_model.model_json_schema(mode=mode)
            assert schema["type"] == "object" and schema["additionalProperties"] is False, name


def test_a_method_without_a_result_model_cannot_register():
    class P(Params):
        x: int

    with pytest.raises(TypeError):
        rpc_method(P, AUTHENTICATED)(lambda ctx, p: None)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        rpc_method(P, AUTHENTICATED, result=dict)(lambda ctx, p: None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        rpc_method(P, AUTHENTICATED, result=None)(lambda ctx, p: None)  # type: ignore[arg-type]


def test_models_refuse_drift_and_keep_absent_fields_absent():
    page = {"next_page_token": ""}
    assert results.Pagination.model_validate(page).model_dump() == page
    with pytest.raises(ValidationError):  # absent is allowed, null is not
        results.Pagination.model_validate({"next_page_token": "", "total_count": None})
    with pytest.raises(ValidationError):  # an extra key
        results.Pagination.model_validate({"next_page_token": "", "total": 1})
    with pytest.raises(ValidationError):  # a missing key
        results.Deleted.model_validate({})
    schema = results.Pagination.model_json_schema()
    assert schema["required"] == ["next_page_token"]
    assert schema["properties"]["total_count"] == {
        "type": "integer", "title": "Total Count",
        "description": schema["properties"]["total_count"]["description"]}
    node_type = results.NodeTypeResult.model_json_schema()["$defs"]["NodeType"]
    assert "schema" in node_type["required"] and "schema_" not in node_type["properties"]


# ---------------------------------------------------------------- end to end

async def test_every_method_result_matches_its_model(server, rpc, database_url):
    call = Checked(rpc)
    now = datetime.now(timezone.utc)

    # tenants
    tenant = (await call("create_tenant", {"slug": unique("r"), "name": "Results"}))["tenant"]
    t = tenant["id"]
    await call("get_tenant", {"id": t})
    usage = (await call("get_tenant_usage", {"tenant_id": t}))["usage"]
    assert usage["nodes"] == 0 and usage["max_nodes"] is None
    await call("update_tenant", {"id": t, "name": "Renamed", "expected_version": 1})
    listed = await call("list_tenants", {"pagination": {"page_size": 1, "include_total": True}})
    assert listed["pagination"]["total_count"] >= 1
    listed = await call("list_tenants", {"pagination": {"page_size": 1, "include_total": False}})
    assert "total_count" not in listed["pagination"]

    # users and memberships
    user = (await call("create_user", {"email": f"{unique('r')}@example.com",
                                       "display_name": "R"}))["user"]
    await call("get_user", {"id": user["id"]})
    await call("update_user", {"id": user["id"], "display_name": "R2"})
    await call("list_users", {"pagination": {"page_size": 2, "include_total": True}})
    await call("list_users", {"pagination": {"page_size": 2}})
    member = {"tenant_id": t, "user_id": user["id"]}
    added = await call("add_user_to_tenant", {**member, "role": "member"})
    assert added["tenant_user"]["role"] == "member"
    await call("update_tenant_user_role", {**member, "role": "viewer"})
    assert (await call("get_tenant_user", member))["tenant_user"]["role"] == "viewer"
    members = await call("list_tenant_users", {"tenant_id": t,
                                               "pagination": {"include_total": True}})
    assert members["pagination"]["total_count"] == 2

    # API keys: the secret once, then never
    key = await call("create_api_key", {"name": "results", "user_id": user["id"],
                                        "expires_at": (now + timedelta(days=1)).isoformat()})
    assert key["secret"].startswith(key["api_key"]["prefix"])
    assert key["api_key"]["expires_at"] is not None and key["api_key"]["revoked_at"] is None
    keys = await call("list_api_keys", {"user_id": user["id"]})
    assert [k["id"] for k in keys["api_keys"]] == [key["api_key"]["id"]]
    revoked = await call("revoke_api_key", {"id": key["api_key"]["id"]})
    assert revoked["api_key"]["revoked_at"] is not None
    await call("list_api_keys", {"pagination": {"page_size": 1, "include_total": True}})

    # node types: with and without a schema
    plain = (await call("create_node_type", {"tenant_id": t, "name": "Plain"}))["node_type"]
    assert plain["schema"] is None
    person = (await call("create_node_type", {"tenant_id": t, "name": "Person",
                                              "schema": PERSON_SCHEMA}))["node_type"]
    await call("get_node_type", {"tenant_id": t, "id": person["id"]})
    await call("update_node_type", {"tenant_id": t, "id": plain["id"], "description": "d"})
    await call("update_node_type", {"tenant_id": t, "id": plain["id"],
                                    "schema": {"type": "object"}})
    await call("get_node_type", {"tenant_id": t, "id": plain["id"], "version": 1})
    await call("list_node_type_versions", {"tenant_id": t, "id": plain["id"]})
    await call("list_node_types", {"tenant_id": t, "pagination": {"include_total": True}})

    # nodes: one at a time and in bulk
    a = (await call("create_node", {"tenant_id": t, "node_type_id": person["id"],
                                    "data": {"name": "a"}}))["node"]
    await call("get_node", {"tenant_id": t, "id": a["id"]})
    await call("update_node", {"tenant_id": t, "id": a["id"], "data": {"name": "a2"},
                               "expected_version": 1})
    bulk = await call("create_nodes", {"tenant_id": t, "nodes": [
        {"node_type_id": person["id"], "data": {"name": n}} for n in ("b", "c", "d")]})
    b, c, d = bulk["nodes"]
    assert (await call("create_nodes", {"tenant_id": t, "nodes": []})) == {"nodes": []}
    # schema changes: the dry run, a refusal's report (an error), a change with its report
    strict = {**PERSON_SCHEMA, "properties": {"name": {"type": "string", "maxLength": 1}}}
    dry = await call("check_node_type_schema", {"tenant_id": t, "id": person["id"],
                                                "schema": strict})
    assert dry["report"]["nodes_failing"] == 1  # a2
    await call("update_node_type", {"tenant_id": t, "id": person["id"], "schema": strict,
                                    "mode": "allow_invalid"})
    await call("list_nodes", {"tenant_id": t, "pagination": {"page_size": 2}})
    await call("list_nodes", {"tenant_id": t, "node_type_id": person["id"],
                              "pagination": {"include_total": True}})
    found = await call("query_nodes", {"tenant_id": t,
                                       "filter": {"field": "data.name", "op": "eq", "value": "b"},
                                       "pagination": {"include_total": True}})
    assert [n["id"] for n in found["nodes"]] == [b["id"]]
    await call("query_nodes", {"tenant_id": t, "sort": {"field": "data.name"},
                               "pagination": {"page_size": 1}})

    # relationships: a -> b -> c, one at a time and in bulk
    ab = (await call("create_relationship", {
        "tenant_id": t, "source_node_id": a["id"], "target_node_id": b["id"],
        "relationship_type": "knows", "data": {"since": 2020}}))["relationship"]
    await call("get_relationship", {"tenant_id": t, "id": ab["id"]})
    await call("update_relationship", {"tenant_id": t, "id": ab["id"], "data": {"since": 2021}})
    await call("create_relationships", {"tenant_id": t, "relationships": [
        {"source_node_id": b["id"], "target_node_id": c["id"], "relationship_type": "knows"}]})
    assert (await call("create_relationships", {"tenant_id": t, "relationships": []})) == {
        "relationships": []}
    await call("list_relationships", {"tenant_id": t, "source_node_id": a["id"]})
    await call("list_relationships", {"tenant_id": t, "pagination": {"include_total": True}})

    # walks
    walked = await call("traverse", {"tenant_id": t, "start_node_id": a["id"]})
    assert [(r["depth"], len(r["path"])) for r in walked["nodes"]] == [(1, 1), (2, 2)]
    assert walked["truncated"] is False
    assert (await call("traverse", {"tenant_id": t, "start_node_id": a["id"],
                                    "limit": 1}))["truncated"] is True
    path = await call("shortest_path", {"tenant_id": t, "source_node_id": a["id"],
                                        "target_node_id": c["id"]})
    assert path["path"]["length"] == 2
    none = await call("shortest_path", {"tenant_id": t, "source_node_id": a["id"],
                                        "target_node_id": d["id"]})
    assert none == {"path": None}
    same = await call("shortest_path", {"tenant_id": t, "source_node_id": a["id"],
                                        "target_node_id": a["id"]})
    assert same["path"]["length"] == 0

    # SQL
    query = await call("execute_query", {
        "tenant_id": t, "sql": "SELECT id, data, created_at, $1::int AS n, 1.5::float8 AS f, "
                               "ARRAY['x'] AS arr, NULL AS nothing FROM nodes ORDER BY id",
        "params": [7]})
    assert query["row_count"] == 4 and query["truncated"] is False
    assert [col["name"] for col in query["columns"]] == ["id", "data", "created_at", "n", "f",
                                                         "arr", "nothing"]
    cut = await call("execute_query", {"tenant_id": t, "sql": "SELECT 1 FROM nodes",
                                       "max_rows": 1})
    assert cut["truncated"] is True
    empty = await call("execute_query", {"tenant_id": t, "sql": "SELECT id FROM nodes WHERE false"})
    assert empty["rows"] == [] and empty["row_count"] == 0

    # pipelines and their runs
    pipeline = (await call("create_pipeline", {"tenant_id": t, "name": unique("p"),
                                               "code": VERBOSE_PIPELINE}))["pipeline"]
    p = pipeline["id"]
    await call("get_pipeline", {"tenant_id": t, "id": p})
    await call("update_pipeline", {"tenant_id": t, "id": p, "description": "d",
                                   "timeout_ms": 5000})
    await call("list_pipelines", {"tenant_id": t, "pagination": {"include_total": True}})
    done = (await call("run_pipeline", {
        "tenant_id": t, "pipeline_id": p, "debug_level": "verbose",
        "input": {"node": a["id"], "missing": str(uuid.uuid4())}}))["run"]
    assert done["status"] == "succeeded" and done["error"] is None
    assert [(op["ok"], "error" in op, "params" in op) for op in done["db_operations"]] == [
        (False, True, True), (True, False, True)]
    basic = (await call("run_pipeline", {"tenant_id": t, "pipeline_id": p,
                                         "input": {"node": a["id"],
                                                   "missing": str(uuid.uuid4())}}))["run"]
    assert all("params" not in op for op in basic["db_operations"])
    queued = (await call("run_pipeline", {"tenant_id": t, "pipeline_id": p, "wait": False,
                                          "input": {"node": a["id"],
                                                    "missing": str(uuid.uuid4())}}))["run"]
    assert queued["status"] == "queued" and queued["started_at"] is None
    await call("get_pipeline_run", {"tenant_id": t, "id": done["id"]})
    await call("list_pipeline_runs", {"tenant_id": t, "pipeline_id": p,
                                      "pagination": {"include_total": True}})

    failing = (await call("create_pipeline", {"tenant_id": t, "name": unique("p"),
                                              "code": FAILING_PIPELINE}))["pipeline"]
    with pytest.raises(PipelineFailed) as failed:  # no result, but data.run is a run
        await rpc.call("run_pipeline", {"tenant_id": t, "pipeline_id": failing["id"]})
    failed_run = failed.value.data["run"]
    check_shape(results.PipelineRun, failed_run)
    assert failed_run["error"]["type"] == "exception" and "traceback" in failed_run["error"]
    with pytest.raises(PipelineFailed) as failed:
        await rpc.call("run_pipeline", {"tenant_id": t, "pipeline_id": failing["id"],
                                        "debug_level": "none"})
    check_shape(results.PipelineRun, failed.value.data["run"])
    assert "traceback" not in failed.value.data["run"]["error"]

    spin = (await call("create_pipeline", {"tenant_id": t, "name": unique("p"),
                                           "code": SPIN_PIPELINE}))["pipeline"]
    spinning = (await call("run_pipeline", {"tenant_id": t, "pipeline_id": spin["id"],
                                            "wait": False}))["run"]
    cancelled = (await call("cancel_pipeline_run", {"tenant_id": t,
                                                    "id": spinning["id"]}))["run"]
    assert cancelled["status"] == "cancelled" and cancelled["error"]["type"] == "cancelled"
    await call("get_pipeline_run", {"tenant_id": t, "id": spinning["id"]})
    runs = await call("list_pipeline_runs", {"tenant_id": t,
                                             "pagination": {"page_size": 1000}})
    assert {r["status"] for r in runs["runs"]} >= {"succeeded", "failed", "cancelled"}

    # the change feed and webhooks (to a URL that never resolves: nothing is sent)
    feed = await call("list_changes", {"tenant_id": t, "limit": 5,
                                       "filter": {"kinds": ["node"]}})
    assert feed["changes"] and feed["head"] >= feed["last_position"]
    made = await call("create_webhook", {"tenant_id": t, "url": WEBHOOK_URL,
                                         "filter": {"kinds": ["node"]}, "description": "r"})
    hook = made["webhook"]
    assert made["secret"].startswith("whsec_") and hook["filter"] == {"kinds": ["node"]}
    await call("get_webhook", {"tenant_id": t, "id": hook["id"]})
    await call("update_webhook", {"tenant_id": t, "id": hook["id"], "status": "paused"})
    await call("list_webhooks", {"tenant_id": t, "pagination": {"include_total": True}})
    queued = await call("redeliver", {"tenant_id": t, "webhook_id": hook["id"],
                                      "position": hook["delivered_position"]})
    assert queued["delivery"]["status"] == "pending"
    await call("list_webhook_deliveries", {"tenant_id": t, "webhook_id": hook["id"]})
    await call("delete_webhook", {"tenant_id": t, "id": hook["id"]})

    # jobs: a migration with failures of each shape, and one cancelled
    people = (await call("create_node_type", {"tenant_id": t, "name": unique("M"),
                                              "schema": PERSON_SCHEMA}))["node_type"]
    for name in ("ok", "invalid", "raises"):
        await call("create_node", {"tenant_id": t, "node_type_id": people["id"],
                                   "data": {"name": name}})
    migration = (await call("create_pipeline", {"tenant_id": t, "name": unique("p"),
                                                "code": MIGRATION_PIPELINE}))["pipeline"]
    job = (await call("migrate_nodes", {"tenant_id": t, "node_type_id": people["id"],
                                        "pipeline_id": migration["id"],
                                        "to_version": 1}))["job"]
    for _ in range(300):
        job = (await call("get_job", {"tenant_id": t, "id": job["id"]}))["job"]
        if job["status"] == "succeeded":
            break
        await asyncio.sleep(0.05)
    assert job["status"] == "succeeded" and job["failed"] == 2, job
    assert {f["reason"] for f in job["failures"]} == {"invalid", "pipeline_error"}
    assert any("errors" in f for f in job["failures"])
    spinning_job = (await call("migrate_nodes", {"tenant_id": t, "node_type_id": people["id"],
                                                 "pipeline_id": spin["id"],
                                                 "to_version": 1}))["job"]
    cancelled_job = (await call("cancel_job", {"tenant_id": t, "id": spinning_job["id"]}))["job"]
    assert cancelled_job["status"] == "cancelled"
    await call("list_jobs", {"tenant_id": t, "pagination": {"include_total": True}})
    await call("list_jobs", {"tenant_id": t, "status": "cancelled"})

    # the audit trail, intact and broken
    trail = await call("list_audit_events", {"tenant_id": t,
                                             "pagination": {"page_size": 1000,
                                                            "include_total": True}})
    assert trail["pagination"]["total_count"] == len(trail["audit_events"])
    assert {e["outcome"] for e in trail["audit_events"]} == {"ok"}
    await call("list_audit_events", {"tenant_id": t, "method": "create_node",
                                     "pagination": {"page_size": 1}})
    assert await call("verify_audit_chain", {"tenant_id": t}) == {
        "ok": True, "events_checked": len(trail["audit_events"])}
    await call("list_audit_events", {"tenant_id": "00000000-0000-0000-0000-000000000000",
                                     "pagination": {"page_size": 5}})
    await call("list_denied_calls", {"pagination": {"page_size": 5}})

    # the change feed: every kind of object, with and without objects (deletes)
    await call("delete_relationship", {"tenant_id": t, "id": ab["id"]})
    feed = await call("list_changes", {"tenant_id": t, "limit": 1000})
    assert {e["kind"] for e in feed["changes"]} == {"membership", "node_type", "node",
                                                    "relationship", "pipeline"}
    assert any(e["object"] is None for e in feed["changes"])

    # deletes
    await call("delete_node", {"tenant_id": t, "id": d["id"]})
    await call("delete_node_type", {"tenant_id": t, "id": plain["id"]})
    await call("delete_pipeline", {"tenant_id": t, "id": failing["id"]})
    await call("remove_user_from_tenant", member)
    await call("delete_user", {"id": user["id"]})

    tid = uuid.UUID(t)
    await tamper_audit(database_url, "UPDATE audit_events SET summary = '{}' "
                                     "WHERE tenant_id = $1 AND seq = 3", tid)
    broken = await call("verify_audit_chain", {"tenant_id": t})
    assert broken["ok"] is False and broken["first_broken_seq"] == 3
    assert broken["event_id"] is not None
    await call("delete_tenant", {"id": t})

    other = (await call("create_tenant", {"slug": unique("r"), "name": "Tail"}))["tenant"]
    await call("create_node_type", {"tenant_id": other["id"], "name": "N"})
    # Events are chained just after commit; reading the trail makes sure they are.
    assert (await call("verify_audit_chain", {"tenant_id": other["id"]}))["ok"] is True
    await tamper_audit(database_url, "DELETE FROM audit_events WHERE tenant_id = $1 AND seq = "
                       "(SELECT max(seq) FROM audit_events WHERE tenant_id = $1)",
                       uuid.UUID(other["id"]))
    tail = await call("verify_audit_chain", {"tenant_id": other["id"]})
    assert tail["ok"] is False and tail["event_id"] is None
    await call("delete_tenant", {"id": other["id"]})

    assert call.validated == set(REGISTRY), (
        f"no result checked for {sorted(set(REGISTRY) - call.validated)}")


@pytest.fixture(scope="module")
def string_server(database_url):
    with running_server({"FLEXDB_DATABASE_URL": database_url,
                         "FLEXDB_JSON_FIELDS": "string"}) as srv:
        yield srv


async def test_documents_as_strings_match_the_models(string_server):
    async with FlexDBClient(string_server.url, api_key=string_server.admin_key) as client:
        call = Checked(client)
        t = (await call("create_tenant", {"slug": unique("s"), "name": "S"}))["tenant"]["id"]
        plain = (await call("create_node_type", {"tenant_id": t, "name": "Plain"}))["node_type"]
        assert plain["schema"] == ""
        typed = (await call("create_node_type", {"tenant_id": t, "name": "Typed",
                                                 "schema": {"type": "object"}}))["node_type"]
        assert isinstance(typed["schema"], str)
        await call("list_node_types", {"tenant_id": t})
        a = (await call("create_node", {"tenant_id": t, "node_type_id": typed["id"],
                                        "data": {"x": 1}}))["node"]
        assert isinstance(a["data"], str)
        b, = (await call("create_nodes", {"tenant_id": t, "nodes": [
            {"node_type_id": plain["id"]}]}))["nodes"]
        await call("list_nodes", {"tenant_id": t})
        await call("query_nodes", {"tenant_id": t})
        rel = (await call("create_relationship", {
            "tenant_id": t, "source_node_id": a["id"], "target_node_id": b["id"],
            "relationship_type": "r"}))["relationship"]
        assert rel["data"] == "{}"
        await call("list_relationships", {"tenant_id": t})
        walked = await call("traverse", {"tenant_id": t, "start_node_id": a["id"]})
        assert isinstance(walked["nodes"][0]["node"]["data"], str)
        await call("delete_tenant", {"id": t})
