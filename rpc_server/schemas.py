"""JSON Schema (Draft 2020-12) checks for node types and node data, with compiled
validators cached per node type version."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any
from uuid import UUID

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from .errors import InvalidParams

MAX_REPORTED_ERRORS = 10


SCHEMA_URI = "urn:flexdb:node-type-schema"


def check_schema(schema: dict | None, field: str = "schema") -> None:
    """Refuse a schema that is not valid Draft 2020-12, or whose $refs cannot be resolved
    (only references inside the schema itself are: nothing is ever fetched)."""
    if schema is None:
        return
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        path = "/".join(str(p) for p in exc.absolute_path)
        where = f" at /{path}" if path else ""
        raise InvalidParams.field(field, f"is not a valid JSON Schema{where}: {exc.message}") from None
    resolver = Registry().with_resource(
        SCHEMA_URI, DRAFT202012.create_resource(schema)).resolver(base_uri=SCHEMA_URI)
    for ref in _references(schema):
        try:
            resolver.lookup(ref)
        except Unresolvable:
            raise InvalidParams.field(field, f"$ref {ref!r} cannot be resolved: only references "
                                      "to parts of the same schema are supported") from None


def _references(schema: Any) -> list[str]:
    refs, stack = [], [schema]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key in ("$ref", "$dynamicRef") and isinstance(value, str):
                    refs.append(value)
                else:
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)
    return refs


def _path(prefix: str, parts) -> str:
    return ".".join([prefix, *(str(p) for p in parts)])


def _describe(err, field: str) -> list[dict]:
    """A `required` error names the parent object; point at each missing property instead."""
    if err.validator == "required" and isinstance(err.instance, dict):
        missing = [p for p in err.validator_value if p not in err.instance]
        return [{"field": _path(field, [*err.absolute_path, p]), "message": "is required"}
                for p in missing]
    return [{"field": _path(field, err.absolute_path), "message": err.message}]


class ValidatorCache:
    """LRU of compiled validators keyed by (tenant, node type, version): a schema change
    bumps the version, so stale validators are never used and need no invalidation."""

    def __init__(self, size: int = 1024):
        self.size = size
        self._items: OrderedDict[tuple, Draft202012Validator] = OrderedDict()

    def get(self, tenant_id: UUID, node_type_id: UUID, version: int,
            schema: dict) -> Draft202012Validator:
        key = (tenant_id, node_type_id, version)
        validator = self._items.get(key)
        if validator is None:
            validator = Draft202012Validator(
                schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
            self._items[key] = validator
            if len(self._items) > self.size:
                self._items.popitem(last=False)
        else:
            self._items.move_to_end(key)
        return validator

    def errors(self, node_type: Any, data: dict, field: str = "data") -> list[dict]:
        """Validation errors of `data` against the node type's schema ([] when valid)."""
        schema = node_type["schema"]
        if schema is None:
            return []
        validator = self.get(node_type["tenant_id"], node_type["id"], node_type["version"], schema)
        try:
            found = []
            for err in validator.iter_errors(data):
                found += _describe(err, field)
                if len(found) >= MAX_REPORTED_ERRORS:
                    break
            return found[:MAX_REPORTED_ERRORS]
        except Unresolvable as exc:
            return [{"field": "schema", "message": f"node type schema has an unresolvable $ref: {exc}"}]
