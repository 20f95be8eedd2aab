"""Node types and their JSON Schemas: create, update, list, delete (with what it cascades
to), tenant isolation, and the schema checks made when a schema is saved."""
from __future__ import annotations

import json

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
)

PERSON = {"type": "object",
          "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
          "required": ["name"]}


async def test_create_node_type_with_schema_object(rpc, tenant):
    nt = await make_node_type(rpc, tenant["id"], "Person", description="people", schema=PERSON)
    assert (nt["tenant_id"], nt["name"], nt["description"]) == (tenant["id"], "Person", "people")
    assert nt["schema"] == PERSON and nt["version"] == 1
    got = (await rpc.call("get_node_type", {"tenant_id": tenant["id"], "id": nt["id"]}))
    assert got["node_type"] == nt


async def test_create_node_type_with_schema_as_json_string(rpc, tenant):
    nt = await make_node_type(rpc, tenant["id"], schema=json.dumps(PERSON))
    assert nt["schema"] == PERSON
    # ... and the string schema is enforced like an object one
    with pytest.raises(InvalidParams) as exc:
        await make_node(rpc, tenant["id"], nt["id"], {"name": "x", "age": -1})
    assert error_fields(exc) == ["data.age"]


@pytest.mark.parametrize("schema", [None, ""])
async def test_node_type_without_schema_accepts_any_object(rpc, tenant, schema):
    nt = await make_node_type(rpc, tenant["id"], schema=schema)
    assert nt["schema"] is None and nt["description"] == ""
    node = await make_node(rpc, tenant["id"], nt["id"], {"anything": [1, {"goes": True}]})
    assert node["data"] == {"anything": [1, {"goes": True}]}


@pytest.mark.parametrize("schema", [{"type": "nope"}, json.dumps({"type": "nope"}),
                                    {"properties": {"age": {"minimum": "zero"}}},
                                    {"required": "name"}])
async def test_invalid_json_schema_is_invalid_params(rpc, tenant, schema):
    with pytest.raises(InvalidParams) as exc:
        await make_node_type(rpc, tenant["id"], "Bad", schema=schema)
    assert exc.value.code == -32602
    assert error_fields(exc) == ["schema"]
    assert "not a valid JSON Schema" in exc.value.data["errors"][0]["message"]
    listed = await rpc.call("list_node_types", {"tenant_id": tenant["id"]})
    assert listed["node_types"] == []


@pytest.mark.parametrize("schema", ['{"type": "object"', "not json", "[1, 2]", "5", 5, [1]])
async def test_malformed_or_non_object_schema_is_invalid_params(rpc, tenant, schema):
    with pytest.raises(InvalidParams) as exc:
        await make_node_type(rpc, tenant["id"], "Bad", schema=schema)
    assert exc.value.code == -32602  # not -32603: the server must not crash on it
    assert error_fields(exc) == ["schema"]


@pytest.mark.parametrize("name", ["", "n" * 201])
async def test_bad_node_type_name_is_invalid_params(rpc, tenant, name):
    with pytest.raises(InvalidParams) as exc:
        await make_node_type(rpc, tenant["id"], name)
    assert error_fields(exc) == ["name"]


async def test_duplicate_node_type_name_in_a_tenant_is_a_conflict(rpc, tenant):
    await make_node_type(rpc, tenant["id"], "Person")
    with pytest.raises(Conflict) as exc:
        await make_node_type(rpc, tenant["id"], "Person", schema=PERSON)
    assert exc.value.code == -32004
    assert exc.value.data["type"] == "conflict" and exc.value.data["field"] == "name"


async def test_same_node_type_name_in_another_tenant_is_fine(rpc, tenant):
    other = await make_tenant(rpc)
    a = await make_node_type(rpc, tenant["id"], "Person")
    b = await make_node_type(rpc, other["id"], "Person")
    assert a["id"] != b["id"] and b["tenant_id"] == other["id"]


async def test_node_type_in_missing_tenant_is_not_found(rpc):
    with pytest.raises(NotFound) as exc:
        await make_node_type(rpc, missing_id(), "Person")
    assert exc.value.data["kind"] == "tenant"


async def test_node_type_of_another_tenant_is_not_found(rpc, tenant, node_type):
    other = await make_tenant(rpc)
    for method, extra in (("get_node_type", {}), ("update_node_type", {"name": "Stolen"}),
                          ("delete_node_type", {})):
        with pytest.raises(NotFound) as exc:
            await rpc.call(method, {"tenant_id": other["id"], "id": node_type["id"], **extra})
        assert exc.value.data["kind"] == "node_type"
    got = await rpc.call("get_node_type", {"tenant_id": tenant["id"], "id": node_type["id"]})
    assert got["node_type"] == node_type


async def test_update_node_type_name_and_description(rpc, tenant, node_type):
    updated = (await rpc.call("update_node_type", {
        "tenant_id": tenant["id"], "id": node_type["id"], "name": "Human",
        "description": "a person", "expected_version": 1}))["node_type"]
    assert (updated["name"], updated["description"], updated["version"]) == ("Human",
                                                                             "a person", 2)
    assert updated["schema"] == node_type["schema"]  # absent = unchanged


async def test_update_node_type_version_conflict(rpc, tenant, node_type):
    await rpc.call("update_node_type", {"tenant_id": tenant["id"], "id": node_type["id"],
                                        "description": "v2"})
    with pytest.raises(Conflict) as exc:
        await rpc.call("update_node_type", {"tenant_id": tenant["id"], "id": node_type["id"],
                                            "description": "lost", "expected_version": 1})
    assert exc.value.data["type"] == "version_conflict"
    assert exc.value.data["current_version"] == 2


async def test_rename_node_type_to_a_taken_name_is_a_conflict(rpc, tenant, node_type):
    other = await make_node_type(rpc, tenant["id"], "Company")
    with pytest.raises(Conflict) as exc:
        await rpc.call("update_node_type", {"tenant_id": tenant["id"], "id": other["id"],
                                            "name": node_type["name"]})
    assert exc.value.data["field"] == "name"


@pytest.mark.parametrize("extra", [{}, {"name": None}, {"expected_version": 1}])
async def test_update_node_type_with_nothing_to_change_is_invalid_params(rpc, tenant,
                                                                          node_type, extra):
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("update_node_type", {"tenant_id": tenant["id"], "id": node_type["id"],
                                            **extra})
    assert error_fields(exc) == ["params"]


async def test_update_node_type_with_invalid_schema_changes_nothing(rpc, tenant, node_type):
    for schema in ({"type": "nope"}, "{broken"):
        with pytest.raises(InvalidParams) as exc:
            await rpc.call("update_node_type", {"tenant_id": tenant["id"], "id": node_type["id"],
                                                "schema": schema})
        assert error_fields(exc) == ["schema"]
    got = await rpc.call("get_node_type", {"tenant_id": tenant["id"], "id": node_type["id"]})
    assert got["node_type"] == node_type


async def test_schema_change_applies_to_later_creates_and_updates(rpc, tenant, node_type):
    tid = tenant["id"]
    old_style = await make_node(rpc, tid, node_type["id"], {"name": "Ada", "age": 36})
    new_schema = {"type": "object", "properties": {"email": {"type": "string"}},
                  "required": ["email"], "additionalProperties": False}
    updated = (await rpc.call("update_node_type", {"tenant_id": tid, "id": node_type["id"],
                                                   "schema": new_schema,
                                                   "mode": "allow_invalid"}))["node_type"]
    assert updated["schema"] == new_schema and updated["version"] == 2
    assert updated["schema_version"] == 2

    # Data valid under the old schema is now rejected, on create and on update.
    with pytest.raises(InvalidParams) as exc:
        await make_node(rpc, tid, node_type["id"], {"name": "Grace"})
    assert exc.value.data["errors"]
    with pytest.raises(InvalidParams):
        await rpc.call("update_node", {"tenant_id": tid, "id": old_style["id"],
                                       "data": {"name": "Ada", "age": 37}})
    # The existing node, invalid now, is not changed by the schema change: it still
    # records the schema version it was validated against.
    assert await get_node(rpc, tid, old_style["id"]) == old_style
    assert old_style["schema_version"] == 1

    # Data valid under the new schema only is accepted.
    created = await make_node(rpc, tid, node_type["id"], {"email": "g@example.com"})
    assert created["data"] == {"email": "g@example.com"}
    moved = (await rpc.call("update_node", {"tenant_id": tid, "id": old_style["id"],
                                            "data": {"email": "a@example.com"}}))["node"]
    assert moved["data"] == {"email": "a@example.com"}


@pytest.mark.parametrize("removal", [None, ""])
async def test_schema_null_or_empty_removes_it(rpc, tenant, node_type, removal):
    updated = (await rpc.call("update_node_type", {"tenant_id": tenant["id"],
                                                   "id": node_type["id"],
                                                   "schema": removal}))["node_type"]
    assert updated["schema"] is None and updated["version"] == 2
    assert updated["name"] == node_type["name"]
    node = await make_node(rpc, tenant["id"], node_type["id"], {"age": "not a number"})
    assert node["data"] == {"age": "not a number"}


async def test_list_node_types(rpc, tenant):
    a = await make_node_type(rpc, tenant["id"], "A")
    b = await make_node_type(rpc, tenant["id"], "B")
    await make_node_type(rpc, (await make_tenant(rpc))["id"], "Elsewhere")
    listed = await rpc.call("list_node_types", {"tenant_id": tenant["id"]})
    assert [nt["id"] for nt in listed["node_types"]] == [a["id"], b["id"]]
    assert listed["pagination"] == {"next_page_token": "", "total_count": 2}
    with pytest.raises(NotFound) as exc:
        await rpc.call("list_node_types", {"tenant_id": missing_id()})
    assert exc.value.data["kind"] == "tenant"


async def test_delete_node_type_removes_its_nodes_and_their_relationships(rpc, tenant,
                                                                          node_type):
    tid = tenant["id"]
    keeper_type = await make_node_type(rpc, tid, "Company")
    doomed = [await make_node(rpc, tid, node_type["id"], {"name": f"p{i}"}) for i in range(3)]
    keeper = await make_node(rpc, tid, keeper_type["id"], {"name": "Acme"})
    rels = []
    for src, dst in ((doomed[0], doomed[1]), (doomed[2], keeper), (keeper, doomed[0])):
        rels.append((await rpc.call("create_relationship", {
            "tenant_id": tid, "source_node_id": src["id"], "target_node_id": dst["id"],
            "relationship_type": "knows"}))["relationship"])
    unrelated = (await rpc.call("create_relationship", {
        "tenant_id": tid, "source_node_id": keeper["id"], "target_node_id": keeper["id"],
        "relationship_type": "self"}))["relationship"]

    assert await rpc.call("delete_node_type", {"tenant_id": tid, "id": node_type["id"]}) == \
        {"success": True}

    with pytest.raises(NotFound):
        await rpc.call("get_node_type", {"tenant_id": tid, "id": node_type["id"]})
    for node in doomed:
        with pytest.raises(NotFound) as exc:
            await get_node(rpc, tid, node["id"])
        assert exc.value.data["kind"] == "node"
    for rel in rels:
        with pytest.raises(NotFound) as exc:
            await rpc.call("get_relationship", {"tenant_id": tid, "id": rel["id"]})
        assert exc.value.data["kind"] == "relationship"
    assert await get_node(rpc, tid, keeper["id"]) == keeper
    listed = await rpc.call("list_relationships", {"tenant_id": tid})
    assert [r["id"] for r in listed["relationships"]] == [unrelated["id"]]
    assert await count_nodes(rpc, tid) == 1
    with pytest.raises(NotFound):
        await rpc.call("delete_node_type", {"tenant_id": tid, "id": node_type["id"]})


@pytest.mark.parametrize("field, value", [("description", "a\x00b"),
                                          ("schema", {"description": "a\x00b"})])
async def test_nul_character_in_node_type_is_invalid_params(rpc, tenant, field, value):
    with pytest.raises(InvalidParams) as exc:
        await make_node_type(rpc, tenant["id"], "Nul", **{field: value})
    assert error_fields(exc)[0].startswith(field)


@pytest.mark.parametrize("schema", [{"$ref": "#/$defs/missing"},
                                    {"$ref": "https://example.com/person.json"},
                                    {"properties": {"a": {"$ref": "other.json#/x"}}}])
async def test_unresolvable_ref_is_refused_when_the_schema_is_saved(rpc, tenant, schema):
    with pytest.raises(InvalidParams) as exc:
        await make_node_type(rpc, tenant["id"], "Refs", schema=schema)
    assert error_fields(exc) == ["schema"] and "cannot be resolved" in exc.value.message


async def test_local_refs_work(rpc, tenant):
    schema = {"$defs": {"age": {"type": "integer", "minimum": 0}},
              "type": "object", "properties": {"age": {"$ref": "#/$defs/age"}}}
    nt = await make_node_type(rpc, tenant["id"], "Local", schema=schema)
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("create_node", {"tenant_id": tenant["id"], "node_type_id": nt["id"],
                                       "data": {"age": -1}})
    assert error_fields(exc) == ["data.age"]
    await make_node(rpc, tenant["id"], nt["id"], {"age": 3})
