"""A fast yes for the commonest node type schemas, before jsonschema.

Most schemas are a flat object: typed properties, maybe `required`, string lengths, number
bounds, `additionalProperties: false`. For those, `fast_check(schema)` returns a plain
function that says True only when jsonschema (Draft 2020-12) would find the document
valid; when it says False, or the schema has anything else in it, jsonschema runs as
before and writes the errors. So the answers never change, and a valid document of such a
type costs a few dict lookups instead of a walk through jsonschema's machinery (which was
a quarter of a bulk create's time)."""
from __future__ import annotations

from typing import Any, Callable

# Keywords with no effect on validity (annotations), and the ones this path checks. A
# "$schema" is left to jsonschema below the top: there it switches the draft (the top one
# can only be 2020-12, see check_schema).
ANNOTATIONS = frozenset({"$comment", "title", "description", "default", "examples",
                         "deprecated", "readOnly", "writeOnly"})
OBJECT_KEYWORDS = ANNOTATIONS | {"$schema", "type", "properties", "required",
                                 "additionalProperties"}
PROPERTY_KEYWORDS = ANNOTATIONS | {"type", "minLength", "maxLength", "minimum", "maximum"}


def _is_integer(value: Any) -> bool:
    # jsonschema's "integer": an int (not a bool), or a float with no fraction (1.0)
    kind = type(value)
    return kind is int or (kind is float and value.is_integer())


TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: type(v) is str,
    "integer": _is_integer,
    "number": lambda v: type(v) is int or type(v) is float,
    "boolean": lambda v: type(v) is bool,
    "null": lambda v: v is None,
    "object": lambda v: type(v) is dict,
    "array": lambda v: type(v) is list,
}


def _is_count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _is_bound(value: Any) -> bool:
    return type(value) is int or type(value) is float


def _property_check(schema: Any) -> Callable[[Any], bool] | None:
    """A check of one property's value, or None when the subschema is not a simple one."""
    if schema is True or schema == {}:
        return lambda v: True
    if not isinstance(schema, dict) or not schema.keys() <= PROPERTY_KEYWORDS:
        return None
    checks: list[Callable[[Any], bool]] = []
    kind = schema.get("type")
    if kind is not None:
        if isinstance(kind, str) and kind in TYPE_CHECKS:
            checks.append(TYPE_CHECKS[kind])
        else:
            return None  # lists of types and the rest: jsonschema
    for keyword, valid in (("minLength", _is_count), ("maxLength", _is_count),
                           ("minimum", _is_bound), ("maximum", _is_bound)):
        if keyword in schema and not valid(schema[keyword]):
            return None
    low, high = schema.get("minLength"), schema.get("maxLength")
    if low is not None or high is not None:
        low, high = low or 0, high if high is not None else float("inf")
        # len() counts code points, as jsonschema does; other types are not constrained
        checks.append(lambda v: type(v) is not str or low <= len(v) <= high)
    minimum, maximum = schema.get("minimum"), schema.get("maximum")
    if minimum is not None:
        checks.append(lambda v: not (type(v) is int or type(v) is float) or v >= minimum)
    if maximum is not None:
        checks.append(lambda v: not (type(v) is int or type(v) is float) or v <= maximum)
    if len(checks) == 1:
        return checks[0]
    return lambda v: all(check(v) for check in checks)


def fast_check(schema: Any) -> Callable[[dict], bool] | None:
    """For a flat object schema, a function of a document (a dict) that is True only if
    the document is valid; None for any other schema."""
    if not isinstance(schema, dict) or not schema.keys() <= OBJECT_KEYWORDS:
        return None
    if schema.get("type", "object") != "object":
        return None
    properties = schema.get("properties", {})
    required = schema.get("required", [])
    extra = schema.get("additionalProperties", True)
    if not isinstance(properties, dict) or not isinstance(required, list) \
            or not all(isinstance(name, str) for name in required) \
            or not isinstance(extra, bool):
        return None
    checks = {}
    for name, subschema in properties.items():
        property_check = _property_check(subschema)
        if property_check is None:
            return None
        checks[name] = property_check
    required = tuple(required)
    allowed = frozenset(properties)
    check_of = checks.get

    def check(document: dict) -> bool:
        # Over the document's keys, not the schema's properties: the time goes with the
        # document (which the request bounds), not with a schema of thousands of them.
        for name in required:
            if name not in document:
                return False
        if not extra and not document.keys() <= allowed:
            return False
        for name, value in document.items():
            valid = check_of(name)
            if valid is not None and not valid(value):
                return False
        return True

    return check
