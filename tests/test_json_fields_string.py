"""FLEXDB_JSON_FIELDS=string: data and schema come back as JSON strings for flex-db clients
whose response models require strings."""
from __future__ import annotations

import json

import pytest

from rpc_server.client import FlexDBClient

from .conftest import running_server, unique


@pytest.fixture(scope="module")
def string_server(database_url):
    with running_server({"FLEXDB_DATABASE_URL": database_url,
                         "FLEXDB_JSON_FIELDS": "string"}) as srv:
        yield srv


async def test_documents_are_strings(string_server):
    async with FlexDBClient(string_server.url, api_key=string_server.admin_key) as rpc:
        tenant = (await rpc.call("create_tenant", {"slug": unique("s"), "name": "S"}))["tenant"]
        plain = (await rpc.call("create_node_type",
                                {"tenant_id": tenant["id"], "name": "Plain"}))["node_type"]
        assert plain["schema"] == ""
        typed = (await rpc.call("create_node_type", {
            "tenant_id": tenant["id"], "name": "Typed",
            "schema": '{"type": "object", "required": ["x"]}'}))["node_type"]
        assert json.loads(typed["schema"]) == {"type": "object", "required": ["x"]}

        node = (await rpc.call("create_node", {"tenant_id": tenant["id"],
                                               "node_type_id": typed["id"],
                                               "data": '{"x": 1, "y": [true, null]}'}))["node"]
        assert isinstance(node["data"], str)
        assert json.loads(node["data"]) == {"x": 1, "y": [True, None]}

        listed = await rpc.call("list_nodes", {"tenant_id": tenant["id"]})
        assert isinstance(listed["nodes"][0]["data"], str)
        assert listed["pagination"]["next_page_token"] == ""
        # a query page's items: the node's own fields only (no sort key, total or budget)
        for sort in ({"field": "created_at"}, {"field": "data.x"}):
            found = await rpc.call("query_nodes", {
                "tenant_id": tenant["id"], "filter": {"field": "data.x", "op": "eq", "value": 1},
                "sort": sort, "pagination": {"page_size": 1, "include_total": True}})
            assert found["nodes"] == [node] and found["pagination"]["total_count"] == 1

        other = (await rpc.call("create_node", {"tenant_id": tenant["id"],
                                                "node_type_id": plain["id"]}))["node"]
        rel = (await rpc.call("create_relationship", {
            "tenant_id": tenant["id"], "source_node_id": node["id"], "target_node_id": other["id"],
            "relationship_type": "links", "data": "{}"}))["relationship"]
        assert rel["data"] == "{}"


async def test_boolean_schemas_are_the_strings_true_and_false(string_server):
    async with FlexDBClient(string_server.url, api_key=string_server.admin_key) as rpc:
        tenant = (await rpc.call("create_tenant", {"slug": unique("b"), "name": "B"}))["tenant"]
        for sent, returned in ((True, "true"), ("false", "false")):
            node_type = (await rpc.call("create_node_type", {
                "tenant_id": tenant["id"], "name": f"T{returned}", "schema": sent}))["node_type"]
            assert node_type["schema"] == returned
            listed = await rpc.call("list_node_types", {"tenant_id": tenant["id"]})
            assert listed["node_types"][-1]["schema"] == returned
