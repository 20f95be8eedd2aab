"""Nodes: CRUD, schema validation of their data, tenant isolation, optimistic concurrency,
the all-or-nothing bulk create_nodes, schema changes racing writes and the fast path for
flat schemas. Node types themselves: test_node_types.py."""
from __future__ import annotations

import asyncio
import json
import time
import uuid

import asyncpg
import pytest

from rpc_server.client import Conflict, InvalidParams, NotFound

from .conftest import (
    count_nodes,
    error_fields,
    get_node,
    make_node,
    make_node_type,
    make_tenant,
    missing_id,
    people,
)

# ---------------------------------------------------------------- nodes

async def test_create_get_update_delete_node(rpc, tenant, node_type):
    tid = tenant["id"]
    node = await make_node(rpc, tid, node_type["id"], {"name": "Ada", "age": 36})
    assert (node["tenant_id"], node["node_type_id"]) == (tid, node_type["id"])
    assert node["data"] == {"name": "Ada", "age": 36} and node["version"] == 1
    assert await get_node(rpc, tid, node["id"]) == node

    updated = (await rpc.call("update_node", {"tenant_id": tid, "id": node["id"],
                                              "data": {"name": "Ada L."}}))["node"]
    assert updated["data"] == {"name": "Ada L."}  # data is replaced, not merged
    assert updated["version"] == 2 and updated["created_at"] == node["created_at"]

    assert await rpc.call("delete_node", {"tenant_id": tid, "id": node["id"]}) == \
        {"success": True}
    with pytest.raises(NotFound):
        await get_node(rpc, tid, node["id"])
    with pytest.raises(NotFound):
        await rpc.call("delete_node", {"tenant_id": tid, "id": node["id"]})


async def test_create_node_with_data_as_json_string(rpc, tenant, node_type):
    node = await make_node(rpc, tenant["id"], node_type["id"], '{"name": "Charles", "age": 3}')
    assert node["data"] == {"name": "Charles", "age": 3}


async def test_node_data_defaults_to_empty_object(rpc, tenant):
    nt = await make_node_type(rpc, tenant["id"])
    assert (await make_node(rpc, tenant["id"], nt["id"]))["data"] == {}


@pytest.mark.parametrize("data, field", [
    ({"name": "Ada", "age": -1}, "data.age"),
    ({"name": "Ada", "age": "old"}, "data.age"),
    ({"name": 42}, "data.name"),
])
async def test_data_violating_the_schema_is_invalid_params(rpc, tenant, node_type, data, field):
    with pytest.raises(InvalidParams) as exc:
        await make_node(rpc, tenant["id"], node_type["id"], data)
    assert exc.value.code == -32602
    assert error_fields(exc) == [field]
    assert await count_nodes(rpc, tenant["id"]) == 0


async def test_missing_required_property_names_the_property(rpc, tenant, node_type):
    with pytest.raises(InvalidParams) as exc:
        await make_node(rpc, tenant["id"], node_type["id"], {"age": 3})
    assert error_fields(exc) == ["data.name"]


async def test_every_violation_is_reported(rpc, tenant, node_type):
    with pytest.raises(InvalidParams) as exc:
        await make_node(rpc, tenant["id"], node_type["id"], {"name": 1, "age": -1})
    assert sorted(error_fields(exc)) == ["data.age", "data.name"]


@pytest.mark.parametrize("data", ["[1,2]", 5, [1, 2], "not json", '{"name": ', "null", True])
async def test_data_that_is_not_an_object_is_invalid_params(rpc, tenant, node_type, data):
    with pytest.raises(InvalidParams) as exc:
        await make_node(rpc, tenant["id"], node_type["id"], data)
    assert exc.value.code == -32602  # not -32603
    assert error_fields(exc) == ["data"]


async def test_node_with_another_tenants_node_type_is_not_found(rpc, tenant, node_type):
    other = await make_tenant(rpc)
    with pytest.raises(NotFound) as exc:
        await make_node(rpc, other["id"], node_type["id"], {"name": "Intruder"})
    assert exc.value.data["kind"] == "node_type"
    assert await count_nodes(rpc, other["id"]) == 0
    assert await count_nodes(rpc, tenant["id"]) == 0


async def test_node_with_missing_node_type_is_not_found(rpc, tenant):
    with pytest.raises(NotFound) as exc:
        await make_node(rpc, tenant["id"], missing_id())
    assert exc.value.data["kind"] == "node_type"


async def test_node_of_another_tenant_looks_exactly_like_a_missing_one(rpc, tenant, node_type):
    node = await make_node(rpc, tenant["id"], node_type["id"], {"name": "Ada"})
    other = await make_tenant(rpc)
    absent = missing_id()
    with pytest.raises(NotFound) as wrong_tenant:
        await get_node(rpc, other["id"], node["id"])
    with pytest.raises(NotFound) as missing:
        await get_node(rpc, tenant["id"], absent)
    assert wrong_tenant.value.message == missing.value.message
    assert wrong_tenant.value.data == {**missing.value.data, "id": node["id"]}
    assert wrong_tenant.value.data["kind"] == "node"

    with pytest.raises(NotFound):
        await rpc.call("update_node", {"tenant_id": other["id"], "id": node["id"],
                                       "data": {"name": "Hijacked"}})
    with pytest.raises(NotFound):
        await rpc.call("delete_node", {"tenant_id": other["id"], "id": node["id"]})
    assert await get_node(rpc, tenant["id"], node["id"]) == node


async def test_update_node_with_expected_version(rpc, tenant, node_type):
    tid = tenant["id"]
    node = await make_node(rpc, tid, node_type["id"], {"name": "v1"})
    v2 = (await rpc.call("update_node", {"tenant_id": tid, "id": node["id"],
                                         "data": {"name": "v2"}, "expected_version": 1}))["node"]
    assert v2["version"] == 2 and v2["data"] == {"name": "v2"}
    v3 = (await rpc.call("update_node", {"tenant_id": tid, "id": node["id"],
                                         "data": {"name": "v3"}, "expected_version": 2}))["node"]
    assert v3["version"] == 3

    with pytest.raises(Conflict) as exc:
        await rpc.call("update_node", {"tenant_id": tid, "id": node["id"],
                                       "data": {"name": "stale"}, "expected_version": 2})
    assert exc.value.code == -32004
    data = exc.value.data
    assert data["type"] == "version_conflict" and data["kind"] == "node"
    assert (data["expected_version"], data["current_version"]) == (2, 3)
    assert await get_node(rpc, tid, node["id"]) == v3


async def test_update_node_with_invalid_data_changes_nothing(rpc, tenant, node_type):
    node = await make_node(rpc, tenant["id"], node_type["id"], {"name": "Ada"})
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("update_node", {"tenant_id": tenant["id"], "id": node["id"],
                                       "data": {"name": "Ada", "age": -5}})
    assert error_fields(exc) == ["data.age"]
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("update_node", {"tenant_id": tenant["id"], "id": node["id"],
                                       "data": "[1,2]"})
    assert error_fields(exc) == ["data"]
    assert await get_node(rpc, tenant["id"], node["id"]) == node


async def test_update_node_without_data_leaves_it_unchanged(rpc, tenant, node_type):
    """flex-db's `data` is optional: the node stays as it is (no write, no audit event),
    and expected_version and a missing node answer as for any update."""
    node = await make_node(rpc, tenant["id"], node_type["id"], {"name": "Ada"})
    args = {"tenant_id": tenant["id"], "id": node["id"]}
    assert (await rpc.call("update_node", args))["node"] == node
    assert (await rpc.call("update_node", {**args, "data": None, "expected_version": 1}))[
        "node"] == node
    with pytest.raises(Conflict) as exc:
        await rpc.call("update_node", {**args, "expected_version": 2})
    assert exc.value.type == "version_conflict"
    with pytest.raises(NotFound) as missing:
        await rpc.call("update_node", {**args, "id": missing_id()})
    assert missing.value.data["kind"] == "node"
    assert await get_node(rpc, tenant["id"], node["id"]) == node
    trail = (await rpc.call("list_audit_events", {"tenant_id": tenant["id"],
                                                  "target_id": node["id"]}))["audit_events"]
    assert [e["method"] for e in trail] == ["create_node"]


async def test_update_missing_node_is_not_found(rpc, tenant):
    with pytest.raises(NotFound) as exc:
        await rpc.call("update_node", {"tenant_id": tenant["id"], "id": missing_id(),
                                       "data": {}})
    assert exc.value.data["kind"] == "node"


@pytest.mark.parametrize("field", ["id", "tenant_id"])
async def test_non_uuid_node_ids_are_invalid_params(rpc, tenant, field):
    params = {"tenant_id": tenant["id"], "id": missing_id(), field: "nope"}
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("get_node", params)
    assert error_fields(exc) == [field]


@pytest.mark.parametrize("spelling", [str.upper, lambda text: text.replace("-", ""),
                                      lambda text: "urn:uuid:" + text,
                                      lambda text: "{" + text + "}"])
async def test_every_spelling_of_an_id_finds_the_same_node(rpc, tenant, node_type, spelling):
    """Ids in the canonical text take a faster parse (api/params.py _fast_uuid); the other
    spellings a UUID parser accepts still work, for the tenant and the node alike."""
    node = await make_node(rpc, tenant["id"], node_type["id"], {"name": "Ada"})
    found = await rpc.call("get_node", {"tenant_id": spelling(tenant["id"]),
                                        "id": spelling(node["id"])})
    assert found["node"] == node
    listed = await rpc.call("list_nodes", {"tenant_id": spelling(tenant["id"]),
                                           "node_type_id": spelling(node_type["id"])})
    assert node["id"] in [n["id"] for n in listed["nodes"]]


@pytest.mark.parametrize("text", ["0123456-78901-2345-6789-0123456789ab",  # hyphens moved
                                  "01234567-8901-2345-6789-0123456789ag",  # not hex
                                  "01234567-8901-2345-6789-0123456789ab ",
                                  "０1234567-8901-2345-6789-0123456789ab"])  # a wide digit
async def test_near_uuids_are_invalid_params(rpc, tenant, text):
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("get_node", {"tenant_id": tenant["id"], "id": text})
    assert error_fields(exc) == ["id"]


async def test_list_nodes_with_and_without_node_type_filter(rpc, tenant, node_type):
    tid = tenant["id"]
    other_type = await make_node_type(rpc, tid, "Company")
    a = await make_node(rpc, tid, node_type["id"], {"name": "a"})
    c = await make_node(rpc, tid, other_type["id"], {"name": "c"})
    b = await make_node(rpc, tid, node_type["id"], {"name": "b"})

    everything = await rpc.call("list_nodes", {"tenant_id": tid})
    assert [n["id"] for n in everything["nodes"]] == [a["id"], c["id"], b["id"]]
    assert everything["pagination"] == {"next_page_token": "", "total_count": 3}

    persons = await rpc.call("list_nodes", {"tenant_id": tid, "node_type_id": node_type["id"]})
    assert persons["nodes"] == [a, b]
    assert persons["pagination"]["total_count"] == 2

    page = await rpc.call("list_nodes", {"tenant_id": tid, "pagination": {"page_size": 2}})
    assert [n["id"] for n in page["nodes"]] == [a["id"], c["id"]]
    assert page["pagination"]["next_page_token"]


async def test_list_nodes_is_tenant_scoped(rpc, tenant, node_type):
    mine = await make_node(rpc, tenant["id"], node_type["id"], {"name": "mine"})
    other = await make_tenant(rpc)
    other_type = await make_node_type(rpc, other["id"], node_type["name"])
    await make_node(rpc, other["id"], other_type["id"], {"name": "theirs"})
    listed = await rpc.call("list_nodes", {"tenant_id": tenant["id"]})
    assert listed["nodes"] == [mine]
    # filtering by another tenant's node type finds nothing rather than leaking
    leaked = await rpc.call("list_nodes", {"tenant_id": tenant["id"],
                                           "node_type_id": other_type["id"]})
    assert leaked["nodes"] == [] and leaked["pagination"]["total_count"] == 0
    with pytest.raises(NotFound) as exc:
        await rpc.call("list_nodes", {"tenant_id": missing_id()})
    assert exc.value.data["kind"] == "tenant"


# ---------------------------------------------------------------- bulk create_nodes

async def test_bulk_create_1000_nodes_in_input_order(rpc, tenant, node_type):
    items = people(node_type["id"], 1000)
    created = (await rpc.call("create_nodes", {"tenant_id": tenant["id"], "nodes": items}))["nodes"]
    assert len(created) == 1000
    assert [n["data"] for n in created] == [i["data"] for i in items]
    assert len({n["id"] for n in created}) == 1000
    assert all(n["tenant_id"] == tenant["id"] and n["node_type_id"] == node_type["id"]
               and n["version"] == 1 for n in created)
    assert await count_nodes(rpc, tenant["id"]) == 1000
    assert await get_node(rpc, tenant["id"], created[500]["id"]) == created[500]
    listed = await rpc.call("list_nodes", {"tenant_id": tenant["id"],
                                           "pagination": {"page_size": 1000}})
    assert [n["id"] for n in listed["nodes"]] == [n["id"] for n in created]


async def test_bulk_create_mixed_node_types_and_string_data(rpc, tenant, node_type):
    free = await make_node_type(rpc, tenant["id"], "Free")
    items = [{"node_type_id": node_type["id"], "data": {"name": "a"}},
             {"node_type_id": free["id"], "data": '{"x": 1}'},
             {"node_type_id": free["id"]}]
    created = (await rpc.call("create_nodes", {"tenant_id": tenant["id"], "nodes": items}))["nodes"]
    assert [(n["node_type_id"], n["data"]) for n in created] == [
        (node_type["id"], {"name": "a"}), (free["id"], {"x": 1}), (free["id"], {})]


async def test_bulk_create_nothing(rpc, tenant):
    assert await rpc.call("create_nodes", {"tenant_id": tenant["id"], "nodes": []}) == \
        {"nodes": []}


async def test_bulk_create_1001_nodes_is_invalid_params(rpc, tenant, node_type):
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("create_nodes", {"tenant_id": tenant["id"],
                                        "nodes": people(node_type["id"], 1001)})
    assert exc.value.code == -32602
    assert error_fields(exc) == ["nodes"]
    assert await count_nodes(rpc, tenant["id"]) == 0


async def test_bulk_schema_violation_creates_nothing(rpc, tenant, node_type):
    await rpc.call("create_nodes", {"tenant_id": tenant["id"], "nodes": people(node_type["id"], 3)})
    before = await count_nodes(rpc, tenant["id"])
    items = people(node_type["id"], 20)
    items[7]["data"]["age"] = -1
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("create_nodes", {"tenant_id": tenant["id"], "nodes": items})
    errors = exc.value.data["errors"]
    assert len(errors) == 1
    assert errors[0]["index"] == 7 and errors[0]["field"] == "nodes.7.data.age"
    assert await count_nodes(rpc, tenant["id"]) == before == 3


async def test_bulk_reports_every_invalid_item(rpc, tenant, node_type):
    items = people(node_type["id"], 10)
    items[2]["data"]["age"] = "x"
    items[5]["data"] = {"age": 1}  # no name
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("create_nodes", {"tenant_id": tenant["id"], "nodes": items})
    assert [(e["index"], e["field"]) for e in exc.value.data["errors"]] == [
        (2, "nodes.2.data.age"), (5, "nodes.5.data.name")]
    assert await count_nodes(rpc, tenant["id"]) == 0


async def test_bulk_item_data_not_an_object_is_invalid_params(rpc, tenant, node_type):
    items = people(node_type["id"], 5)
    items[2]["data"] = "[1,2]"
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("create_nodes", {"tenant_id": tenant["id"], "nodes": items})
    assert exc.value.data["errors"][0]["index"] == 2
    assert error_fields(exc) == ["nodes.2.data"]
    assert await count_nodes(rpc, tenant["id"]) == 0


@pytest.mark.parametrize("foreign", [False, True], ids=["missing", "other-tenant"])
async def test_bulk_unknown_node_type_creates_nothing(rpc, tenant, node_type, foreign):
    await rpc.call("create_nodes", {"tenant_id": tenant["id"], "nodes": people(node_type["id"], 2)})
    before = await count_nodes(rpc, tenant["id"])
    if foreign:
        other = await make_tenant(rpc)
        bad_type = (await make_node_type(rpc, other["id"], node_type["name"]))["id"]
    else:
        bad_type = missing_id()
    items = people(node_type["id"], 10)
    items[3]["node_type_id"] = bad_type
    with pytest.raises(NotFound) as exc:
        await rpc.call("create_nodes", {"tenant_id": tenant["id"], "nodes": items})
    assert exc.value.code == -32001
    data = exc.value.data
    assert data["index"] == 3 and data["kind"] == "node_type" and data["id"] == bad_type
    assert await count_nodes(rpc, tenant["id"]) == before == 2


async def test_concurrent_updates_with_the_same_expected_version_exactly_one_wins(
        rpc, tenant, node_type):
    node = await make_node(rpc, tenant["id"], node_type["id"], {"name": "start"})
    results = await asyncio.gather(*(
        rpc.call("update_node", {"tenant_id": tenant["id"], "id": node["id"],
                                 "data": {"name": f"writer{i}"}, "expected_version": 1})
        for i in range(10)), return_exceptions=True)
    winners = [r["node"] for r in results if isinstance(r, dict)]
    losers = [r for r in results if not isinstance(r, dict)]
    assert len(winners) == 1, results
    assert all(isinstance(e, Conflict) and e.type == "version_conflict" for e in losers), losers
    assert await get_node(rpc, tenant["id"], node["id"]) == winners[0]
    assert winners[0]["version"] == 2


# ---------------------------------------------------------------- schema changes racing writes

TIGHT = {"type": "object", "required": ["tight"]}


async def commit_time_probe(conn, tenant_id: str) -> str:
    """A table that gets the id of every node of the tenant which, when its transaction
    commits, lacks "tight" while its node type's committed schema requires it: a node
    stored against a schema version no longer current at commit. (A deferred trigger, run
    at commit; each of its statements sees what has committed by then.) Returns its name."""
    name = f"probe_{uuid.uuid4().hex[:12]}"
    await conn.execute(f"""
        CREATE TABLE {name} (node_id uuid);
        CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NOT NEW.data ? 'tight' AND EXISTS (
                    SELECT 1 FROM node_types WHERE tenant_id = NEW.tenant_id
                    AND id = NEW.node_type_id AND schema -> 'required' ? 'tight') THEN
                INSERT INTO {name} VALUES (NEW.id);
            END IF;
            RETURN NULL;
        END $$;
        CREATE CONSTRAINT TRIGGER {name} AFTER INSERT ON nodes
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
            WHEN (NEW.tenant_id = '{tenant_id}') EXECUTE FUNCTION {name}();""")
    return name


async def drop_probe(conn, name: str) -> None:
    await conn.execute(f"DROP TRIGGER {name} ON nodes; DROP FUNCTION {name}(); "
                       f"DROP TABLE {name}")


async def test_create_nodes_never_commits_against_a_schema_tightened_meanwhile(
        rpc, database_url):
    """update_node_type requiring "tight" while create_nodes of nodes without it runs:
    the bulk either commits before the change (its nodes were valid then) or is refused
    as invalid params, never committed after it."""
    tenant = await make_tenant(rpc)
    tid = tenant["id"]
    batch = [{"data": {"label": f"n{i}", "values": list(range(20))}} for i in range(1000)]
    conn = await asyncpg.connect(database_url)
    probe = await commit_time_probe(conn, tid)
    try:
        outcomes = []
        for round_ in range(8):
            node_type = await make_node_type(rpc, tid, schema={"type": "object"})
            nodes = [{"node_type_id": node_type["id"], **item} for item in batch]
            started = time.perf_counter()
            bulk = asyncio.create_task(rpc.call("create_nodes", {"tenant_id": tid,
                                                                 "nodes": nodes}))
            await asyncio.sleep(0.02 * round_)  # the change lands at a different point each time
            await rpc.call("update_node_type", {"tenant_id": tid, "id": node_type["id"],
                                                "schema": TIGHT, "mode": "allow_invalid"})
            try:
                await bulk
                outcomes.append(("created", round(time.perf_counter() - started, 3)))
            except InvalidParams as exc:
                assert exc.data["errors"][0]["field"] == "nodes.0.data.tight"
                outcomes.append(("refused", round(time.perf_counter() - started, 3)))
        stale = await conn.fetchval(f"SELECT count(*) FROM {probe}")
        assert stale == 0, outcomes
    finally:
        await drop_probe(conn, probe)
        await conn.close()


async def waiting_on_a_lock(conn, statement_start: str) -> bool:
    return await conn.fetchval(
        "SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND query LIKE $1", statement_start + "%")


async def test_create_nodes_held_at_its_insert_while_the_schema_is_tightened(
        rpc, database_url):
    """The race made certain: the test holds create_nodes at its INSERT (a lock on the
    nodes table), after its documents were validated, and tightens the schema then. The
    change must wait for the bulk's commit (or the bulk must be refused); a node committed
    against the old version after the new one committed is what the probe catches."""
    tenant = await make_tenant(rpc)
    tid = tenant["id"]
    node_type = await make_node_type(rpc, tid, schema={"type": "object"})
    nodes = [{"node_type_id": node_type["id"], "data": {"label": f"n{i}"}} for i in range(50)]
    conn = await asyncpg.connect(database_url)
    probe = await commit_time_probe(conn, tid)
    blocker = await asyncpg.connect(database_url)
    try:
        holding = blocker.transaction()
        await holding.start()
        await blocker.execute("LOCK TABLE nodes IN SHARE MODE")
        bulk = asyncio.create_task(rpc.call("create_nodes", {"tenant_id": tid, "nodes": nodes}))
        for _ in range(500):
            if await waiting_on_a_lock(conn, "INSERT INTO nodes"):
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("create_nodes never reached its INSERT")
        tighten = asyncio.create_task(rpc.call("update_node_type", {
            "tenant_id": tid, "id": node_type["id"], "schema": TIGHT, "mode": "allow_invalid"}))
        for _ in range(500):  # the change commits (the defect) or waits for the bulk
            if tighten.done() or await waiting_on_a_lock(conn, "SELECT %FROM node_types%"
                                                                 "FOR UPDATE"):
                break
            await asyncio.sleep(0.02)
        await holding.rollback()
        created, tightened = await asyncio.gather(bulk, tighten, return_exceptions=True)
        assert not isinstance(tightened, Exception), tightened
        assert await conn.fetchval(f"SELECT count(*) FROM {probe}") == 0, created
    finally:
        await blocker.close()
        await drop_probe(conn, probe)
        await conn.close()


async def test_create_node_never_commits_against_a_schema_tightened_meanwhile(
        rpc, database_url):
    """create_node's checked INSERT: the same guarantee, one node at a time."""
    tenant = await make_tenant(rpc)
    tid = tenant["id"]
    conn = await asyncpg.connect(database_url)
    probe = await commit_time_probe(conn, tid)
    try:
        for _ in range(5):
            node_type = await make_node_type(rpc, tid, schema={"type": "object"})
            creates = [rpc.call("create_node", {"tenant_id": tid, "node_type_id": node_type["id"],
                                                "data": {"n": i}}) for i in range(40)]
            tighten = rpc.call("update_node_type", {"tenant_id": tid, "id": node_type["id"],
                                                    "schema": TIGHT, "mode": "allow_invalid"})
            results = await asyncio.gather(*creates[:20], tighten, *creates[20:],
                                           return_exceptions=True)
            assert all(isinstance(r, (dict, InvalidParams)) for r in results), results
        assert await conn.fetchval(f"SELECT count(*) FROM {probe}") == 0
    finally:
        await drop_probe(conn, probe)
        await conn.close()


# ---------------------------------------------------------------- U+0000

# U+0000 is valid JSON, but PostgreSQL text and jsonb cannot store it: it must be refused as
# invalid params, never reach the database and come back as an internal error.

@pytest.mark.parametrize("how", ["create-value", "create-key", "create-json-string",
                                 "bulk", "update"])
async def test_nul_character_in_node_data_is_invalid_params(rpc, tenant, how):
    tid = tenant["id"]
    nt = await make_node_type(rpc, tid)
    existing = await make_node(rpc, tid, nt["id"], {"ok": True})
    calls = {
        "create-value": ("create_node", {"node_type_id": nt["id"], "data": {"a": "x\x00y"}}),
        "create-key": ("create_node", {"node_type_id": nt["id"], "data": {"a\x00": 1}}),
        "create-json-string": ("create_node", {"node_type_id": nt["id"],
                                               "data": '{"a": "x\\u0000y"}'}),
        "bulk": ("create_nodes", {"nodes": [{"node_type_id": nt["id"], "data": {"a": "ok"}},
                                            {"node_type_id": nt["id"], "data": {"a": "\x00"}}]}),
        "update": ("update_node", {"id": existing["id"], "data": {"a": "\x00"}}),
    }
    method, params = calls[how]
    with pytest.raises(InvalidParams) as exc:
        await rpc.call(method, {"tenant_id": tid, **params})
    assert error_fields(exc)[0] in ("data", "nodes.1.data") or \
        error_fields(exc)[0].startswith(("data.", "nodes.1.data."))
    assert await count_nodes(rpc, tid) == 1
    assert await get_node(rpc, tid, existing["id"]) == existing



# ---------------------------------------------------------------- the fast path for flat schemas

FLAT_SCHEMAS = [
    {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 10},
                                      "s": {"type": "string", "minLength": 1, "maxLength": 3},
                                      "x": {"type": "number"}, "b": {"type": "boolean"},
                                      "z": {"type": "null"}, "any": {}},
     "required": ["n"]},
    {"type": "object", "properties": {"s": {"type": "string"}, "o": {"type": "object"},
                                      "a": {"type": "array", "title": "annotation only"}},
     "additionalProperties": False},
    {"properties": {"n": {"minimum": 1.5}, "s": {"maxLength": 1}}, "required": ["s"]},
]
VALUES = [None, True, False, 0, 1, -1, 1.0, 1.5, 11, 2.5e300, "", "ab", "abcd", "\U0001F600",
          [], [1], {}, {"k": 1}]


@pytest.mark.parametrize("schema", FLAT_SCHEMAS)
async def test_flat_schemas_accept_and_refuse_exactly_as_json_schema_says(rpc, tenant, schema):
    """Flat object schemas are checked by a fast path before jsonschema (schema_fast_path):
    for random documents, the nodes refused are exactly those jsonschema finds invalid."""
    import random

    from jsonschema import Draft202012Validator

    reference = Draft202012Validator(schema)
    nt = await make_node_type(rpc, tenant["id"], schema=schema)
    rng = random.Random(json.dumps(schema))
    for _ in range(8):
        docs = [{k: rng.choice(VALUES) for k in ("n", "s", "x", "b", "z", "o", "a", "any", "e")
                 if rng.random() < 0.4} for _ in range(12)]
        expected_bad = {i for i, d in enumerate(docs) if not reference.is_valid(d)}
        nodes = [{"node_type_id": nt["id"], "data": d} for d in docs]
        try:
            created = (await rpc.call("create_nodes", {"tenant_id": tenant["id"],
                                                       "nodes": nodes}))["nodes"]
        except InvalidParams as exc:
            assert {e["index"] for e in exc.data["errors"]} == expected_bad
        else:
            assert not expected_bad and [n["data"] for n in created] == docs
        # one at a time too (create_node's path)
        for i, d in enumerate(docs[:4]):
            if i in expected_bad:
                with pytest.raises(InvalidParams):
                    await make_node(rpc, tenant["id"], nt["id"], d)
            else:
                assert (await make_node(rpc, tenant["id"], nt["id"], d))["data"] == d


async def test_a_nested_schema_dialect_is_left_to_json_schema(rpc, tenant):
    """A "$schema" inside a property switches jsonschema to that draft (draft 4: 1.0 is not
    an integer); the fast path for flat schemas must not answer for it."""
    schema = {"type": "object", "properties": {
        "n": {"$schema": "http://json-schema.org/draft-04/schema#", "type": "integer"}}}
    nt = await make_node_type(rpc, tenant["id"], schema=schema)
    with pytest.raises(InvalidParams):
        await make_node(rpc, tenant["id"], nt["id"], {"n": 1.0})
    assert (await make_node(rpc, tenant["id"], nt["id"], {"n": 1}))["data"] == {"n": 1}


async def test_a_duplicate_key_does_not_make_a_json_text_document_too_deep(rpc, tenant,
                                                                           node_type):
    """Only the last copy of a duplicate key counts (as when parsed): a deep first copy
    does not make the document too deep."""
    deep = "[" * 150 + "]" * 150
    data = '{"name": "x", "junk": %s, "junk": 1}' % deep
    node = await make_node(rpc, tenant["id"], node_type["id"], data)
    assert node["data"] == {"name": "x", "junk": 1}
