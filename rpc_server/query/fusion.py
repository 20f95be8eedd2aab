"""Hybrid search: reciprocal-rank fusion (RRF) of a full-text ranking and a vector one.

Each list ranks nodes best first; a node's fused score is the sum, over the lists it is in,
of 1 / (RRF_K + its place in that list) (places count from 1). Nodes in both lists rise
above nodes in one; the constant damps the difference between the first places (60, as in
Cormack, Clarke and Büttcher's paper and most search engines). Ties go to the node placed
better in the first list, then to the smaller id."""
from __future__ import annotations

from typing import Any, Hashable, Sequence

from rpc_server.errors import InvalidParams
from rpc_server.storage.node_search import uses_search

RRF_K = 60


def fuse(lists: Sequence[Sequence[Hashable]], limit: int,
         k: int = RRF_K) -> list[tuple[Hashable, float]]:
    """(id, score) of the best `limit` ids of the ranked `lists`, best first."""
    scores: dict[Hashable, float] = {}
    first_place: dict[Hashable, tuple[int, int]] = {}
    for list_index, ranked in enumerate(lists):
        for place, item in enumerate(ranked, 1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + place)
            first_place.setdefault(item, (list_index, place))
    ordered = sorted(scores, key=lambda item: (-scores[item], first_place[item], str(item)))
    return [(item, scores[item]) for item in ordered[:limit]]


def without_search(node: Any, where: str = "filter") -> Any:
    """The filter with its `search` conditions taken out, for the vector side of a hybrid
    query: they may be the filter itself or members of its top-level `and` (elsewhere,
    under `or` or `not`, taking them out would change what the rest means). None when
    nothing is left."""
    if isinstance(node, dict) and node.get("op") == "search":
        return None
    if isinstance(node, dict) and isinstance(node.get("and"), list) and len(node) == 1:
        kept = [member for member in node["and"]
                if not (isinstance(member, dict) and member.get("op") == "search")]
        _refuse_nested(kept, where)
        return {"and": kept} if kept else None
    _refuse_nested(node, where)
    return node


def _refuse_nested(node: Any, where: str) -> None:
    if uses_search(node):
        raise InvalidParams.field(where, "in a hybrid query (near with a search condition) "
                                         "the search conditions go at the top of the filter: "
                                         "the filter itself, or members of its top-level "
                                         "\"and\"")
