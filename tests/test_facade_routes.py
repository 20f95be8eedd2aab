"""The REST facade end to end, route by route: a live `flexdb facade` process in front of the
live rpc_server. Every route is exercised (a route without a test fails
test_every_route_is_exercised), its answer compared with what the direct JSON-RPC call
returns for the same object; request ids are echoed and forwarded."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest

from rest_facade.app import create_app
from rpc_server.client import FlexDBClient
from rpc_server.config import Settings

from .auth_helpers import new_user
from .conftest import missing_id, own_user_id, unique
from .facade_helpers import (
    ECHO,
    EXERCISED,
    FAIL,
    GENERATED_ID,
    NT,
    ROUTES,
    SPIN,
    N,
    P,
    R,
    T,
    U,
    as_caller,
    call,
    created,
    declared_routes,
    error,
    make_node,
    make_node_type,
    make_tenant,
    member_key,
    no_content,
    ok,
    rpc_error,
    same_error,
    same_page,
    walk_pages,
)

# ---------------------------------------------------------------- the route list, docs

def test_the_route_list_is_the_apps():
    assert declared_routes(create_app(Settings())) == ROUTES


async def test_openapi_lists_every_route_and_the_docs_render(rest):
    spec = ok(await rest.get("/openapi.json"))
    listed = {(m.upper(), path) for path, ops in spec["paths"].items() for m in ops}
    assert listed == ROUTES
    for path in ("/docs", "/redoc"):
        page = await rest.get(path)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "<html" in page.text.lower()
        assert page.headers["x-frame-options"] == "DENY"
        # Served from the package (test_facade_docs.py checks them in a browser).
        assert "http" not in page.headers["content-security-policy"]


# ---------------------------------------------------------------- tenants

async def test_tenants(rest, rpc):
    slug = unique("rest")
    resp = await call(rest, "POST", "/tenants", json={"slug": slug, "name": "Rest"})
    tenant = (await created(rest, resp, f"/tenants/{resp.json()['tenant']['id']}"))["tenant"]
    t = tenant["id"]
    assert (tenant["slug"], tenant["name"], tenant["version"]) == (slug, "Rest", 1)
    assert ok(await call(rest, "GET", T, tenant_id=t)) == await rpc.call("get_tenant", {"id": t})

    await make_tenant(rpc)
    await make_tenant(rpc)
    await same_page(rest, rpc, "/tenants", "list_tenants", {}, "tenants")

    put = ok(await call(rest, "PUT", T, tenant_id=t, json={"name": "Renamed"}))
    assert (put["tenant"]["name"], put["tenant"]["slug"], put["tenant"]["version"]) == \
        ("Renamed", slug, 2)
    patched = ok(await call(rest, "PATCH", T, tenant_id=t,
                            json={"status": "suspended", "expected_version": 2}))
    assert patched["tenant"]["status"] == "suspended" and patched["tenant"]["version"] == 3
    assert patched == await rpc.call("get_tenant", {"id": t})

    usage = ok(await call(rest, "GET", T + "/usage", tenant_id=t))
    assert usage == await rpc.call("get_tenant_usage", {"tenant_id": t})
    assert usage["usage"]["nodes"] == 0 and usage["usage"]["max_nodes"] is None

    no_content(await call(rest, "DELETE", T, tenant_id=t))
    error(await call(rest, "GET", T, tenant_id=t), 404, -32001, "not_found")


# ---------------------------------------------------------------- users and members

async def test_users(rest, rpc):
    email = f"{unique('rest')}@example.com"
    resp = await call(rest, "POST", "/users", json={"email": email, "display_name": "Rest"})
    user = (await created(rest, resp, f"/users/{resp.json()['user']['id']}"))["user"]
    u = user["id"]
    assert (user["email"], user["display_name"]) == (email, "Rest")
    assert ok(await call(rest, "GET", U, user_id=u)) == await rpc.call("get_user", {"id": u})

    await new_user(rpc)
    await same_page(rest, rpc, "/users", "list_users", {}, "users")

    put = ok(await call(rest, "PUT", U, user_id=u, json={"display_name": "Put"}))
    assert put["user"]["display_name"] == "Put" and put["user"]["email"] == email
    patched = ok(await call(rest, "PATCH", U, user_id=u,
                            json={"display_name": "Patched",
                                  "expected_version": put["user"]["version"]}))
    assert patched == await rpc.call("get_user", {"id": u})
    assert patched["user"]["display_name"] == "Patched"

    no_content(await call(rest, "DELETE", U, user_id=u))
    error(await call(rest, "GET", U, user_id=u), 404, -32001, "not_found")


async def test_tenant_members(rest, rpc):
    t = await make_tenant(rpc)
    user, _ = await new_user(rpc)
    u = user["id"]
    resp = await call(rest, "POST", T + "/users", tenant_id=t,
                      json={"user_id": u, "role": "viewer"})
    member = (await created(rest, resp, f"/tenants/{t}/users/{u}"))["tenant_user"]
    assert (member["user_id"], member["role"]) == (u, "viewer")
    route = T + "/users/{user_id}"
    assert ok(await call(rest, "GET", route, tenant_id=t, user_id=u)) == \
        await rpc.call("get_tenant_user", {"tenant_id": t, "user_id": u})

    for _ in range(2):
        other, _ = await new_user(rpc)
        await rpc.call("add_user_to_tenant", {"tenant_id": t, "user_id": other["id"]})
    listed = await same_page(rest, rpc, T + "/users", "list_tenant_users", {}, "tenant_users",
                             tenant_id=t)
    assert listed["pagination"]["total_count"] == 4  # the owner and three members

    put = ok(await call(rest, "PUT", route, tenant_id=t, user_id=u, json={"role": "member"}))
    assert put["tenant_user"]["role"] == "member"
    patched = ok(await call(rest, "PATCH", route, tenant_id=t, user_id=u,
                            json={"role": "admin"}))
    assert patched["tenant_user"]["role"] == "admin"
    assert patched == await rpc.call("get_tenant_user", {"tenant_id": t, "user_id": u})
    members = await rpc.call("list_tenant_users", {"tenant_id": t})
    assert patched["tenant_user"] in members["tenant_users"]

    no_content(await call(rest, "DELETE", route, tenant_id=t, user_id=u))
    members = await rpc.call("list_tenant_users", {"tenant_id": t})
    assert u not in {m["user_id"] for m in members["tenant_users"]}
    gone = error(await call(rest, "GET", route, tenant_id=t, user_id=u), 404, -32001,
                 "not_found")
    same_error(gone, await rpc_error(rpc, "get_tenant_user", {"tenant_id": t, "user_id": u}))


# ---------------------------------------------------------------- node types

async def test_node_types(rest, rpc):
    t = await make_tenant(rpc)
    schema = {"type": "object", "properties": {"name": {"type": "string"}}}
    resp = await call(rest, "POST", NT, tenant_id=t,
                      json={"name": "Person", "description": "people", "schema": schema})
    location = f"/tenants/{t}/node-types/{resp.json()['node_type']['id']}"
    node_type = (await created(rest, resp, location))["node_type"]
    nt = node_type["id"]
    assert (node_type["name"], node_type["schema"]) == ("Person", schema)
    assert ok(await call(rest, "GET", NT + "/{node_type_id}", tenant_id=t, node_type_id=nt)) \
        == await rpc.call("get_node_type", {"tenant_id": t, "id": nt})

    await make_node_type(rpc, t, "Place")
    await make_node_type(rpc, t, "Thing")
    await same_page(rest, rpc, NT, "list_node_types", {}, "node_types", tenant_id=t)
    assert len(await walk_pages(rest, NT, "node_types", 1, tenant_id=t)) == 3

    put = ok(await call(rest, "PUT", NT + "/{node_type_id}", tenant_id=t, node_type_id=nt,
                        json={"description": "humans"}))
    assert put["node_type"]["description"] == "humans" and put["node_type"]["schema"] == schema
    patched = ok(await call(rest, "PATCH", NT + "/{node_type_id}", tenant_id=t,
                            node_type_id=nt, json={"schema": None}))
    assert patched["node_type"]["schema"] is None
    assert patched["report"]["nodes_failing"] == 0  # the schema changed: checked first
    assert {"node_type": patched["node_type"]} == \
        await rpc.call("get_node_type", {"tenant_id": t, "id": nt})
    # schema versions: the dry run, the list, one version
    check = ok(await call(rest, "POST", NT + "/{node_type_id}/schema-check", tenant_id=t,
                          node_type_id=nt, json={"schema": {"type": "object",
                                                            "required": ["x"]}}))
    direct = await rpc.call("check_node_type_schema", {
        "tenant_id": t, "id": nt, "schema": {"type": "object", "required": ["x"]}})
    for report in (check["report"], direct["report"]):
        del report["elapsed_ms"]
    assert check == direct
    versions = ok(await call(rest, "GET", NT + "/{node_type_id}/versions", tenant_id=t,
                             node_type_id=nt))
    assert [v["version"] for v in versions["versions"]] == \
        list(range(1, patched["node_type"]["schema_version"] + 1))
    first = ok(await call(rest, "GET", NT + "/{node_type_id}", tenant_id=t, node_type_id=nt,
                          params={"version": 1}))
    assert first["node_type"]["schema_version"] == 1

    no_content(await call(rest, "DELETE", NT + "/{node_type_id}", tenant_id=t,
                          node_type_id=nt))
    error(await call(rest, "GET", NT + "/{node_type_id}", tenant_id=t, node_type_id=nt),
          404, -32001, "not_found")


# ---------------------------------------------------------------- nodes

async def test_nodes(rest, rpc):
    t = await make_tenant(rpc)
    people, places = await make_node_type(rpc, t), await make_node_type(rpc, t, "Place")
    resp = await call(rest, "POST", N, tenant_id=t,
                      json={"node_type_id": people, "data": {"name": "Ada"}})
    node = (await created(rest, resp, f"/tenants/{t}/nodes/{resp.json()['node']['id']}"))[
        "node"]
    n = node["id"]
    assert (node["node_type_id"], node["data"], node["version"]) == (people, {"name": "Ada"}, 1)
    assert ok(await call(rest, "GET", N + "/{node_id}", tenant_id=t, node_id=n)) == \
        await rpc.call("get_node", {"tenant_id": t, "id": n})

    bulk = ok(await call(rest, "POST", N + "/bulk", tenant_id=t, json={"nodes": [
        {"node_type_id": people, "data": {"name": "Bob"}},
        {"node_type_id": places, "data": {"name": "Paris"}},
        {"node_type_id": people, "data": {"name": "Cy"}}]}), 201)
    assert [x["data"]["name"] for x in bulk["nodes"]] == ["Bob", "Paris", "Cy"]
    for x in bulk["nodes"]:
        assert {"node": x} == await rpc.call("get_node", {"tenant_id": t, "id": x["id"]})

    listed = await same_page(rest, rpc, N, "list_nodes", {"node_type_id": people}, "nodes",
                             tenant_id=t)
    assert listed["pagination"]["total_count"] == 3
    everything = await walk_pages(rest, N, "nodes", 2, tenant_id=t)
    assert [x["id"] for x in everything] == [n] + [x["id"] for x in bulk["nodes"]]
    bad_token = await rpc_error(rpc, "list_nodes", {"tenant_id": t,
                                                    "pagination": {"page_token": "garbage"}})
    same_error(error(await call(rest, "GET", N, tenant_id=t, params={"page_token": "garbage"}),
                     422, -32602), bad_token)

    put = ok(await call(rest, "PUT", N + "/{node_id}", tenant_id=t, node_id=n,
                        json={"data": {"name": "Ada L."}, "expected_version": 1}))
    assert (put["node"]["data"], put["node"]["version"]) == ({"name": "Ada L."}, 2)
    assert put == await rpc.call("get_node", {"tenant_id": t, "id": n})

    no_content(await call(rest, "DELETE", N + "/{node_id}", tenant_id=t, node_id=n))
    error(await call(rest, "GET", N + "/{node_id}", tenant_id=t, node_id=n), 404, -32001,
          "not_found")


async def test_patch_of_a_node_is_a_json_merge_patch(rest, rpc):
    t = await make_tenant(rpc)
    nt = await make_node_type(rpc, t)
    n = (await make_node(rpc, t, nt, name="Ada", tags=["a"], drop=1,
                         address={"city": "London", "zip": "N1"}))["id"]
    route = N + "/{node_id}"
    patched = ok(await call(rest, "PATCH", route, tenant_id=t, node_id=n, json={"data": {
        "drop": None, "tags": ["b"], "address": {"zip": None, "street": "Main"}, "age": 36,
        "absent": None}}))
    assert patched["node"]["data"] == {"name": "Ada", "tags": ["b"], "age": 36,
                                       "address": {"city": "London", "street": "Main"}}
    assert patched["node"]["version"] == 2
    assert patched == await rpc.call("get_node", {"tenant_id": t, "id": n})

    again = ok(await call(rest, "PATCH", route, tenant_id=t, node_id=n,
                          json={"data": {"age": 37}, "expected_version": 2}))
    assert again["node"]["version"] == 3 and again["node"]["data"]["age"] == 37

    # A stale expected_version: 409 exactly as rpc_server answers it.
    stale = await rpc_error(rpc, "update_node", {"tenant_id": t, "id": n, "data": {},
                                                 "expected_version": 2})
    same_error(error(await call(rest, "PATCH", route, tenant_id=t, node_id=n,
                                json={"data": {"age": 1}, "expected_version": 2}),
                     409, -32004), stale)
    assert (await rpc.call("get_node", {"tenant_id": t, "id": n}))["node"]["version"] == 3
    error(await call(rest, "PATCH", route, tenant_id=t, node_id=missing_id(),
                     json={"data": {}}), 404, -32001, "not_found")



async def test_concurrent_patches_lose_no_update(rest, rpc):
    """Each PATCH is a read and a versioned write: of concurrent ones, those that answer 200
    are all in the result, the others answer 409."""
    t = await make_tenant(rpc)
    n = (await make_node(rpc, t, await make_node_type(rpc, t)))["id"]
    answers = await asyncio.gather(*(
        call(rest, "PATCH", N + "/{node_id}", tenant_id=t, node_id=n, json={"data": {f"k{i}": i}})
        for i in range(8)))
    applied = set()
    for i, resp in enumerate(answers):
        if resp.status_code == 200:
            applied.add(f"k{i}")
        else:
            error(resp, 409, -32004, "version_conflict")
    node = (await rpc.call("get_node", {"tenant_id": t, "id": n}))["node"]
    assert applied and set(node["data"]) == applied
    assert node["version"] == 1 + len(applied)

# ---------------------------------------------------------------- relationships

async def test_relationships(rest, rpc):
    t = await make_tenant(rpc)
    nt = await make_node_type(rpc, t)
    a, b, c = [(await make_node(rpc, t, nt, name=x))["id"] for x in "abc"]
    resp = await call(rest, "POST", R, tenant_id=t, json={
        "source_node_id": a, "target_node_id": b, "relationship_type": "knows",
        "data": {"since": 2020, "via": {"school": "X", "club": "Y"}}})
    location = f"/tenants/{t}/relationships/{resp.json()['relationship']['id']}"
    rel = (await created(rest, resp, location))["relationship"]
    r = rel["id"]
    assert (rel["source_node_id"], rel["target_node_id"], rel["relationship_type"]) == \
        (a, b, "knows")
    assert ok(await call(rest, "GET", R + "/{relationship_id}", tenant_id=t,
                         relationship_id=r)) == \
        await rpc.call("get_relationship", {"tenant_id": t, "id": r})

    bulk = ok(await call(rest, "POST", R + "/bulk", tenant_id=t, json={"relationships": [
        {"source_node_id": a, "target_node_id": c, "relationship_type": "knows"},
        {"source_node_id": b, "target_node_id": c, "relationship_type": "likes"},
        {"source_node_id": a, "target_node_id": c, "relationship_type": "likes"}]}), 201)
    assert len(bulk["relationships"]) == 3
    for x in bulk["relationships"]:
        assert {"relationship": x} == await rpc.call("get_relationship",
                                                     {"tenant_id": t, "id": x["id"]})
    for filters, count in [({"source_node_id": a}, 3), ({"target_node_id": c}, 3),
                           ({"relationship_type": "likes"}, 2),
                           ({"source_node_id": a, "relationship_type": "knows"}, 2)]:
        page = await same_page(rest, rpc, R, "list_relationships", filters, "relationships",
                               tenant_id=t)
        assert page["pagination"]["total_count"] == count, filters

    route = R + "/{relationship_id}"
    put = ok(await call(rest, "PUT", route, tenant_id=t, relationship_id=r,
                        json={"relationship_type": "met", "data": {"since": 2021}}))
    assert (put["relationship"]["relationship_type"], put["relationship"]["data"]) == \
        ("met", {"since": 2021})
    retyped = ok(await call(rest, "PATCH", route, tenant_id=t, relationship_id=r,
                            json={"relationship_type": "knows"}))
    assert retyped["relationship"]["relationship_type"] == "knows"
    assert retyped["relationship"]["data"] == {"since": 2021}
    merged = ok(await call(rest, "PATCH", route, tenant_id=t, relationship_id=r, json={
        "data": {"since": None, "how": {"where": "work"}},
        "expected_version": retyped["relationship"]["version"]}))
    assert merged["relationship"]["data"] == {"how": {"where": "work"}}
    assert merged["relationship"]["version"] == retyped["relationship"]["version"] + 1
    assert merged == await rpc.call("get_relationship", {"tenant_id": t, "id": r})

    stale = await rpc_error(rpc, "update_relationship", {"tenant_id": t, "id": r,
                                                         "data": {}, "expected_version": 1})
    same_error(error(await call(rest, "PATCH", route, tenant_id=t, relationship_id=r,
                                json={"data": {"x": 1}, "expected_version": 1}),
                     409, -32004), stale)
    same_error(error(await call(rest, "PUT", route, tenant_id=t, relationship_id=r,
                                json={"data": {}, "expected_version": 1}), 409, -32004), stale)

    no_content(await call(rest, "DELETE", route, tenant_id=t, relationship_id=r))
    error(await call(rest, "GET", route, tenant_id=t, relationship_id=r), 404, -32001,
          "not_found")


# ---------------------------------------------------------------- queries and graph walks

async def test_queries_search_and_graph_walks(rest, rpc):
    t = await make_tenant(rpc)
    nt = await make_node_type(rpc, t)
    ids = [(await make_node(rpc, t, nt, name=f"n{i}", rank=i))["id"] for i in range(4)]
    for source, target in zip(ids, ids[1:]):
        await rpc.call("create_relationship", {"tenant_id": t, "source_node_id": source,
                                               "target_node_id": target,
                                               "relationship_type": "next"})

    query = {"sql": "SELECT data->>'name' AS name FROM nodes WHERE (data->>'rank')::int >= $1 "
                    "ORDER BY 1", "params": [2]}
    rows = ok(await call(rest, "POST", T + "/query", tenant_id=t, json=query))
    direct = await rpc.call("execute_query", {"tenant_id": t, **query})
    rows.pop("duration_ms"), direct.pop("duration_ms")
    assert rows == direct
    assert (rows["rows"], rows["row_count"], rows["truncated"]) == ([["n2"], ["n3"]], 2, False)

    search = {"filter": {"field": "data.rank", "op": "gte", "value": 1},
              "sort": {"field": "data.rank", "direction": "desc"},
              "pagination": {"page_size": 2}}
    found = ok(await call(rest, "POST", N + "/search", tenant_id=t, json=search))
    assert found == await rpc.call("query_nodes", {"tenant_id": t, **search})
    assert [x["id"] for x in found["nodes"]] == [ids[3], ids[2]]
    token = found["pagination"]["next_page_token"]
    search["pagination"]["page_token"] = token
    rest_page = ok(await call(rest, "POST", N + "/search", tenant_id=t, json=search))
    assert [x["id"] for x in rest_page["nodes"]] == [ids[1]]
    assert rest_page == await rpc.call("query_nodes", {"tenant_id": t, **search})

    walk = {"start_node_id": ids[0], "max_depth": 2, "relationship_types": ["next"]}
    reached = ok(await call(rest, "POST", T + "/traverse", tenant_id=t, json=walk))
    assert reached == await rpc.call("traverse", {"tenant_id": t, **walk})
    assert [(x["node"]["id"], x["depth"]) for x in reached["nodes"]] == [(ids[1], 1),
                                                                         (ids[2], 2)]

    ends = {"source_node_id": ids[0], "target_node_id": ids[3]}
    path = ok(await call(rest, "POST", T + "/shortest-path", tenant_id=t, json=ends))
    assert path == await rpc.call("shortest_path", {"tenant_id": t, **ends})
    assert path["path"]["length"] == 3
    backwards = {"source_node_id": ids[3], "target_node_id": ids[0], "direction": "out"}
    assert ok(await call(rest, "POST", T + "/shortest-path", tenant_id=t,
                         json=backwards)) == {"path": None}


async def test_a_refused_query_is_400(rest, rpc):
    t = await make_tenant(rpc)
    refused = {"sql": "DELETE FROM nodes"}
    direct = await rpc_error(rpc, "execute_query", {"tenant_id": t, **refused})
    assert direct.code == -32006
    err = error(await call(rest, "POST", T + "/query", tenant_id=t, json=refused), 400, -32006)
    assert err["details"]["layer"] == direct.data["layer"]
    same_error(err, direct)


# ---------------------------------------------------------------- pipelines and runs

async def test_pipelines_and_runs(rest, rpc):
    t = await make_tenant(rpc)
    resp = await call(rest, "POST", P, tenant_id=t,
                      json={"name": "echo", "code": ECHO, "description": "returns its input"})
    location = f"/tenants/{t}/pipelines/{resp.json()['pipeline']['id']}"
    pipeline = (await created(rest, resp, location))["pipeline"]
    p = pipeline["id"]
    assert (pipeline["name"], pipeline["code"]) == ("echo", ECHO)
    route = P + "/{pipeline_id}"
    assert ok(await call(rest, "GET", route, tenant_id=t, pipeline_id=p)) == \
        await rpc.call("get_pipeline", {"tenant_id": t, "id": p})
    fails = (await rpc.call("create_pipeline", {"tenant_id": t, "name": "fails",
                                                "code": FAIL}))["pipeline"]["id"]
    await rpc.call("create_pipeline", {"tenant_id": t, "name": "spin", "code": SPIN})
    await same_page(rest, rpc, P, "list_pipelines", {}, "pipelines", tenant_id=t)

    put = ok(await call(rest, "PUT", route, tenant_id=t, pipeline_id=p,
                        json={"description": "echo"}))
    assert put["pipeline"]["description"] == "echo" and put["pipeline"]["code"] == ECHO
    patched = ok(await call(rest, "PATCH", route, tenant_id=t, pipeline_id=p,
                            json={"timeout_ms": 5000, "expected_version": 2}))
    assert patched == await rpc.call("get_pipeline", {"tenant_id": t, "id": p})
    assert patched["pipeline"]["timeout_ms"] == 5000

    runs = P + "/{pipeline_id}/runs"
    resp = await call(rest, "POST", runs, tenant_id=t, pipeline_id=p, json={"input": {"a": 1}})
    run = (await created(rest, resp, f"/tenants/{t}/runs/{resp.json()['run']['id']}"))["run"]
    assert (run["status"], run["result"], run["pipeline_id"]) == ("succeeded", {"a": 1}, p)
    assert ok(await call(rest, "GET", T + "/runs/{run_id}", tenant_id=t, run_id=run["id"])) \
        == await rpc.call("get_pipeline_run", {"tenant_id": t, "id": run["id"]})
    ok(await call(rest, "POST", runs, tenant_id=t, pipeline_id=p, json={"input": 2}), 201)

    failed = error(await call(rest, "POST", runs, tenant_id=t, pipeline_id=fails, json={}),
                   422, -32007, "pipeline_failed")
    assert failed["details"]["run"]["status"] == "failed"
    assert failed["details"]["run"]["pipeline_id"] == fails

    for filters, count in [({}, 3), ({"pipeline_id": p}, 2), ({"status": "failed"}, 1),
                           ({"status": "succeeded", "pipeline_id": fails}, 0)]:
        page = await same_page(rest, rpc, T + "/runs", "list_pipeline_runs", filters, "runs",
                               tenant_id=t)
        assert page["pagination"]["total_count"] == count, filters

    no_content(await call(rest, "DELETE", route, tenant_id=t, pipeline_id=p))
    error(await call(rest, "GET", route, tenant_id=t, pipeline_id=p), 404, -32001,
          "not_found")


async def test_cancel_a_run(rest, rpc):
    t = await make_tenant(rpc)
    spin = (await rpc.call("create_pipeline", {"tenant_id": t, "name": "spin", "code": SPIN,
                                               "timeout_ms": 10_000}))["pipeline"]["id"]
    resp = await call(rest, "POST", P + "/{pipeline_id}/runs", tenant_id=t, pipeline_id=spin,
                      json={"wait": False})
    queued = ok(resp, 202)["run"]  # accepted, not finished
    assert queued["status"] in ("queued", "running")
    assert resp.headers["location"] == f"/tenants/{t}/runs/{queued['id']}"
    cancel = T + "/runs/{run_id}/cancel"
    cancelled = ok(await call(rest, "POST", cancel, tenant_id=t, run_id=queued["id"]))["run"]
    assert (cancelled["id"], cancelled["status"]) == (queued["id"], "cancelled")
    assert (await rpc.call("get_pipeline_run", {"tenant_id": t, "id": queued["id"]}))[
        "run"]["status"] == "cancelled"
    again = await rpc_error(rpc, "cancel_pipeline_run", {"tenant_id": t, "id": queued["id"]})
    same_error(error(await call(rest, "POST", cancel, tenant_id=t, run_id=queued["id"]),
                     409, -32004), again)


# ---------------------------------------------------------------- jobs

async def test_migrations_and_jobs(rest, rpc):
    t = await make_tenant(rpc)
    nt = (await rpc.call("create_node_type", {"tenant_id": t, "name": "M"}))["node_type"]["id"]
    for i in range(3):
        await rpc.call("create_node", {"tenant_id": t, "node_type_id": nt, "data": {"i": i}})
    echo = (await rpc.call("create_pipeline", {"tenant_id": t, "name": "echo",
                                               "code": ECHO}))["pipeline"]["id"]
    spin = (await rpc.call("create_pipeline", {"tenant_id": t, "name": "spin", "code": SPIN,
                                               "timeout_ms": 10_000}))["pipeline"]["id"]
    migrations = NT + "/{node_type_id}/migrations"
    error(await call(rest, "POST", migrations, tenant_id=t, node_type_id=nt,
                     json={"pipeline_id": echo, "to_version": 7}), 422, -32602)
    resp = await call(rest, "POST", migrations, tenant_id=t, node_type_id=nt,
                      json={"pipeline_id": echo, "to_version": 1})
    job = ok(resp, 202)["job"]
    assert resp.headers["location"] == f"/tenants/{t}/jobs/{job['id']}"
    route = T + "/jobs/{job_id}"
    for _ in range(200):
        got = ok(await call(rest, "GET", route, tenant_id=t, job_id=job["id"]))
        if got["job"]["status"] == "succeeded":
            break
        await asyncio.sleep(0.05)
    assert got == await rpc.call("get_job", {"tenant_id": t, "id": job["id"]})
    assert (got["job"]["processed"], got["job"]["changed"]) == (3, 0)  # the same data

    other = (await rpc.call("create_node_type", {"tenant_id": t, "name": "S"}))["node_type"]
    await rpc.call("create_node", {"tenant_id": t, "node_type_id": other["id"], "data": {}})
    spinning = (await rpc.call("migrate_nodes", {"tenant_id": t, "node_type_id": other["id"],
                                                 "pipeline_id": spin,
                                                 "to_version": 1}))["job"]
    cancel = T + "/jobs/{job_id}/cancel"
    cancelled = ok(await call(rest, "POST", cancel, tenant_id=t, job_id=spinning["id"]))["job"]
    assert cancelled["status"] == "cancelled"
    again = await rpc_error(rpc, "cancel_job", {"tenant_id": t, "id": spinning["id"]})
    same_error(error(await call(rest, "POST", cancel, tenant_id=t, job_id=spinning["id"]),
                     409, -32004), again)
    for filters, count in [({}, 2), ({"status": "cancelled"}, 1), ({"status": "queued"}, 0)]:
        page = await same_page(rest, rpc, T + "/jobs", "list_jobs", filters, "jobs",
                               tenant_id=t)
        assert page["pagination"]["total_count"] == count, filters


# ---------------------------------------------------------------- API keys, revocation

async def test_api_keys_and_a_revoked_key_gets_401(rest, rpc, facade):
    t = await make_tenant(rpc)
    user, _ = await member_key(rpc, t, "viewer")
    resp = await call(rest, "POST", "/api-keys", json={"name": "rest", "user_id": user["id"]})
    made = ok(resp, 201)
    key_id, secret = made["api_key"]["id"], made["secret"]
    assert resp.headers["location"] == f"/api-keys/{key_id}"
    assert secret.startswith("fdb_") and made["api_key"]["user_id"] == user["id"]
    # No GET serves a single key: the Location names it for DELETE.
    assert (await rest.get(resp.headers["location"])).status_code == 405

    listed = await same_page(rest, rpc, "/api-keys", "list_api_keys", {"user_id": user["id"]},
                             "api_keys")
    assert key_id in {k["id"] for k in listed["api_keys"]}
    assert listed["pagination"]["total_count"] == 2
    assert all("secret" not in k for k in listed["api_keys"])

    async with as_caller(facade, secret) as own:
        assert ok(await call(own, "GET", T, tenant_id=t))["tenant"]["id"] == t
        own_keys = ok(await call(own, "GET", "/api-keys"))
        assert {k["id"] for k in own_keys["api_keys"]} == {k["id"] for k in listed["api_keys"]}
        no_content(await call(rest, "DELETE", "/api-keys/{key_id}", key_id=key_id))
        revoked = await own.get(f"/tenants/{t}")
        error(revoked, 401, -32002, "unauthenticated")
        assert revoked.headers["www-authenticate"].startswith("Bearer")
    async with FlexDBClient(rpc.url, api_key=secret) as direct:
        same_error(revoked.json()["error"], await rpc_error(direct, "get_tenant", {"id": t}))


# ---------------------------------------------------------------- the change feed

async def test_changes_and_the_event_stream(rest, rpc):
    t = await make_tenant(rpc)
    nt = await make_node_type(rpc, t)
    route = T + "/changes"
    listed = ok(await call(rest, "GET", route, tenant_id=t, params={"kinds": "node_type"}))
    assert listed == await rpc.call("list_changes", {"tenant_id": t,
                                                     "filter": {"kinds": ["node_type"]}})
    assert [e["id"] for e in listed["changes"]] == [nt]
    error(await call(rest, "GET", route, tenant_id=t, params={"kinds": "nodes"}),
          422, -32602, "invalid_params")
    error(await call(rest, "GET", route, tenant_id=t, params={"limit": 0}),
          422, -32602, "invalid_params")
    EXERCISED.add(("GET", T + "/events"))
    lines: list[str] = []
    async with rest.stream("GET", f"/tenants/{t}/events",
                           headers={"Last-Event-ID": str(listed["head"] - 1)}) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        async for line in stream.aiter_lines():
            lines.append(line)
            if line.startswith("data: "):
                break
    assert f"id: {listed['head']}" in lines and "event: change" in lines
    missing = await rest.get(f"/tenants/{missing_id()}/events")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == -32001


# ---------------------------------------------------------------- audit events, request ids

async def test_audit_events_and_verify(rest, rpc):
    t = await make_tenant(rpc)
    nt = await make_node_type(rpc, t)
    nodes = [ok(await call(rest, "POST", N, tenant_id=t, json={"node_type_id": nt}), 201)[
        "node"]["id"] for _ in range(3)]
    actor = await own_user_id(rpc)
    route = T + "/audit-events"
    page = await same_page(rest, rpc, route, "list_audit_events", {"method": "create_node"},
                           "audit_events", tenant_id=t)
    assert page["pagination"]["total_count"] == 3
    events = (await rpc.call("list_audit_events", {"tenant_id": t, "method": "create_node"}))[
        "audit_events"]
    assert [e["target_id"] for e in events] == nodes
    moment = datetime.fromisoformat(events[1]["created_at"])
    for filters, count in [
            ({"target_id": nodes[1]}, 1), ({"actor": actor, "method": "create_node"}, 3),
            ({"method": "create_node", "since": events[1]["created_at"]}, 2),
            ({"method": "create_node", "until": events[1]["created_at"]}, 1),  # exclusive
            ({"method": "create_node",
              "since": events[1]["created_at"].replace("+00:00", "Z")}, 2),
            ({"method": "create_node", "since": (moment - timedelta(hours=1)).isoformat(),
              "until": (moment + timedelta(hours=1)).isoformat()}, 3)]:
        page = await same_page(rest, rpc, route, "list_audit_events", filters, "audit_events",
                               tenant_id=t)
        assert page["pagination"]["total_count"] == count, filters
    error(await call(rest, "GET", route, tenant_id=t, params={"since": "yesterday"}),
          422, -32602, "invalid_params")

    verified = ok(await call(rest, "GET", route + "/verify", tenant_id=t))
    assert verified["ok"] is True and verified["events_checked"] >= 5
    assert verified == await rpc.call("verify_audit_chain", {"tenant_id": t})


async def audit_request_id(rpc, tenant_id: str, node_id: str) -> str:
    events = (await rpc.call("list_audit_events", {"tenant_id": tenant_id,
                                                   "method": "create_node",
                                                   "target_id": node_id}))["audit_events"]
    assert len(events) == 1
    return events[0]["request_id"]


async def test_request_ids_are_echoed_and_forwarded_to_rpc_server(rest, rpc):
    t = await make_tenant(rpc)
    nt = await make_node_type(rpc, t)
    mine = unique("trace.rest:1")
    resp = await call(rest, "POST", N, tenant_id=t, json={"node_type_id": nt},
                      headers={"X-Request-ID": mine})
    assert resp.headers["x-request-id"] == mine
    assert await audit_request_id(rpc, t, ok(resp, 201)["node"]["id"]) == mine

    missing = await call(rest, "GET", N + "/{node_id}", tenant_id=t, node_id=missing_id(),
                         headers={"X-Request-ID": mine})
    assert error(missing, 404, -32001)["request_id"] == mine

    longest = "r" * 128
    resp = await call(rest, "GET", T, tenant_id=t, headers={"X-Request-ID": longest})
    assert resp.headers["x-request-id"] == longest
    for invalid in ("has spaces", "x" * 129, "x" * 300, "semi;colon", "é".encode(), ""):
        resp = await call(rest, "POST", N, tenant_id=t, json={"node_type_id": nt},
                          headers={"X-Request-ID": invalid})
        generated = resp.headers["x-request-id"]
        assert GENERATED_ID.match(generated) and generated != invalid
        assert await audit_request_id(rpc, t, ok(resp, 201)["node"]["id"]) == generated
    resp = await call(rest, "POST", N, tenant_id=t, json={"node_type_id": nt})
    assert GENERATED_ID.match(resp.headers["x-request-id"])
    first, second = await rest.get("/tenants/nope"), await rest.get("/tenants/nope")
    assert first.headers["x-request-id"] != second.headers["x-request-id"]



# ---------------------------------------------------------------- last: coverage

def test_every_route_is_exercised(request):
    module_tests = {item.originalname for item in request.session.items
                    if item.module is request.module}
    everything_ran = module_tests == {name for name in globals() if name.startswith("test_")}
    if not everything_ran:
        pytest.skip("only part of this module was selected")
    assert ROUTES - EXERCISED == set(), "routes without a test"
