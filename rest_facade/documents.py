"""PATCH of a document (a node's or relationship's `data`) as a JSON merge patch (RFC 7396),
applied here as read -> merge -> write with the read version as `expected_version`, so a
concurrent change makes the write fail with 409 instead of being overwritten."""
from __future__ import annotations

from typing import Any

import orjson
from pydantic import Field

from rpc_server.api.params import JsonObject, Params, RelationshipType, Version


class NodePatch(Params):
    """A JSON merge patch of the node's data: keys set to null are removed, objects merge."""
    data: JsonObject = Field(description="Merge patch (RFC 7396) applied to the node's data")
    expected_version: Version | None = Field(
        None, description="Fail with 409 unless the node still has this version")


class RelationshipPatch(Params):
    """Change the type and/or merge-patch the data of a relationship."""
    relationship_type: RelationshipType | None = None
    data: JsonObject | None = Field(
        None, description="Merge patch (RFC 7396) applied to the relationship's data")
    expected_version: Version | None = Field(
        None, description="Fail with 409 unless the relationship still has this version")


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def document_of(item: dict) -> dict:
    """The stored data, also when the server returns documents as JSON strings."""
    data = item.get("data")
    if isinstance(data, str):
        return orjson.loads(data) if data else {}
    return data or {}

