"""What a node type's schema would cost, measured when it is saved, before anything compiles
or validates with it.

Validating a document applies every subschema reachable from the root to the parts of the
document it covers, with each `$ref` replaced by what it points to. A schema that refers to
one subschema from two places, nested a few levels, is small as text and exponential once
expanded (`{"anyOf": [{"$ref": "#/$defs/b"}, {"$ref": "#/$defs/b"}]}` with `b` the same again,
twenty deep, is a million subschemas). So the size that is bounded is the expanded one: every
subschema counted each time a reference reaches it; a reference back into its own expansion
(a recursive schema: a tree, a linked list) is counted once, since it only repeats as deep as
the document nests. Patterns (compiled into RE2 programs and cached) and `enum`/`const`
values (compared with every document) are bounded by number and size."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import orjson

# Values of these keywords are data, not subschemas: "$ref" or "pattern" in them mean nothing.
DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})
VALUE_KEYWORDS = ("enum", "const")  # data compared with documents: bounded in size
MAX_PATTERN_LENGTH = 1_000


@dataclass(frozen=True)
class SchemaLimits:
    max_bytes: int           # the schema as JSON text
    max_subschemas: int      # reachable, with references expanded
    max_patterns: int        # distinct `pattern` values and `patternProperties` keys
    max_pattern_length: int  # characters of one pattern
    max_values_bytes: int    # `enum` and `const` values together, as JSON


class SchemaTooCostly(ValueError):
    """The message names the limit and its setting (when it has one)."""


@dataclass
class SchemaCost:
    bytes: int = 0
    subschemas: int = 0
    patterns: set = None  # type: ignore[assignment]
    values_bytes: int = 0

    def __post_init__(self):
        self.patterns = set()


def measure(schema: Any, resolve: Callable[[str, Any], Any], limits: SchemaLimits) -> SchemaCost:
    """Count what the schema costs, raising SchemaTooCostly as soon as a limit is passed
    (so measuring a hostile schema stops early too). `resolve(ref, base)` returns the
    subschema a reference points to (and the base its own references resolve against), or
    None when it cannot be resolved (check_schema refuses those)."""
    cost = SchemaCost()
    text = orjson.dumps(schema)
    cost.bytes = len(text)
    if cost.bytes > limits.max_bytes:
        raise SchemaTooCostly(f"is {cost.bytes} bytes as JSON; a schema may have at most "
                              f"{limits.max_bytes} (FLEXDB_MAX_SCHEMA_BYTES)")
    _count_values_and_patterns(schema, cost, limits)
    _count_expanded(schema, resolve, cost, limits)
    return cost


def _count_values_and_patterns(schema: Any, cost: SchemaCost, limits: SchemaLimits) -> None:
    stack = [schema]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
            continue
        if not isinstance(item, dict):
            continue
        for key, value in item.items():
            if key in VALUE_KEYWORDS:
                cost.values_bytes += len(orjson.dumps(value))
                if cost.values_bytes > limits.max_values_bytes:
                    raise SchemaTooCostly(
                        f"has {cost.values_bytes}+ bytes of enum/const values; a schema may "
                        f"have at most {limits.max_values_bytes} (FLEXDB_MAX_SCHEMA_VALUES_BYTES)")
            if key in DATA_KEYWORDS:
                continue
            if key == "pattern" and isinstance(value, str):
                _add_pattern(value, cost, limits)
            elif key == "patternProperties" and isinstance(value, dict):
                for pattern in value:
                    _add_pattern(pattern, cost, limits)
            stack.append(value)


def _add_pattern(pattern: str, cost: SchemaCost, limits: SchemaLimits) -> None:
    if len(pattern) > limits.max_pattern_length:
        raise SchemaTooCostly(f"has a pattern of {len(pattern)} characters; a pattern may "
                              f"have at most {limits.max_pattern_length}")
    cost.patterns.add(pattern)
    if len(cost.patterns) > limits.max_patterns:
        raise SchemaTooCostly(f"has more than {limits.max_patterns} distinct patterns "
                              "(FLEXDB_MAX_SCHEMA_PATTERNS)")


def _count_expanded(schema: Any, resolve: Callable[[str, Any], Any], cost: SchemaCost,
                    limits: SchemaLimits) -> None:
    """Depth-first over subschemas, entering each reference's target: a target already being
    expanded on the current path (recursion) counts once; the same target reached again by
    another path is counted again, since validation applies it again."""
    on_path: set[int] = set()
    # (node, base, leaving): `leaving` marks the end of a reference target's expansion
    stack: list[tuple[Any, Any, bool]] = [(schema, None, False)]
    while stack:
        node, base, leaving = stack.pop()
        if leaving:
            on_path.discard(id(node))
            continue
        if isinstance(node, list):
            stack.extend((item, base, False) for item in node)
            continue
        if not isinstance(node, dict):
            if isinstance(node, bool):
                _one_more(cost, limits)
            continue
        _one_more(cost, limits)
        for key, value in node.items():
            if key in DATA_KEYWORDS:
                continue
            if key in ("$ref", "$dynamicRef") and isinstance(value, str):
                found = resolve(value, base)
                if found is None:
                    continue
                target, target_base = found
                if id(target) in on_path:
                    _one_more(cost, limits)  # recursion: repeats only as deep as the data
                    continue
                on_path.add(id(target))
                stack.append((target, None, True))
                stack.append((target, target_base, False))
            elif isinstance(value, (dict, list)):
                stack.append((value, base, False))


def _one_more(cost: SchemaCost, limits: SchemaLimits) -> None:
    cost.subschemas += 1
    if cost.subschemas > limits.max_subschemas:
        raise SchemaTooCostly(
            f"expands to more than {limits.max_subschemas} subschemas once its $refs are "
            "followed (each reference counts what it points to again); a schema may have at "
            f"most {limits.max_subschemas} (FLEXDB_MAX_SCHEMA_SUBSCHEMAS): refer to shared "
            "parts from fewer places, or nest alternatives less deeply")
