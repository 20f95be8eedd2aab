"""Helpers shared by the query_nodes tests (test_query_nodes.py, test_query_nodes_pagination.py,
test_query_nodes_index.py): filter leaves, paged walks, expected errors, jsonb ordering and the
fixed dataset of eight nodes."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from rpc_server.client import FlexDBClient, InvalidParams, RpcError

from .conftest import unique

TOKEN = "pagination.page_token"


# ---------------------------------------------------------------- helpers

def leaf(field_, op, value=None, **extra) -> dict:
    node = {"field": field_, "op": op, **extra}
    if value is not None or op != "exists":
        node["value"] = value
    return node


async def query(rpc, tenant_id, **params) -> dict:
    return await rpc.call("query_nodes", {"tenant_id": tenant_id, **params})


async def walk(rpc, tenant_id, page_size, expected_total=None, **params) -> list[str]:
    """Ids of every page in order; checks page sizes, tokens and total_count on the way."""
    ids, token, pages = [], "", 0
    while True:
        result = await query(rpc, tenant_id, **params,
                             pagination={"page_size": page_size, "page_token": token,
                                         "include_total": True})
        pages += 1
        assert pages < 1000, "pagination does not terminate"
        page_ids = [n["id"] for n in result["nodes"]]
        assert len(page_ids) <= page_size
        if expected_total is not None:
            assert result["pagination"]["total_count"] == expected_total
        ids += page_ids
        token = result["pagination"]["next_page_token"]
        if not token:
            return ids
        assert len(page_ids) == page_size  # only the last page may be short


async def error_field_of(call) -> str:
    """The first error field of an InvalidParams answer, or a description of what else came."""
    try:
        await call
    except InvalidParams as exc:
        return exc.data["errors"][0]["field"]
    except RpcError as exc:
        return f"<{exc.code} {exc.message}>"
    return "<no error>"


async def check_errors(cases, call) -> None:
    """cases: (params, expected field) pairs; call(params) makes the request."""
    wrong = []
    for params, where in cases:
        got = await error_field_of(call(params))
        if got != where:
            wrong.append(f"{params!r:.300}: got {got}, expected {where}")
    assert not wrong, "\n".join(wrong)


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def node_key(node: dict, column: str) -> tuple:
    return ts(node[column]), node["id"]


_MISSING = object()


def jsonb_order(value) -> tuple:
    """PostgreSQL's jsonb btree order for the values these tests sort on:
    null < string < number < boolean < array < object (non-empty arrays only)."""
    if value is None or value is _MISSING:
        return (0,)
    if isinstance(value, str):
        return (1, value)  # single lowercase letters: the same order in every collation
    if isinstance(value, bool):
        return (3, value)
    if isinstance(value, (int, float)):
        return (2, value)
    if isinstance(value, list):
        assert value, "empty top-level arrays sort before null in jsonb"
        return (4, repr(value))
    return (5, repr(value))


# ---------------------------------------------------------------- the fixed dataset
#
# Eight nodes, created one by one in this order (so created_at increases); G and H have a
# second node type; C is updated afterwards (version 2, the latest updated_at).

DATASET = {
    "A": {"n": 1, "s": "apple", "tags": ["red", "blue"], "addr": {"city": "Oslo", "zip": "0150"},
          "flag": True, "k.d": "dotted", "pct": "50%_off", "obj": {"p": 1, "q": [1, 2]}},
    "B": {"n": 1.0, "s": "banana", "tags": ["blue"], "addr": {"city": "Bergen"}, "flag": False,
          "nul": None, "k": {"d": "nested"}, "pct": "50xyoff", "obj": {"q": [1, 2], "p": 1}},
    "C": {"n": 2.5, "s": "cherry", "tags": [], "addr": {"city": "Oslo", "zip": "0151"},
          "flag": "true", "nul": 0, "pct": "50%_", "obj": {"p": 1}},
    "D": {"n": -3, "s": "10", "tags": ["red", ["nested"]], "addr": "Oslo", "pct": 50,
          "obj": {"p": 1, "q": [2, 1]}},
    "E": {"n": "5", "s": 7, "tags": "red", "flag": None},
    "F": {},
    "G": {"n": 100, "s": "avocado", "tags": [{"c": "red"}],
          "addr": {"city": "Oslo", "geo": {"lat": 59}}, "flag": True, "nul": False},
    "H": {"n": None, "s": "app", "tags": ["blue", "red"], "addr": {"city": "Oslo"},
          "flag": {"x": 1}},
}
ALL = set(DATASET)
SECOND_TYPE = set("GH")


@dataclass
class Dataset:
    tenant_id: str
    type1: str
    type2: str
    nodes: dict = field(default_factory=dict)  # label -> node object (latest version)

    @property
    def ids(self) -> dict:
        return {label: n["id"] for label, n in self.nodes.items()}

    def label(self, node_id: str) -> str:
        return {v: k for k, v in self.ids.items()}[node_id]

    async def match(self, rpc, flt, **params) -> set[str]:
        """Labels of the nodes matching `flt` (one page holds them all)."""
        result = await query(rpc, self.tenant_id, filter=flt, **params,
                             pagination={"page_size": 1000})
        ids = [n["id"] for n in result["nodes"]]
        assert len(ids) == len(set(ids))
        assert result["pagination"] == {"next_page_token": "", "total_count": len(ids)}
        return {self.label(i) for i in ids}


async def _build_dataset(server) -> Dataset:
    async with FlexDBClient(server.url, api_key=server.admin_key) as rpc:
        tenant = (await rpc.call("create_tenant", {"slug": unique("q"), "name": "Q"}))["tenant"]
        tid = tenant["id"]
        t1, t2 = [(await rpc.call("create_node_type", {"tenant_id": tid, "name": name}))[
            "node_type"]["id"] for name in (unique("T1"), unique("T2"))]
        ds = Dataset(tid, t1, t2)
        for label, data in DATASET.items():
            ds.nodes[label] = (await rpc.call("create_node", {
                "tenant_id": tid, "node_type_id": t2 if label in SECOND_TYPE else t1,
                "data": data}))["node"]
        ds.nodes["C"] = (await rpc.call("update_node", {"tenant_id": tid,
                                                        "id": ds.nodes["C"]["id"],
                                                        "data": DATASET["C"]}))["node"]
        return ds
