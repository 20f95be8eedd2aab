"""JSON Schema (Draft 2020-12) checks for node types and node data, with compiled
validators cached per node type version."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any
from uuid import UUID

from jsonschema import Draft202012Validator, ValidationError, validators
from jsonschema.exceptions import SchemaError
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from . import safe_regex
from .errors import InvalidParams
from .schema_fast_path import fast_check

MAX_REPORTED_ERRORS = 10
MAX_MESSAGE = 300  # jsonschema messages quote the whole offending value
# Values of these keywords are data, not subschemas: "$ref" or "pattern" in them mean nothing.
DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})
# Instances tried once when a schema is saved, to catch references that loop on themselves.
PROBE_INSTANCES = (None, True, 0, "", [], {})

safe_regex.install()


def _canonical(value: Any) -> Any:
    """A hashable form in which JSON-Schema-equal values are equal (1 == 1.0, true != 1)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return (type(value).__name__, value)
    if isinstance(value, (int, float)):
        return ("number", int(value) if float(value).is_integer() else value)
    if isinstance(value, list):
        return ("array", tuple(_canonical(v) for v in value))
    if isinstance(value, dict):
        return ("object", frozenset((k, _canonical(v)) for k, v in value.items()))
    return ("other", repr(value))


def _unique_items(validator, unique, instance, schema):
    """uniqueItems in linear time (jsonschema's own is quadratic for objects and arrays)."""
    if not unique or not validator.is_type(instance, "array"):
        return
    seen = set()
    for item in instance:
        key = _canonical(item)
        if key in seen:
            yield ValidationError(f"{instance!r} has non-unique elements"[:200])
            return
        seen.add(key)


NodeDataValidator = validators.extend(Draft202012Validator, {"uniqueItems": _unique_items})


SCHEMA_URI = "urn:flexdb:node-type-schema"
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def check_schema(schema: dict | bool | None, field: str = "schema") -> None:
    """Refuse a schema that is not valid Draft 2020-12, or whose $refs cannot be resolved
    (only references inside the schema itself are: nothing is ever fetched)."""
    if schema is None or type(schema) is bool:  # true and false are whole schemas
        return
    dialect = schema.get("$schema")
    if dialect is not None and (not isinstance(dialect, str) or dialect.rstrip("#") != DIALECT):
        raise InvalidParams.field(field, f"$schema must be {DIALECT!r} (JSON Schema Draft "
                                  "2020-12) or left out; other drafts are not supported")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        path = "/".join(str(p) for p in exc.absolute_path)
        where = f" at /{path}" if path else ""
        raise InvalidParams.field(field, f"is not a valid JSON Schema{where}: {exc.message}") from None
    except RecursionError:  # the meta-schema's check recurses ~8 frames per level
        raise InvalidParams.field(field, "is nested too deeply to be checked as a JSON "
                                  "Schema") from None
    refs, patterns = _references_and_patterns(schema)
    resolver = Registry().with_resource(
        SCHEMA_URI, DRAFT202012.create_resource(schema)).resolver(base_uri=SCHEMA_URI)
    for ref in refs:
        try:
            resolver.lookup(ref)
        except Unresolvable:
            raise InvalidParams.field(field, f"$ref {ref!r} cannot be resolved: only references "
                                      "to parts of the same schema are supported") from None
    for pattern in patterns:
        reason = safe_regex.unsupported_reason(pattern)
        if reason:
            raise InvalidParams.field(field, f"pattern {pattern!r} is not supported ({reason}); "
                                      "patterns use RE2 syntax: no backreferences or lookaround")
    validator = NodeDataValidator(schema)
    for probe in PROBE_INSTANCES:
        try:
            for _ in validator.iter_errors(probe):
                pass
        except RecursionError:
            raise InvalidParams.field(field, "the schema refers to itself without end "
                                      "(a $ref loop)") from None


def _references_and_patterns(schema: Any) -> tuple[list[str], list[str]]:
    refs, patterns, stack = [], [], [schema]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key in DATA_KEYWORDS:
                    continue
                if key in ("$ref", "$dynamicRef") and isinstance(value, str):
                    refs.append(value)
                elif key == "pattern" and isinstance(value, str):
                    patterns.append(value)
                else:
                    if key == "patternProperties" and isinstance(value, dict):
                        patterns.extend(value)
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)
    return refs, patterns


def _path(prefix: str, parts) -> str:
    return ".".join([prefix, *(str(p) for p in parts)])


def _describe(err, field: str) -> list[dict]:
    """A `required` error names the parent object; point at each missing property instead."""
    if err.validator == "required" and isinstance(err.instance, dict):
        missing = [p for p in err.validator_value if p not in err.instance]
        return [{"field": _path(field, [*err.absolute_path, p]), "message": "is required"}
                for p in missing]
    message = err.message if len(err.message) <= MAX_MESSAGE else err.message[:MAX_MESSAGE] + "…"
    return [{"field": _path(field, err.absolute_path), "message": message}]


class ValidatorCache:
    """LRU of compiled validators keyed by (tenant, node type, version): a schema change
    bumps the version, so stale validators are never used and need no invalidation."""

    def __init__(self, size: int = 1024):
        self.size = size
        # (tenant, node type, version) -> (compiled validator, fast yes or None)
        self._items: OrderedDict[tuple, tuple] = OrderedDict()
        self.hits = self.misses = 0  # read by /metrics

    def get(self, tenant_id: UUID, node_type_id: UUID, version: int,
            schema: dict) -> tuple:
        key = (tenant_id, node_type_id, version)
        validator = self._items.get(key)
        if validator is None:
            self.misses += 1
            validator = (NodeDataValidator(schema,
                                           format_checker=Draft202012Validator.FORMAT_CHECKER),
                         fast_check(schema))
            self._items[key] = validator
            if len(self._items) > self.size:
                self._items.popitem(last=False)
        else:
            self.hits += 1
            self._items.move_to_end(key)
        return validator

    def errors(self, node_type: Any, data: dict, field: str = "data") -> list[dict]:
        """Validation errors of `data` against the node type's schema ([] when valid)."""
        schema = node_type["schema"]
        if schema is None:
            return []
        validator, fast = self.get(node_type["tenant_id"], node_type["id"], node_type["version"],
                                   schema)
        if fast is not None and fast(data):
            return []  # valid: jsonschema would find nothing (see schema_fast_path.py)
        try:
            found = []
            for err in validator.iter_errors(data):
                found += _describe(err, field)
                if len(found) >= MAX_REPORTED_ERRORS:
                    break
            return found[:MAX_REPORTED_ERRORS]
        except Unresolvable as exc:
            return [{"field": "schema", "message": f"node type schema has an unresolvable $ref: {exc}"}]
        except RecursionError:
            return [{"field": "schema", "message": "node type schema refers to itself without end"}]
        except safe_regex.UnsupportedPattern as exc:
            return [{"field": "schema", "message": f"node type schema has an unsupported pattern: {exc}"}]
