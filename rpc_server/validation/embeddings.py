"""The check of a node's embedding against its node type's declaration
({"field": "data.<path>", "dimensions": D, "metrics": [...]}): at the declared path the data
holds either nothing (the path is absent, or JSON null: the node is then simply not among
k-NN results) or an array of exactly D finite numbers, each within the range of a 4-byte
float (what pgvector stores)."""
from __future__ import annotations

import asyncio
import math
from typing import Any

from rpc_server.storage.vectors import FLOAT4_MAX

_MISSING = object()


def value_at(data: Any, path: list[str]) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return _MISSING
        data = data[key]
    return data


def vector_problem(value: Any, dimensions: int) -> str | None:
    """Why `value` is not a vector of `dimensions` finite numbers (None: it is one)."""
    if not isinstance(value, list):
        return f"must be an array of {dimensions} numbers (the node type's embedding)"
    if len(value) != dimensions:
        return (f"must have exactly {dimensions} numbers (the node type's embedding "
                f"dimensions), not {len(value)}")
    for index, x in enumerate(value):
        kind = type(x)
        if kind is float:
            if not math.isfinite(x) or abs(x) > FLOAT4_MAX:
                return f"element {index} must be a finite number within ±3.4e38"
        elif kind is int:
            if abs(x) > FLOAT4_MAX:
                return f"element {index} must be a finite number within ±3.4e38"
        else:
            return f"element {index} must be a number, not {type(x).__name__}"
    return None


def embedding_errors(declaration: dict | None, data: Any, where: str = "data",
                     extra: dict | None = None) -> list[dict]:
    """[{"field": "data.embedding", "message"}] when the data's embedding does not fit the
    declaration ([] when it does, or when there is none). `where` is where data is in the
    params ("data", "nodes.3.data")."""
    if not declaration:
        return []
    path = declaration["field"].split(".")[1:]
    value = value_at(data, path)
    if value is _MISSING or value is None:
        return []
    problem = vector_problem(value, int(declaration["dimensions"]))
    if problem is None:
        return []
    field = ".".join([where, *path])
    return [{"field": field, "message": problem, **(extra or {})}]


INLINE_NUMBERS = 20_000  # checked on the event loop up to this many numbers (~2 ms), else
# in a thread (pure Python: the loop still runs between the interpreter's switches)


async def embeddings_errors(items: list[tuple[Any, Any, str, dict]]) -> list[dict]:
    """embedding_errors of each (node type, data, field, extra) whose type declares one."""
    checks = []
    numbers = 0
    for node_type, data, where, extra in items:
        declaration = node_type.get("embedding")
        if declaration:
            checks.append((declaration, data, where, extra))
            numbers += int(declaration["dimensions"])
    if not checks:
        return []

    def run() -> list[dict]:
        return [error for check in checks for error in embedding_errors(*check)]

    return run() if numbers <= INLINE_NUMBERS else await asyncio.to_thread(run)
