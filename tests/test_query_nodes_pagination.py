"""query_nodes pagination: keyset pagination for every sort (timestamps, data paths, nulls
and missing values), include_total, page tokens bound to their sort, forged tokens, long sort
keys."""
from __future__ import annotations

import base64
import uuid

import orjson
import pytest

from rpc_server.client import InvalidParams
from rpc_server.storage.node_filter import parse_sort
from rpc_server.storage.pagination import encode_token

from .conftest import error_fields
from .query_nodes_helpers import (
    _MISSING,
    TOKEN,
    check_errors,
    jsonb_order,
    leaf,
    node_key,
    query,
    ts,
    walk,
)

# ---------------------------------------------------------------- pagination

RANKS = [3, 1, _MISSING, 1, "b", None, 2.5, 3, True,          # one create_nodes batch
         1, "a", _MISSING, 0, 3, {"o": 1}, [1], 2, 1,          # a second batch
         2, _MISSING, "b", 1, 0]                               # one create_node each


async def _paging_world(rpc, tenant) -> tuple[str, list[dict]]:
    tid = tenant["id"]
    nt = (await rpc.call("create_node_type", {"tenant_id": tid, "name": "P"}))["node_type"]

    def data(i):
        rank = RANKS[i]
        return {"i": i} if rank is _MISSING else {"i": i, "rank": rank}

    nodes = []
    for batch in (range(0, 9), range(9, 18)):
        nodes += (await rpc.call("create_nodes", {"tenant_id": tid, "nodes": [
            {"node_type_id": nt["id"], "data": data(i)} for i in batch]}))["nodes"]
    for i in range(18, len(RANKS)):
        nodes.append((await rpc.call("create_node", {"tenant_id": tid, "node_type_id": nt["id"],
                                                     "data": data(i)}))["node"])
    for i in (20, 4, 0, 13, 9, 17):  # updated_at order differs from created_at order
        updated = (await rpc.call("update_node", {"tenant_id": tid, "id": nodes[i]["id"],
                                                  "data": nodes[i]["data"]}))["node"]
        nodes[i] = updated
    return tid, nodes


def _rank(node):
    return node["data"].get("rank", _MISSING)


NULL_RANKS = [i for i, r in enumerate(RANKS) if r is None or r is _MISSING]
NOT_NULL = {"not": leaf("data.i", "in", NULL_RANKS)}  # nodes with a non-null data.rank


async def test_pagination_walks_timestamp_sorts(rpc, tenant):
    tid, nodes = await _paging_world(rpc, tenant)
    n = len(nodes)
    assert len({x["created_at"] for x in nodes}) < n  # ties on created_at within batches
    by_created = [x["id"] for x in sorted(nodes, key=lambda x: node_key(x, "created_at"))]
    by_updated = [x["id"] for x in sorted(nodes, key=lambda x: node_key(x, "updated_at"))]
    assert by_created != by_updated
    expectations = [
        (None, by_created),
        ({"field": "created_at"}, by_created),
        ({"field": "created_at", "direction": "asc"}, by_created),
        ({"field": "created_at", "direction": "desc"}, by_created[::-1]),
        ({"field": "updated_at", "direction": "asc"}, by_updated),
        ({"field": "updated_at", "direction": "desc"}, by_updated[::-1]),
    ]
    for sort, expected in expectations:
        for page_size in (1, 4, 7, n, 1000):
            params = {} if sort is None else {"sort": sort}
            got = await walk(rpc, tid, page_size, expected_total=n, **params)
            assert got == expected, (sort, page_size)
    # with a filter: total_count counts the matches, every match once, in order
    flt = leaf("data.rank", "eq", 1)
    rank_of = {x["id"]: _rank(x) for x in nodes}
    ones = [i for i in by_updated if type(rank_of[i]) is int and rank_of[i] == 1]  # not True
    assert len(ones) == 5
    for direction, order in (("asc", ones), ("desc", ones[::-1])):
        got = await walk(rpc, tid, 2, expected_total=5, filter=flt,
                         sort={"field": "updated_at", "direction": direction})
        assert got == order


async def test_pagination_walks_data_sorts(rpc, tenant):
    tid, nodes = await _paging_world(rpc, tenant)
    ranked = [x for x in nodes if x["data"]["i"] not in NULL_RANKS]
    by_rank = [x["id"] for x in sorted(ranked, key=lambda x: (jsonb_order(_rank(x)), x["id"]))]
    m = len(by_rank)
    expectations = [
        ({"field": "data.rank"}, by_rank),
        ({"field": "data.rank", "direction": "asc"}, by_rank),
        ({"field": "data.rank", "direction": "desc"}, by_rank[::-1]),
        ({"field": ["data", "rank"], "direction": "asc"}, by_rank),
    ]
    for sort, expected in expectations:
        for page_size in (1, 4, 7, m, 1000):
            got = await walk(rpc, tid, page_size, expected_total=m, filter=NOT_NULL, sort=sort)
            assert got == expected, (sort, page_size)
    # numbers only (ties on 1, 3 and 0), through the node_type_id parameter too
    numeric = [x for x in nodes if type(_rank(x)) in (int, float)]
    expected = [x["id"] for x in sorted(numeric, key=lambda x: (_rank(x), x["id"]))]
    for direction, order in (("asc", expected), ("desc", expected[::-1])):
        got = await walk(rpc, tid, 3, expected_total=len(expected),
                         filter={"and": [leaf("data.rank", "gte", -1e9)]},
                         sort={"field": "data.rank", "direction": direction},
                         node_type_id=nodes[0]["node_type_id"])
        assert got == order


async def test_data_sort_in_one_page_puts_missing_with_null(rpc, tenant):
    tid, nodes = await _paging_world(rpc, tenant)
    by_rank = [x["id"] for x in sorted(nodes, key=lambda x: (jsonb_order(_rank(x)), x["id"]))]
    for direction, order in (("asc", by_rank), ("desc", by_rank[::-1])):
        full = await query(rpc, tid, sort={"field": "data.rank", "direction": direction},
                           pagination={"page_size": 1000})
        assert [x["id"] for x in full["nodes"]] == order
    # missing values sort exactly like JSON null (by id among themselves), first when asc
    assert by_rank[:len(NULL_RANKS)] == sorted(nodes[i]["id"] for i in NULL_RANKS)
    # a path on array elements: only the node with data.rank = [1] has data.rank.0
    full = await query(rpc, tid, sort={"field": "data.rank.0"}, pagination={"page_size": 1000})
    assert full["nodes"][-1]["id"] == nodes[15]["id"]
    # nothing matches: no nodes, no token, total 0
    empty = await query(rpc, tid, filter=leaf("data.rank", "eq", "zzz"))
    assert empty == {"nodes": [], "pagination": {"next_page_token": "", "total_count": 0}}


@pytest.mark.parametrize("sort, page_size", [
    ({"field": "data.rank"}, 1),
    ({"field": "data.rank"}, 4),
    ({"field": "data.rank", "direction": "desc"}, 1),
    ({"field": "data.nosuch"}, 5),
], ids=["asc-1", "asc-4", "desc-1", "all-missing"])
async def test_data_sort_pages_past_null_values(rpc, tenant, sort, page_size):
    tid, nodes = await _paging_world(rpc, tenant)
    key = (lambda x: (jsonb_order(_rank(x)), x["id"])) if sort["field"] == "data.rank" \
        else (lambda x: x["id"])
    expected = [x["id"] for x in sorted(nodes, key=key)]
    if sort.get("direction") == "desc":
        expected.reverse()
    assert await walk(rpc, tid, page_size, expected_total=len(nodes), sort=sort) == expected


async def test_include_total_false_and_past_the_end(rpc, tenant):
    tid, nodes = await _paging_world(rpc, tenant)
    first = await query(rpc, tid, pagination={"page_size": 5, "include_total": False})
    assert "total_count" not in first["pagination"] and len(first["nodes"]) == 5
    assert first["pagination"]["next_page_token"]
    # page_size 0 means the default (10), as for the other list methods
    default = await query(rpc, tid, pagination={"page_size": 0})
    assert len(default["nodes"]) == 10
    # a token pointing after the last node: an empty page, still with the total
    last = max(nodes, key=lambda x: node_key(x, "created_at"))
    token = encode_token("query_nodes:created_at:asc", ts(last["created_at"]), last["id"])
    past = await query(rpc, tid, pagination={"page_size": 5, "page_token": token})
    assert past == {"nodes": [], "pagination": {"next_page_token": "",
                                                "total_count": len(nodes)}}


async def test_page_tokens_are_bound_to_their_sort(rpc, tenant):
    tid, nodes = await _paging_world(rpc, tenant)
    sorts = [None, {"field": "created_at", "direction": "desc"}, {"field": "updated_at"},
             {"field": "updated_at", "direction": "desc"}, {"field": "data.rank"},
             {"field": "data.rank", "direction": "desc"}, {"field": "data.i"}]
    tokens = []
    for sort in sorts:
        params = {"filter": NOT_NULL} if sort is None else {"filter": NOT_NULL, "sort": sort}
        result = await query(rpc, tid, **params, pagination={"page_size": 2})
        tokens.append(result["pagination"]["next_page_token"])
        assert tokens[-1]
        # the token works with its own sort
        again = await query(rpc, tid, **params, pagination={"page_size": 2,
                                                             "page_token": tokens[-1]})
        assert len(again["nodes"]) == 2
        assert not {x["id"] for x in again["nodes"]} & {x["id"] for x in result["nodes"]}
    cases = []
    for i, token in enumerate(tokens):
        for j, sort in enumerate(sorts):
            if i != j:
                cases.append(((token, j), TOKEN))
    await check_errors(cases, lambda tj: query(
        rpc, tid, **({} if sorts[tj[1]] is None else {"sort": sorts[tj[1]]}),
        pagination={"page_token": tj[0]}))
    # tokens of list_nodes are not query_nodes tokens, and the other way round
    listed = await rpc.call("list_nodes", {"tenant_id": tid, "pagination": {"page_size": 2}})
    with pytest.raises(InvalidParams) as exc:
        await query(rpc, tid, pagination={"page_token": listed["pagination"]["next_page_token"]})
    assert error_fields(exc) == [TOKEN]
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("list_nodes", {"tenant_id": tid, "pagination": {"page_token": tokens[0]}})
    assert error_fields(exc) == [TOKEN]


def _raw_token(parts) -> str:
    raw = orjson.dumps(parts) if not isinstance(parts, bytes) else parts
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


FORGED = [
    ("garbage", None),
    ("!!!!", None),
    (_raw_token(b"not json"), None),
    (_raw_token({"a": 1}), None),
    (_raw_token(["query_nodes:created_at:asc", "2024-01-01T00:00:00+00:00"]), None),
    (_raw_token(["query_nodes:created_at:asc", "2024-01-01T00:00:00+00:00", "nope"]), None),
    (_raw_token(["query_nodes:created_at:asc", "yesterday", str(uuid.uuid4())]), None),
    (_raw_token(["query_nodes:created_at:asc", "2024-01-01T00:00:00", str(uuid.uuid4())]),
     None),
    (_raw_token(["query_nodes:created_at:asc", "0001-01-01T00:00:00+01:00",
                 str(uuid.uuid4())]), None),
    (_raw_token(["query_nodes:created_at:asc", 5, str(uuid.uuid4())]), None),
    (_raw_token([parse_sort({"field": "data.rank"}).scope, "not json {", str(uuid.uuid4())]),
     {"field": "data.rank"}),
    (_raw_token([parse_sort({"field": "data.rank"}).scope, "1e400", str(uuid.uuid4())]),
     {"field": "data.rank"}),
    (_raw_token(["query_nodes:[\"rank\"]:desc", "1", str(uuid.uuid4())]), {"field": "data.rank"}),
    (_raw_token(["nodes", "2024-01-01T00:00:00+00:00", str(uuid.uuid4())]), None),
]


async def test_forged_page_tokens(rpc, ds):
    await check_errors([((token, sort), TOKEN) for token, sort in FORGED],
                       lambda ts_: query(rpc, ds.tenant_id,
                                         **({} if ts_[1] is None else {"sort": ts_[1]}),
                                         pagination={"page_token": ts_[0]}))


async def test_forged_but_well_formed_data_token_is_honoured(rpc, ds):
    # a token is just (last sort value, last id): a hand-made one for the data sort works
    token = _raw_token([parse_sort({"field": "data.n"}).scope, "2", str(uuid.UUID(int=0))])
    result = await query(rpc, ds.tenant_id, sort={"field": "data.n"},
                         pagination={"page_token": token, "include_total": False})
    assert {ds.label(x["id"]) for x in result["nodes"]} == {"C", "G"}  # numbers > 2


async def test_forged_token_with_nul_is_an_invalid_token(rpc, ds):
    token = _raw_token([parse_sort({"field": "data.n"}).scope, '"\\u0000"', str(uuid.uuid4())])
    with pytest.raises(InvalidParams) as exc:
        await query(rpc, ds.tenant_id, sort={"field": "data.n"},
                    pagination={"page_token": token})
    assert error_fields(exc) == [TOKEN]


K256 = "k" * 256


@pytest.mark.parametrize("path, make", [
    (["data", "d"], lambda i: {"d": f"{i}" + "x" * 800}),
    (["data", K256, K256, K256], lambda i: {K256: {K256: {K256: i}}}),
], ids=["long-values", "long-path"])
async def test_long_sort_keys_paginate(rpc, tenant, path, make):
    tid = tenant["id"]
    nt = (await rpc.call("create_node_type", {"tenant_id": tid, "name": "Long"}))["node_type"]
    await rpc.call("create_nodes", {"tenant_id": tid, "nodes": [
        {"node_type_id": nt["id"], "data": make(i)} for i in range(3)]})
    first = await query(rpc, tid, sort={"field": path}, pagination={"page_size": 1})
    assert len(first["pagination"]["next_page_token"]) <= 16_384  # the documented limit
    assert len(await walk(rpc, tid, 1, expected_total=3, sort={"field": path})) == 3
