"""Graph walks: traverse and shortest_path over relationships.

Every answer is checked against a Python BFS over the relationships the test made: the
set of reached nodes, each node's depth (its true BFS distance), the order (depth, then
node id), and that each returned path is a real chain of relationships from the start in
the requested direction, of the allowed types, whose length is the depth."""
from __future__ import annotations

import asyncio
import random
from collections import deque

import pytest

from rpc_server.client import (
    FlexDBClient,
    InternalError,
    InvalidParams,
    NotFound,
    QueryRejected,
    RpcError,
)

from .conftest import make_tenant, missing_id, unique

DIRECTIONS = ("out", "in", "both")


# ---------------------------------------------------------------- helpers

async def make_nodes(rpc, tenant_id, count) -> list[str]:
    """Ids of `count` new nodes (of a new schemaless node type) in the tenant."""
    nt = (await rpc.call("create_node_type", {"tenant_id": tenant_id,
                                              "name": unique("Thing")}))["node_type"]
    ids = []
    for start in range(0, count, 1000):
        items = [{"node_type_id": nt["id"], "data": {"n": i}}
                 for i in range(start, min(count, start + 1000))]
        created = await rpc.call("create_nodes", {"tenant_id": tenant_id, "nodes": items})
        ids += [n["id"] for n in created["nodes"]]
    return ids


class Graph:
    """Nodes and relationships of one tenant, as made by the test (the BFS oracle)."""

    def __init__(self, rpc, tenant_id: str, nodes: list[str]):
        self.rpc, self.tid, self.nodes = rpc, tenant_id, nodes
        self.rels: dict[str, tuple[str, str, str]] = {}  # id -> (source, target, type)

    @classmethod
    async def make(cls, rpc, tenant_id: str, count: int) -> "Graph":
        return cls(rpc, tenant_id, await make_nodes(rpc, tenant_id, count))

    def n(self, x) -> str:
        return self.nodes[x] if isinstance(x, int) else x

    async def add(self, edges) -> list[str]:
        """Create relationships (source, target[, type]) in bulk; node ends may be indexes
        into self.nodes. Returns the new ids in input order."""
        items = [{"source_node_id": self.n(e[0]), "target_node_id": self.n(e[1]),
                  "relationship_type": e[2] if len(e) > 2 else "r"} for e in edges]
        ids = []
        for start in range(0, len(items), 1000):
            created = (await self.rpc.call("create_relationships", {
                "tenant_id": self.tid, "relationships": items[start:start + 1000]}))[
                "relationships"]
            for r in created:
                self.rels[r["id"]] = (r["source_node_id"], r["target_node_id"],
                                      r["relationship_type"])
                ids.append(r["id"])
        return ids

    def neighbours(self, direction: str, types) -> dict[str, list[str]]:
        adj: dict[str, list[str]] = {}
        for source, target, rel_type in self.rels.values():
            if types and rel_type not in types:
                continue
            if direction in ("out", "both"):
                adj.setdefault(source, []).append(target)
            if direction in ("in", "both"):
                adj.setdefault(target, []).append(source)
        return adj

    def bfs(self, start: str, direction="out", types=None, max_depth=3) -> dict[str, int]:
        """node -> least depth, for every node within max_depth hops (the start included)."""
        adj = self.neighbours(direction, types)
        depth = {start: 0}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            if depth[node] == max_depth:
                continue
            for other in adj.get(node, ()):
                if other not in depth:
                    depth[other] = depth[node] + 1
                    queue.append(other)
        return depth

    def walk(self, start: str, rel_ids: list[str], direction: str, types) -> list[str]:
        """The nodes visited following rel_ids from start; asserts each step is allowed."""
        visited = [start]
        for rel_id in rel_ids:
            assert rel_id in self.rels, f"unknown relationship {rel_id} in a path"
            source, target, rel_type = self.rels[rel_id]
            if types:
                assert rel_type in types, f"path uses type {rel_type!r}, allowed {types}"
            here = visited[-1]
            if direction == "out":
                assert source == here, "an 'out' path must follow relationships source->target"
                visited.append(target)
            elif direction == "in":
                assert target == here, "an 'in' path must follow relationships target->source"
                visited.append(source)
            else:
                assert here in (source, target), "a 'both' path must be a connected chain"
                visited.append(target if source == here else source)
        return visited

    # ------------------------------------------------------------ calls and checks

    async def traverse(self, start, **params) -> dict:
        if params.get("relationship_types", ()) is None:  # None: no filter (key left out)
            del params["relationship_types"]
        return await self.rpc.call("traverse", {"tenant_id": self.tid,
                                                "start_node_id": self.n(start), **params})

    async def shortest(self, source, target, **params) -> dict | None:
        if params.get("relationship_types", ()) is None:
            del params["relationship_types"]
        return (await self.rpc.call("shortest_path", {
            "tenant_id": self.tid, "source_node_id": self.n(source),
            "target_node_id": self.n(target), **params}))["path"]

    def check_traverse(self, result: dict, start, direction="out", types=None, max_depth=3,
                       limit=100) -> list[tuple[int, str]]:
        """Asserts the traverse result is exactly the BFS answer; returns (depth, id) rows."""
        start = self.n(start)
        assert set(result) == {"nodes", "truncated"}
        expected = self.bfs(start, direction, types, max_depth)
        del expected[start]
        want = sorted((d, n) for n, d in expected.items())
        got = [(item["depth"], item["node"]["id"]) for item in result["nodes"]]
        assert got == want[:limit], "reached nodes, depths or order differ from BFS"
        assert result["truncated"] is (len(want) > limit)
        for item in result["nodes"]:
            assert set(item) == {"node", "depth", "path"}
            node, depth, path = item["node"]["id"], item["depth"], item["path"]
            assert item["node"]["tenant_id"] == self.tid
            assert len(path) == depth
            assert self.walk(start, path, direction, types)[-1] == node
        return got

    def check_path(self, path, source, target, direction="out", types=None, max_depth=10):
        """Asserts a shortest_path answer is a shortest valid path, or None when the BFS
        finds no path within max_depth."""
        source, target = self.n(source), self.n(target)
        distance = self.bfs(source, direction, types, max_depth).get(target)
        if distance is None:
            assert path is None, f"expected no path, got {path}"
            return
        assert path is not None, f"expected a path of length {distance}, got null"
        assert set(path) == {"node_ids", "relationship_ids", "length"}
        assert path["length"] == distance
        assert len(path["relationship_ids"]) == distance
        assert len(path["node_ids"]) == distance + 1
        assert path["node_ids"][0] == source and path["node_ids"][-1] == target
        assert self.walk(source, path["relationship_ids"], direction, types) == path["node_ids"]


def depths(result: dict) -> dict[str, int]:
    return {item["node"]["id"]: item["depth"] for item in result["nodes"]}


def paths(result: dict) -> dict[str, list[str]]:
    return {item["node"]["id"]: item["path"] for item in result["nodes"]}


# ---------------------------------------------------------------- cycles, diamonds, chains

async def test_three_node_cycle_in_every_direction(rpc, tenant):
    g = await Graph.make(rpc, tenant["id"], 3)
    a, b, c = g.nodes
    ab, bc, ca = await g.add([(a, b), (b, c), (c, a)])
    for max_depth in (1, 2, 3, 10):
        for direction in DIRECTIONS:
            result = await g.traverse(a, direction=direction, max_depth=max_depth)
            g.check_traverse(result, a, direction, max_depth=max_depth)
    out = await g.traverse(a, max_depth=10)
    assert depths(out) == {b: 1, c: 2} and paths(out) == {b: [ab], c: [ab, bc]}
    inward = await g.traverse(a, direction="in", max_depth=10)
    assert depths(inward) == {c: 1, b: 2} and paths(inward) == {c: [ca], b: [ca, bc]}
    both = await g.traverse(a, direction="both", max_depth=10)
    assert depths(both) == {b: 1, c: 1} and paths(both) == {b: [ab], c: [ca]}

    assert await g.shortest(a, c) == {"node_ids": [a, b, c], "relationship_ids": [ab, bc],
                                      "length": 2}
    assert await g.shortest(a, c, direction="in") == {"node_ids": [a, c],
                                                      "relationship_ids": [ca], "length": 1}
    assert await g.shortest(c, a, direction="both") == {"node_ids": [c, a],
                                                        "relationship_ids": [ca], "length": 1}
    assert await g.shortest(a, c, max_depth=1) is None


async def test_start_node_is_never_in_the_result_even_on_a_cycle(rpc, tenant):
    g = await Graph.make(rpc, tenant["id"], 2)
    a, b = g.nodes
    ab, ba = await g.add([(a, b), (b, a)])
    for direction in DIRECTIONS:
        result = await g.traverse(a, direction=direction, max_depth=10)
        g.check_traverse(result, a, direction, max_depth=10)
        assert depths(result) == {b: 1}
    assert paths(await g.traverse(a)) == {b: [ab]}
    assert paths(await g.traverse(a, direction="in")) == {b: [ba]}
    assert paths(await g.traverse(a, direction="both"))[b] in ([ab], [ba])
    path = await g.shortest(a, b, direction="both")
    assert path["length"] == 1 and path["relationship_ids"][0] in (ab, ba)


async def test_self_loops(rpc, tenant):
    g = await Graph.make(rpc, tenant["id"], 3)
    a, b, lonely = g.nodes
    aa, ab, _ = await g.add([(a, a), (a, b), (lonely, lonely)])
    for direction in DIRECTIONS:
        result = await g.traverse(a, direction=direction, max_depth=10)
        g.check_traverse(result, a, direction, max_depth=10)
        # only a self-loop: nothing reachable, and no error
        assert await g.traverse(lonely, direction=direction, max_depth=10) == \
            {"nodes": [], "truncated": False}
    assert paths(await g.traverse(a)) == {b: [ab]}
    assert paths(await g.traverse(b, direction="in")) == {a: [ab]}
    assert paths(await g.traverse(b, direction="both", max_depth=10)) == {a: [ab]}
    # a self-loop is never part of a path, and a node's path to itself is empty
    assert await g.shortest(a, a) == {"node_ids": [a], "relationship_ids": [], "length": 0}
    assert await g.shortest(lonely, lonely, max_depth=1) == {
        "node_ids": [lonely], "relationship_ids": [], "length": 0}
    assert await g.shortest(a, b, direction="both") == {"node_ids": [a, b],
                                                        "relationship_ids": [ab], "length": 1}
    assert await g.shortest(lonely, a, direction="both") is None
    assert aa in g.rels


async def test_diamond_reaches_the_far_corner_once(rpc, tenant):
    g = await Graph.make(rpc, tenant["id"], 4)
    a, b, c, d = g.nodes
    ab, ac, bd, cd = await g.add([(a, b), (a, c), (b, d), (c, d)])
    result = await g.traverse(a, max_depth=10)
    g.check_traverse(result, a, max_depth=10)
    assert [item["node"]["id"] for item in result["nodes"]].count(d) == 1
    assert depths(result) == {b: 1, c: 1, d: 2}
    assert paths(result)[d] in ([ab, bd], [ac, cd])
    # upwards from d, and both ways from b (a and d at 1, c at 2)
    g.check_traverse(await g.traverse(d, direction="in"), d, "in")
    both = await g.traverse(b, direction="both", max_depth=10)
    g.check_traverse(both, b, "both", max_depth=10)
    assert depths(both) == {a: 1, d: 1, c: 2}
    g.check_path(await g.shortest(a, d), a, d)
    g.check_path(await g.shortest(d, a, direction="in"), d, a, "in")
    assert await g.shortest(d, a) is None


async def test_nested_diamonds_do_not_multiply_results(rpc, tenant):
    """Ten diamonds in a row: 2^10 paths to the end, one result row per node."""
    g = await Graph.make(rpc, tenant["id"], 31)
    edges = []
    for i in range(10):
        top, left, right, bottom = 3 * i, 3 * i + 1, 3 * i + 2, 3 * i + 3
        edges += [(top, left), (top, right), (left, bottom), (right, bottom)]
    await g.add(edges)
    result = await g.traverse(0, max_depth=10, limit=10000)
    got = g.check_traverse(result, 0, max_depth=10, limit=10000)
    assert len(got) == 15  # 2 nodes at each odd depth, 1 at each even depth up to 10
    g.check_path(await g.shortest(0, 30), 0, 30)  # 20 hops away: beyond max_depth 10
    g.check_path(await g.shortest(0, 15), 0, 15)
    assert (await g.shortest(0, 15))["length"] == 10


async def test_parallel_edges(rpc, tenant):
    g = await Graph.make(rpc, tenant["id"], 3)
    a, b, c = g.nodes
    ab1, ab2, ab3, bc = await g.add([(a, b, "x"), (a, b, "x"), (a, b, "y"), (b, c, "x")])
    result = await g.traverse(a)
    g.check_traverse(result, a)
    assert depths(result) == {b: 1, c: 2}
    assert paths(result)[b][0] in (ab1, ab2, ab3)
    only_y = await g.traverse(a, relationship_types=["y"])
    assert paths(only_y) == {b: [ab3]}
    only_x = await g.traverse(a, relationship_types=["x"])
    g.check_traverse(only_x, a, types=["x"])
    assert paths(only_x)[b][0] in (ab1, ab2) and paths(only_x)[c][1] == bc
    path = await g.shortest(a, b, relationship_types=["y"])
    assert path == {"node_ids": [a, b], "relationship_ids": [ab3], "length": 1}
    assert await g.shortest(a, c, relationship_types=["y"]) is None
    for direction in DIRECTIONS:
        g.check_traverse(await g.traverse(b, direction=direction), b, direction)


async def test_long_chain_is_cut_at_max_depth(rpc, tenant):
    g = await Graph.make(rpc, tenant["id"], 15)
    chain = await g.add([(i, i + 1) for i in range(14)])
    default = await g.traverse(0)
    assert [(item["depth"], item["node"]["id"]) for item in default["nodes"]] == \
        [(1, g.nodes[1]), (2, g.nodes[2]), (3, g.nodes[3])]  # default max_depth is 3
    for max_depth in (1, 5, 10):
        result = await g.traverse(0, max_depth=max_depth)
        g.check_traverse(result, 0, max_depth=max_depth)
        assert len(result["nodes"]) == max_depth and result["truncated"] is False
        assert paths(result) == {g.nodes[d]: chain[:d] for d in range(1, max_depth + 1)}
    # the middle of the chain, both ways
    both = await g.traverse(7, direction="both", max_depth=10)
    g.check_traverse(both, 7, "both", max_depth=10)
    assert len(both["nodes"]) == 14
    # shortest_path: default max_depth 10
    assert (await g.shortest(0, 10))["relationship_ids"] == chain[:10]
    assert await g.shortest(0, 11) is None
    assert await g.shortest(0, 6, max_depth=5) is None
    assert (await g.shortest(0, 5, max_depth=5))["length"] == 5
    assert (await g.shortest(14, 4, direction="in"))["relationship_ids"] == chain[4:14][::-1]
    assert await g.shortest(14, 4) is None
    assert (await g.shortest(14, 4, direction="both"))["node_ids"] == g.nodes[4:15][::-1]


async def test_traverse_returns_the_full_node(rpc, tenant):
    g = await Graph.make(rpc, tenant["id"], 3)
    await g.add([(0, 1), (1, 2)])
    result = await g.traverse(0)
    for item in result["nodes"]:
        stored = (await rpc.call("get_node", {"tenant_id": g.tid,
                                              "id": item["node"]["id"]}))["node"]
        assert item["node"] == stored
    assert [item["node"]["data"] for item in result["nodes"]] == [{"n": 1}, {"n": 2}]


# ---------------------------------------------------------------- directions and types

async def test_directions_on_a_mixed_graph(rpc, tenant):
    #   a -> b -> c,  d -> b,  c -> e,  f -> a
    g = await Graph.make(rpc, tenant["id"], 6)
    a, b, c, d, e, f = g.nodes
    await g.add([(a, b), (b, c), (d, b), (c, e), (f, a)])
    expected = {"out": {b: 1, c: 2, e: 3}, "in": {f: 1},
                "both": {b: 1, f: 1, c: 2, d: 2, e: 3}}
    for direction, want in expected.items():
        result = await g.traverse(a, direction=direction)
        g.check_traverse(result, a, direction)
        assert depths(result) == want
    from_b_in = await g.traverse(b, direction="in", max_depth=10)
    assert depths(from_b_in) == {a: 1, d: 1, f: 2}
    # direction "" is the default ("out")
    assert await g.traverse(a, direction="") == await g.traverse(a)
    assert await g.shortest(a, d) is None
    assert await g.shortest(a, d, direction="in") is None
    g.check_path(await g.shortest(a, d, direction="both"), a, d, "both")
    g.check_path(await g.shortest(e, f, direction="in"), e, f, "in")
    assert (await g.shortest(e, f, direction="in"))["node_ids"] == [e, c, b, a, f]


async def test_relationship_types_filter_traversal_and_paths(rpc, tenant):
    # a -x-> d directly; a -y-> b -y-> c -y-> d the long way; b -z-> e; e -y-> d
    g = await Graph.make(rpc, tenant["id"], 5)
    a, b, c, d, e = g.nodes
    ad, ab, bc, cd, be, ed = await g.add([(a, d, "x"), (a, b, "y"), (b, c, "y"),
                                          (c, d, "y"), (b, e, "z"), (e, d, "y")])
    cases = {None: {d: 1, b: 1, c: 2, e: 2}, ("x",): {d: 1}, ("y",): {b: 1, c: 2, d: 3},
             ("y", "z"): {b: 1, c: 2, e: 2, d: 3}, ("x", "y"): {d: 1, b: 1, c: 2},
             ("nope",): {}}
    for types, want in cases.items():
        types = list(types) if types else None
        result = await g.traverse(a, relationship_types=types, max_depth=10)
        g.check_traverse(result, a, types=types, max_depth=10)
        assert depths(result) == want
    assert paths(await g.traverse(a, relationship_types=["y"]))[d] == [ab, bc, cd]
    # duplicates in the filter change nothing
    assert await g.traverse(a, relationship_types=["y", "y", "z"]) == \
        await g.traverse(a, relationship_types=["z", "y"])
    # the filter applies in every direction
    for direction in DIRECTIONS:
        for types in (["y"], ["z"], ["x", "z"]):
            result = await g.traverse(c, direction=direction, relationship_types=types,
                                      max_depth=10)
            g.check_traverse(result, c, direction, types, max_depth=10)
    # and to shortest_path
    assert await g.shortest(a, d, relationship_types=["y"]) == {
        "node_ids": [a, b, c, d], "relationship_ids": [ab, bc, cd], "length": 3}
    assert await g.shortest(a, d, relationship_types=["y"], max_depth=2) is None
    assert (await g.shortest(a, d))["relationship_ids"] == [ad]
    assert await g.shortest(a, e, relationship_types=["y"]) is None
    path = await g.shortest(a, d, relationship_types=["y", "z"], direction="both")
    g.check_path(path, a, d, "both", ["y", "z"])
    assert path["length"] == 3
    assert (await g.shortest(d, b, direction="in", relationship_types=["z", "y"]))[
        "relationship_ids"] in ([ed, be], [cd, bc])


async def test_changes_to_the_graph_show_at_once(rpc, tenant):
    g = await Graph.make(rpc, tenant["id"], 3)
    a, b, c = g.nodes
    ab, bc = await g.add([(a, b), (b, c)])
    assert depths(await g.traverse(a)) == {b: 1, c: 2}
    await rpc.call("update_relationship", {"tenant_id": g.tid, "id": bc,
                                           "relationship_type": "other"})
    assert depths(await g.traverse(a, relationship_types=["r"])) == {b: 1}
    await rpc.call("delete_relationship", {"tenant_id": g.tid, "id": ab})
    assert await g.traverse(a) == {"nodes": [], "truncated": False}
    assert await g.shortest(a, c, direction="both") is None
    await rpc.call("delete_node", {"tenant_id": g.tid, "id": b})
    with pytest.raises(NotFound):
        await g.traverse(b)
    assert await g.traverse(c, direction="in") == {"nodes": [], "truncated": False}


# ---------------------------------------------------------------- random graphs vs BFS

async def random_graph(rpc, seed: int, nodes=60, edges=150, types=("a", "b", "c")) -> Graph:
    rng = random.Random(seed)
    g = await Graph.make(rpc, (await make_tenant(rpc))["id"], nodes)
    await g.add([(rng.randrange(nodes), rng.randrange(nodes), rng.choice(types))
                 for _ in range(edges)])
    return g


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_traverse_matches_bfs_on_random_graphs(rpc, seed):
    g = await random_graph(rpc, seed)
    rng = random.Random(seed * 1000)
    cases = []
    for start in rng.sample(range(len(g.nodes)), 4):
        for direction in DIRECTIONS:
            for types in (None, ["a"], ["a", "c"]):
                cases.append((start, direction, types, rng.choice([1, 2, 3, 5, 10])))
    results = await asyncio.gather(*(
        g.traverse(start, direction=direction, relationship_types=types, max_depth=depth,
                   limit=10000) for start, direction, types, depth in cases))
    for (start, direction, types, depth), result in zip(cases, results):
        g.check_traverse(result, start, direction, types, depth, limit=10000)
    # a random small limit still gives the nearest nodes in (depth, id) order
    for start in rng.sample(range(len(g.nodes)), 3):
        limit = rng.randint(1, 8)
        result = await g.traverse(start, direction="both", max_depth=10, limit=limit)
        g.check_traverse(result, start, "both", None, 10, limit=limit)


@pytest.mark.parametrize("seed", [5, 6, 7])
async def test_shortest_path_matches_bfs_on_random_graphs(rpc, seed):
    g = await random_graph(rpc, seed)
    rng = random.Random(seed * 1000)
    cases = []
    for _ in range(60):
        cases.append((rng.randrange(len(g.nodes)), rng.randrange(len(g.nodes)),
                      rng.choice(DIRECTIONS), rng.choice([None, ["b"], ["a", "b"]]),
                      rng.choice([1, 2, 3, 4, 10])))
    results = await asyncio.gather(*(
        g.shortest(s, t, direction=d, relationship_types=types, max_depth=depth)
        for s, t, d, types, depth in cases))
    found = 0
    for (s, t, d, types, depth), path in zip(cases, results):
        g.check_path(path, g.nodes[s], g.nodes[t], d, types, depth)
        found += path is not None and path["length"] > 1
    assert found >= 5, "the random cases should include real multi-hop paths"
    # traverse and shortest_path agree on every node reached
    for start in rng.sample(range(len(g.nodes)), 2):
        result = await g.traverse(start, direction="both", max_depth=10, limit=10000)
        sample = rng.sample(result["nodes"], min(10, len(result["nodes"])))
        for item in sample:
            path = await g.shortest(start, item["node"]["id"], direction="both")
            assert path["length"] == item["depth"]


# ---------------------------------------------------------------- limit and truncated

async def test_limit_and_truncated(rpc, tenant):
    # hub -> 10 spokes, each spoke -> its own leaf: 10 nodes at depth 1, 10 at depth 2
    g = await Graph.make(rpc, tenant["id"], 21)
    await g.add([(0, i) for i in range(1, 11)] + [(i, i + 10) for i in range(1, 11)])
    spokes = sorted(g.nodes[1:11])
    leaves = sorted(g.nodes[11:21])
    for limit, truncated in ((1, True), (5, True), (10, True), (15, True), (19, True),
                             (20, False), (21, False), (10000, False)):
        result = await g.traverse(0, limit=limit)
        got = g.check_traverse(result, 0, limit=limit)
        assert len(got) == min(limit, 20) and result["truncated"] is truncated
        assert [n for _, n in got] == (spokes + leaves)[:limit]
    # limit 0 means the default (100)
    assert (await g.traverse(0, limit=0)) == (await g.traverse(0))
    # a limit cut inside depth 2: the kept nodes still have full, valid paths
    result = await g.traverse(0, limit=13)
    assert all(len(item["path"]) == item["depth"] for item in result["nodes"])


async def test_default_limit_is_100(rpc, tenant):
    g = await Graph.make(rpc, tenant["id"], 151)
    await g.add([(0, i) for i in range(1, 151)])
    for params in ({}, {"limit": 0}):
        result = await g.traverse(0, **params)
        got = g.check_traverse(result, 0, limit=100)
        assert len(got) == 100 and result["truncated"] is True
    result = await g.traverse(0, limit=150)
    assert len(result["nodes"]) == 150 and result["truncated"] is False


# ---------------------------------------------------------------- tenants and permissions

async def test_tenant_isolation(rpc):
    tenant_a, tenant_b = await make_tenant(rpc), await make_tenant(rpc)
    ga = await Graph.make(rpc, tenant_a["id"], 6)
    gb = await Graph.make(rpc, tenant_b["id"], 6)
    shape = [(0, 1), (1, 2), (2, 0), (2, 3), (4, 3), (3, 5)]
    await ga.add(shape)
    await gb.add(shape)
    for g in (ga, gb):
        for direction in DIRECTIONS:
            result = await g.traverse(0, direction=direction, max_depth=10)
            g.check_traverse(result, 0, direction, max_depth=10)
            assert {item["node"]["id"] for item in result["nodes"]} <= set(g.nodes)
            assert all(item["node"]["tenant_id"] == g.tid for item in result["nodes"])
            assert all(rel in g.rels for item in result["nodes"] for rel in item["path"])

    # a start node of another tenant answers like a missing node
    for params in ({"tenant_id": tenant_a["id"], "start_node_id": gb.nodes[0]},
                   {"tenant_id": tenant_b["id"], "start_node_id": ga.nodes[0]},
                   {"tenant_id": tenant_a["id"], "start_node_id": missing_id()}):
        with pytest.raises(NotFound) as exc:
            await rpc.call("traverse", params)
        assert exc.value.code == -32001 and exc.value.data["kind"] == "node"
        assert exc.value.data["id"] == params["start_node_id"]

    # shortest_path between the tenants: NotFound, whichever end is foreign
    for source, target, foreign in ((ga.nodes[0], gb.nodes[3], gb.nodes[3]),
                                    (gb.nodes[0], ga.nodes[3], gb.nodes[0]),
                                    (ga.nodes[0], missing_id(), None),
                                    (missing_id(), ga.nodes[0], None)):
        with pytest.raises(NotFound) as exc:
            await rpc.call("shortest_path", {"tenant_id": tenant_a["id"],
                                             "source_node_id": source,
                                             "target_node_id": target, "direction": "both"})
        assert exc.value.code == -32001 and exc.value.data["kind"] == "node"
        if foreign:
            assert exc.value.data["id"] == foreign
    with pytest.raises(NotFound):
        await rpc.call("shortest_path", {"tenant_id": tenant_b["id"],
                                         "source_node_id": gb.nodes[0],
                                         "target_node_id": ga.nodes[0]})
    # the same call inside each tenant works
    ga.check_path(await ga.shortest(0, 5), ga.nodes[0], ga.nodes[5])
    gb.check_path(await gb.shortest(4, 1, direction="both"), gb.nodes[4], gb.nodes[1], "both")


async def new_user_key(rpc) -> tuple[dict, str]:
    user = (await rpc.call("create_user", {"email": f"{unique('u')}@example.com",
                                           "display_name": "U"}))["user"]
    key = await rpc.call("create_api_key", {"name": "graph-test", "user_id": user["id"]})
    return user, key["secret"]


async def test_viewer_may_walk_and_outsiders_see_no_tenant(server, rpc, tenant):
    g = await Graph.make(rpc, tenant["id"], 3)
    await g.add([(0, 1), (1, 2)])
    other = await make_tenant(rpc)
    go = await Graph.make(rpc, other["id"], 2)
    await go.add([(0, 1)])

    viewer, viewer_key = await new_user_key(rpc)
    await rpc.call("add_user_to_tenant", {"tenant_id": tenant["id"], "user_id": viewer["id"],
                                          "role": "viewer"})
    _, outsider_key = await new_user_key(rpc)
    traverse = {"tenant_id": tenant["id"], "start_node_id": g.nodes[0]}
    shortest = {"tenant_id": tenant["id"], "source_node_id": g.nodes[0],
                "target_node_id": g.nodes[2]}
    async with FlexDBClient(server.url, api_key=viewer_key) as client:
        assert await client.call("traverse", traverse) == await rpc.call("traverse", traverse)
        assert (await client.call("shortest_path", shortest))["path"]["length"] == 2
        # the viewer is no member of the other tenant
        for method, params in (
                ("traverse", {"tenant_id": other["id"], "start_node_id": go.nodes[0]}),
                ("shortest_path", {"tenant_id": other["id"], "source_node_id": go.nodes[0],
                                   "target_node_id": go.nodes[1]})):
            with pytest.raises(NotFound) as exc:
                await client.call(method, params)
            assert exc.value.data["kind"] == "tenant"
        # its own tenant with a node of the other tenant: a missing node
        with pytest.raises(NotFound) as exc:
            await client.call("traverse", {**traverse, "start_node_id": go.nodes[0]})
        assert exc.value.data["kind"] == "node"
    async with FlexDBClient(server.url, api_key=outsider_key) as client:
        for tenant_id in (tenant["id"], missing_id()):
            for method, params in (("traverse", traverse), ("shortest_path", shortest)):
                with pytest.raises(NotFound) as exc:
                    await client.call(method, {**params, "tenant_id": tenant_id})
                assert exc.value.code == -32001 and exc.value.data["kind"] == "tenant"
                assert exc.value.message == "tenant not found"
    # the platform admin on a tenant that does not exist
    with pytest.raises(NotFound):
        await rpc.call("traverse", {**traverse, "tenant_id": missing_id()})


# ---------------------------------------------------------------- params

BAD_TRAVERSE = [
    ("max_depth", 0), ("max_depth", 11), ("max_depth", -1), ("max_depth", "3"),
    ("max_depth", 2.5), ("max_depth", True), ("max_depth", 2 ** 63 - 1),
    ("limit", 10001), ("limit", -1), ("limit", "5"), ("limit", 1.5), ("limit", -(2 ** 63)),
    ("direction", "sideways"), ("direction", "OUT"), ("direction", 1), ("direction", ["out"]),
    ("relationship_types", "r"), ("relationship_types", [""]), ("relationship_types", [1]),
    ("relationship_types", ["x" * 101]), ("relationship_types", ["a\nb"]),
    ("relationship_types", [f"t{i}" for i in range(51)]), ("relationship_types", {"r": 1}),
    ("timeout_ms", 30001), ("timeout_ms", -1), ("timeout_ms", "100"), ("timeout_ms", 0.5),
    ("start_node_id", "not-a-uuid"), ("start_node_id", None), ("start_node_id", 5),
    ("tenant_id", "nope"), ("depth", 3), ("source_node_id", "x"),
]


@pytest.mark.parametrize("field,value", BAD_TRAVERSE)
async def test_bad_traverse_params_are_invalid_params(rpc, tenant, field, value):
    (node,) = await make_nodes(rpc, tenant["id"], 1)
    params = {"tenant_id": tenant["id"], "start_node_id": node, field: value}
    with pytest.raises(RpcError) as exc:
        await rpc.call("traverse", params)
    assert not isinstance(exc.value, InternalError)
    assert isinstance(exc.value, InvalidParams), exc.value
    assert exc.value.code == -32602
    fields = [e["field"].split(".")[0] for e in exc.value.data["errors"]]
    assert field in fields


BAD_SHORTEST = [
    ("max_depth", 0), ("max_depth", 11), ("max_depth", "10"), ("direction", "up"),
    ("direction", "IN"), ("relationship_types", [""]), ("relationship_types", "r"),
    ("timeout_ms", 30001), ("timeout_ms", -5), ("limit", 5), ("start_node_id", "x"),
    ("source_node_id", "nope"), ("target_node_id", 7), ("target_node_id", None),
]


@pytest.mark.parametrize("field,value", BAD_SHORTEST)
async def test_bad_shortest_path_params_are_invalid_params(rpc, tenant, field, value):
    a, b = await make_nodes(rpc, tenant["id"], 2)
    params = {"tenant_id": tenant["id"], "source_node_id": a, "target_node_id": b,
              field: value}
    with pytest.raises(RpcError) as exc:
        await rpc.call("shortest_path", params)
    assert not isinstance(exc.value, InternalError)
    assert isinstance(exc.value, InvalidParams), exc.value
    assert exc.value.code == -32602
    fields = [e["field"].split(".")[0] for e in exc.value.data["errors"]]
    assert field in fields


@pytest.mark.parametrize("method", ["traverse", "shortest_path"])
async def test_required_params_are_invalid_params_when_missing(rpc, tenant, method):
    a, b = await make_nodes(rpc, tenant["id"], 2)
    full = ({"tenant_id": tenant["id"], "start_node_id": a} if method == "traverse" else
            {"tenant_id": tenant["id"], "source_node_id": a, "target_node_id": b})
    for missing in full:
        params = {k: v for k, v in full.items() if k != missing}
        with pytest.raises(InvalidParams) as exc:
            await rpc.call(method, params)
        assert missing in [e["field"] for e in exc.value.data["errors"]]
    # no params at all, or params that are no object: refused, never an internal error
    for params in (None, [], "x", 5):
        with pytest.raises(RpcError) as exc:
            await rpc.call(method, params)
        assert exc.value.code in (-32600, -32602), exc.value


async def test_boundary_params_are_accepted(rpc, tenant):
    g = await Graph.make(rpc, tenant["id"], 12)
    await g.add([(i, i + 1) for i in range(11)])
    for params in ({"max_depth": 1}, {"max_depth": 10}, {"limit": 1}, {"limit": 10000},
                   {"timeout_ms": 1}, {"timeout_ms": 30000}, {"timeout_ms": 0},
                   {"direction": ""}, {"direction": None},
                   {"relationship_types": [f"t{i}" for i in range(49)] + ["r"]}):
        try:
            result = await g.traverse(0, **params)
        except QueryRejected as exc:  # timeout_ms 1 may run out on a slow machine
            assert params == {"timeout_ms": 1} and exc.data["type"] == "timeout"
            continue
        g.check_traverse(result, 0, max_depth=params.get("max_depth", 3),
                         limit=params.get("limit") or 100)
    for params in ({"max_depth": 1}, {"max_depth": 10}, {"timeout_ms": 30000},
                   {"timeout_ms": 0}, {"direction": ""}, {"relationship_types": ["r"]}):
        path = await g.shortest(0, 1, **params)
        assert path["length"] == 1
    assert await g.shortest(0, 11) is None  # 11 hops: beyond the default max_depth 10


@pytest.mark.parametrize("method", ["traverse", "shortest_path"])
@pytest.mark.parametrize("types", [[], None, ""], ids=["empty-list", "null", "empty-string"])
async def test_empty_or_null_relationship_types_mean_no_filter(rpc, tenant, method, types):
    g = await Graph.make(rpc, tenant["id"], 3)
    await g.add([(0, 1, "x"), (1, 2, "y")])
    if method == "traverse":
        params = {"tenant_id": g.tid, "start_node_id": g.nodes[0]}
    else:
        params = {"tenant_id": g.tid, "source_node_id": g.nodes[0],
                  "target_node_id": g.nodes[2]}
    unfiltered = await rpc.call(method, params)
    assert await rpc.call(method, {**params, "relationship_types": types}) == unfiltered


@pytest.mark.parametrize("field,value", [("limit", False), ("limit", 0.0),
                                         ("timeout_ms", False), ("timeout_ms", 0.0)])
async def test_false_and_float_zero_are_not_integers(rpc, tenant, field, value):
    (node,) = await make_nodes(rpc, tenant["id"], 1)
    with pytest.raises(InvalidParams):
        await rpc.call("traverse", {"tenant_id": tenant["id"], "start_node_id": node,
                                    field: value})


# ---------------------------------------------------------------- resource abuse

@pytest.fixture(scope="module")
def dense_seed():
    return 20240601


async def dense_graph(rpc, seed: int) -> Graph:
    rng = random.Random(seed)
    g = await Graph.make(rpc, (await make_tenant(rpc))["id"], 200)
    await g.add([(rng.randrange(200), rng.randrange(200), rng.choice("abc"))
                 for _ in range(3000)])
    return g


async def assert_server_healthy(rpc, g: Graph, rounds: int = 25):
    """Normal calls right after (more than the pool holds, so every connection is used)."""
    results = await asyncio.gather(*(g.traverse(i, max_depth=1, limit=10000)
                                     for i in range(rounds)))
    for i, result in enumerate(results):
        g.check_traverse(result, i, max_depth=1, limit=10000)
    tenant = await rpc.call("get_tenant", {"id": g.tid})
    assert tenant["tenant"]["id"] == g.tid


async def test_dense_graph_with_tiny_timeout_times_out_cleanly(rpc, dense_seed):
    g = await dense_graph(rpc, dense_seed)
    outcomes = []
    for params in ({"direction": "both", "max_depth": 10, "limit": 10000, "timeout_ms": 1},
                   {"direction": "out", "max_depth": 10, "timeout_ms": 1},
                   {"direction": "in", "max_depth": 10, "relationship_types": ["a", "b"],
                    "timeout_ms": 1}):
        try:
            result = await g.traverse(0, **params)
        except QueryRejected as exc:
            assert exc.code == -32006 and exc.data["type"] == "timeout"
            assert exc.data["timeout_ms"] == 1
            outcomes.append("timeout")
        else:
            g.check_traverse(result, 0, params["direction"], params.get("relationship_types"),
                             10, params.get("limit", 100))
            outcomes.append("ok")
        await assert_server_healthy(rpc, g, rounds=3)
    # many at once: no InternalError, no leaked or broken connection
    isolated = (await make_nodes(rpc, g.tid, 1))[0]
    calls = [g.traverse(i, direction="both", max_depth=10, limit=10000, timeout_ms=1)
             for i in range(20)]
    calls += [g.shortest(i, isolated, direction="both", max_depth=10, timeout_ms=1)
              for i in range(20)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            assert isinstance(result, QueryRejected), repr(result)
            assert result.data["type"] == "timeout"
            outcomes.append("timeout")
        else:
            assert result is None or "nodes" in result
            outcomes.append("ok")
    assert "timeout" in outcomes, "a 1 ms walk over 3,000 relationships should time out"
    await assert_server_healthy(rpc, g)


async def test_dense_graph_full_walk_is_correct_and_fast(rpc, dense_seed):
    g = await dense_graph(rpc, dense_seed + 1)
    # default timeout_ms: a QueryRejected here fails the test
    for start, direction, types in ((0, "both", None), (1, "out", None), (2, "in", ["a"]),
                                    (3, "out", ["b", "c"])):
        result = await g.traverse(start, direction=direction, relationship_types=types,
                                  max_depth=10, limit=10000)
        g.check_traverse(result, start, direction, types, 10, limit=10000)
    # shortest paths on the dense graph, including an unreachable target (full walk)
    isolated = (await make_nodes(rpc, g.tid, 1))[0]
    rng = random.Random(dense_seed)
    for _ in range(10):
        s, t = rng.randrange(200), rng.randrange(200)
        direction = rng.choice(DIRECTIONS)
        g.check_path(await g.shortest(s, t, direction=direction), g.nodes[s], g.nodes[t],
                     direction)
    for direction in DIRECTIONS:
        assert await g.shortest(0, isolated, direction=direction) is None


async def test_wide_tree_walk_is_not_quadratic(rpc):
    spokes = 2500  # hub -> 2,500 spokes -> one leaf each: 5,001 nodes, 5,000 relationships
    g = await Graph.make(rpc, (await make_tenant(rpc))["id"], 2 * spokes + 1)
    await g.add([(0, i) for i in range(1, spokes + 1)] +
                [(i, i + spokes) for i in range(1, spokes + 1)])
    # A walk linear in nodes + relationships takes milliseconds here; the quadratic one it
    # replaces ran past this timeout (-32006) on the same tree.
    result = await g.traverse(0, timeout_ms=2000)  # default limit 100 and max_depth 3
    g.check_traverse(result, 0)
    path = await g.shortest(0, 2 * spokes, timeout_ms=2000)
    g.check_path(path, 0, 2 * spokes)
