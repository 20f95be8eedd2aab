"""rpc.discover: an OpenRPC document of every registered method, whose params and result
schemas come from the handlers' own models, and describe what the server really sends."""
from __future__ import annotations

import httpx
import pytest
from jsonschema import Draft202012Validator

import rpc_server.methods  # noqa: F401  (registers every method)
from rpc_server.api.registry import REGISTRY

from .conftest import unique


@pytest.fixture(scope="module")
def document(server):
    # Public: a caller without credentials may read it.
    reply = httpx.post(server.url, json={"jsonrpc": "2.0", "id": 1, "method": "rpc.discover"},
                       timeout=30).json()
    assert "error" not in reply, reply
    return reply["result"]


def validator_for(document: dict, schema: dict) -> Draft202012Validator:
    """A validator for one schema of the document: its #/components/... references resolve
    when the components sit at the root of the schema being checked."""
    return Draft202012Validator({**schema, "components": document["components"]})


def test_every_registered_method_is_described(document):
    assert document["openrpc"].startswith("1.")
    assert document["info"]["title"] and document["info"]["version"]
    described = {m["name"] for m in document["methods"]}
    assert described == set(REGISTRY)
    for method in document["methods"]:
        spec = REGISTRY[method["name"]]
        wire_names = [f.alias or n for n, f in spec.params_model.model_fields.items()]
        assert [p["name"] for p in method["params"]] == wire_names, method["name"]
        required = {f.alias or n for n, f in spec.params_model.model_fields.items()
                    if f.is_required()}
        assert {p["name"] for p in method["params"] if p["required"]} == required
        assert method["summary"] == spec.summary and method["summary"]
        assert method["errors"], method["name"]


def test_every_schema_in_the_document_is_a_valid_json_schema(document):
    for name, schema in document["components"]["schemas"].items():
        Draft202012Validator.check_schema(schema)
    for method in document["methods"]:
        for param in method["params"]:
            Draft202012Validator.check_schema(param["schema"])
        Draft202012Validator.check_schema(method["result"]["schema"])
    refs = []

    def collect(node):
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)
    collect(document)
    for ref in refs:  # every reference resolves inside the document
        assert ref.startswith("#/components/"), ref
        _, _, kind, name = ref.split("/")
        assert name in document["components"][kind], ref



def method(document: dict, name: str) -> dict:
    return next(m for m in document["methods"] if m["name"] == name)


async def test_results_match_the_published_result_schemas(document, rpc):
    tenant = (await rpc.call("create_tenant", {"slug": unique("o"), "name": "O"}))["tenant"]
    node_type = (await rpc.call("create_node_type", {
        "tenant_id": tenant["id"], "name": "T", "schema": {"type": "object"}}))["node_type"]
    node = (await rpc.call("create_node", {"tenant_id": tenant["id"],
                                           "node_type_id": node_type["id"],
                                           "data": {"a": 1}}))["node"]
    calls = {
        "get_tenant": {"id": tenant["id"]},
        "get_node_type": {"tenant_id": tenant["id"], "id": node_type["id"]},
        "get_node": {"tenant_id": tenant["id"], "id": node["id"]},
        "list_nodes": {"tenant_id": tenant["id"], "pagination": {"include_total": False}},
        "list_tenant_users": {"tenant_id": tenant["id"]},
        "traverse": {"tenant_id": tenant["id"], "start_node_id": node["id"]},
        "execute_query": {"tenant_id": tenant["id"], "sql": "SELECT id, data FROM nodes"},
        "list_audit_events": {"tenant_id": tenant["id"]},
    }
    for name, params in calls.items():
        result = await rpc.call(name, params)
        errors = list(validator_for(document, method(document, name)["result"]["schema"])
                      .iter_errors(result))
        assert not errors, (name, errors[0].message)
    # And the schema is strict enough to notice a wrong answer.
    wrong = {"node": {**node, "unexpected": True}}
    schema = method(document, "get_node")["result"]["schema"]
    assert not validator_for(document, schema).is_valid(wrong)


async def test_params_schemas_accept_good_params_and_refuse_bad_ones(document):
    node_type_id = "01a20a78-bfac-7000-b52d-bc3eb09b2c84"
    create_node = method(document, "create_node")
    by_name = {p["name"]: p["schema"] for p in create_node["params"]}
    assert validator_for(document, by_name["node_type_id"]).is_valid(node_type_id)
    assert validator_for(document, by_name["data"]).is_valid({"a": [1, 2]})
    assert validator_for(document, by_name["data"]).is_valid('{"a": 1}')  # flex-db clients
    assert not validator_for(document, by_name["data"]).is_valid([1])
    create_tenant = {p["name"]: p["schema"] for p in method(document, "create_tenant")["params"]}
    assert validator_for(document, create_tenant["slug"]).is_valid("acme-1")
    assert not validator_for(document, create_tenant["slug"]).is_valid("Not A Slug")
    assert not validator_for(document, create_tenant["name"]).is_valid(" padded ")
