"""Differential checks of the two fast paths against the slow code they stand in for.

- `json_text_depth_exceeds` (nesting read off JSON text) against `json_depth_exceeds` (a walk
  of the parsed value).
- `stored_size_over` (how large JSON text is as PostgreSQL returns it: a space after each
  comma and colon, numbers in plain notation) against a walk of the parsed value counting
  the separators and writing each float in plain notation.
- `fast_check` (the flat-schema validator) against jsonschema's own Draft 2020-12 answer.

Unit-level on purpose: each compares two implementations on random inputs from a seeded
`random.Random`, tricky cases weighted in. The default count keeps each check to a few
seconds; FLEXDB_DIFFERENTIAL_CASES raises it (docs/PERFORMANCE.md cites 120,000) and
FLEXDB_DIFFERENTIAL_SEED picks other inputs. A failure names the seed and case to replay."""
from __future__ import annotations

import json
import os
import random
from decimal import Decimal
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from rpc_server.transport.json_codec import INT64_MAX, INT64_MIN, json_depth_exceeds, loads
from rpc_server.transport.json_text import json_text_depth_exceeds, stored_size_over
from rpc_server.validation.schema_fast_path import fast_check

CASES = int(os.environ.get("FLEXDB_DIFFERENTIAL_CASES", "3000"))
SEED = int(os.environ.get("FLEXDB_DIFFERENTIAL_SEED", "20"))

# Strings that break a naive reading of JSON text: quotes and backslashes (escaped in the
# text), brackets inside strings, unicode outside the BMP, separators JSON allows raw.
TRICKY_STRINGS = ['"', "\\", '\\"', '"\\', "\\\\", '\\\\"', "[", "]", "{", "}", '"]}',
                  '{"a": [', "]]]]", "\\u005b", "é", "名前", "😀", "😀😀", "\u2028",
                  "\n\t\x01", "", " ", "a" * 40]
NUMBERS = [0, 1, -1, INT64_MAX, INT64_MIN, INT64_MAX - 1, INT64_MIN + 1, 2**53, 2**53 + 1,
           1.0, -0.0, 0.5, 1.5, 1e308, -1e308, 5e-324, 1.7976931348623157e308,
           float(INT64_MAX), float(INT64_MIN)]
SCALARS = [*TRICKY_STRINGS, *NUMBERS, True, False, None]


def replay(seed: int, case: int) -> str:
    return f"FLEXDB_DIFFERENTIAL_SEED={seed}, case {case}"


# --- JSON nesting depth read from text ----------------------------------------------------

def random_value(rng: random.Random, depth: int) -> Any:
    """A JSON value nested at most `depth` containers deep."""
    if depth == 0 or rng.random() < 0.25:
        return rng.choice(SCALARS)
    size = rng.choice([0, 1, 1, 2, 3])
    if rng.random() < 0.5:
        return [random_value(rng, depth - 1) for _ in range(size)]
    return {rng.choice(TRICKY_STRINGS) + str(i): random_value(rng, depth - 1)
            for i in range(size)}


def deep_chain(rng: random.Random, depth: int) -> Any:
    """One path `depth` containers deep (the shape a depth attack sends)."""
    value: Any = rng.choice(SCALARS)
    for _ in range(depth):
        value = [value] if rng.random() < 0.5 else {rng.choice(TRICKY_STRINGS): value}
    return value


def as_text(rng: random.Random, value: Any) -> bytes:
    """Valid JSON text of the value in one of the spellings a client may send."""
    style = rng.randrange(4)
    if style == 0:
        return orjson.dumps(value)  # what the server itself checks (api/params.py)
    if style == 1:
        return json.dumps(value, ensure_ascii=True).encode()
    if style == 2:
        return json.dumps(value, ensure_ascii=False, indent=rng.choice([1, "\t"])).encode()
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def text_with_duplicate_keys(rng: random.Random, value: Any) -> bytes:
    """JSON text of the value in which objects may repeat a key, a decoy first: the parsed
    value keeps the last copy (the real one), so the text may be deeper than the value."""
    if isinstance(value, list):
        return b"[" + b",".join(text_with_duplicate_keys(rng, v) for v in value) + b"]"
    if not isinstance(value, dict):
        return json.dumps(value).encode()
    members = []
    for key, item in value.items():
        name = json.dumps(key).encode()
        if rng.random() < 0.5:
            decoy = deep_chain(rng, rng.randrange(0, 8))
            members.append(name + b":" + json.dumps(decoy).encode())
        members.append(name + b":" + text_with_duplicate_keys(rng, item))
    return b"{" + b",".join(members) + b"}"


def depth_of(value: Any) -> int:
    """Container levels ({} and [] are one), by a plain recursive walk."""
    if isinstance(value, dict):
        return 1 + max(map(depth_of, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth_of, value), default=0)
    return 0


def limits_around(rng: random.Random, depth: int) -> list[int]:
    # Both sides of the edge, and one anywhere.
    return sorted({max(depth - 1, 0), depth, depth + 1, rng.randrange(0, depth + 3)})


def random_document(rng: random.Random) -> Any:
    if rng.random() < 0.1:
        return deep_chain(rng, rng.randrange(20, 200))
    return random_value(rng, rng.randrange(0, 12))


def test_text_depth_matches_walk_of_parsed_value():
    rng = random.Random(SEED)
    deepest = 0
    for case in range(CASES):
        value = random_document(rng)
        text = as_text(rng, value)
        parsed = loads(text)
        depth = depth_of(parsed)
        deepest = max(deepest, depth)
        for limit in limits_around(rng, depth):
            walk = json_depth_exceeds(parsed, limit)
            assert walk == (depth > limit)
            assert json_text_depth_exceeds(text, limit) == walk, (replay(SEED, case), text, limit)
    assert deepest >= 100  # the deep chains were generated


def test_text_depth_with_duplicate_keys_never_says_shallower_than_walk():
    """The documented leeway: with duplicate keys the text may read deeper than the parsed
    value (a walk then decides), never shallower (which would let a deep document in)."""
    rng = random.Random(SEED + 1)
    deeper_than_value = 0
    for case in range(CASES):
        text = text_with_duplicate_keys(rng, random_document(rng))
        parsed = loads(text)
        depth = depth_of(parsed)
        for limit in limits_around(rng, depth):
            walk = json_depth_exceeds(parsed, limit)
            from_text = json_text_depth_exceeds(text, limit)
            assert from_text or not walk, (replay(SEED + 1, case), text, limit)
            deeper_than_value += from_text and not walk
    assert deeper_than_value > 0  # the decoys did make texts deeper than their values


# --- Numbers as PostgreSQL writes them back ------------------------------------------------

# Floats orjson writes with an exponent (and some it does not), of every size and sign.
EXPONENT_FLOATS = [1e-300, -1e-300, 5e-324, 1.5e-7, -2.5e-10, 1e-5, 1e-4, 1e16, 1e22, 1e300,
                   1.2345678901234568e20, 123456789012345680000.0, 0.1, 3.25e-5]


def grown_by_walk(value: Any) -> int:
    """Each float's plain notation (jsonb keeps it as a numeric) less its length as orjson
    writes it: summed by walking the parsed value."""
    if isinstance(value, dict):
        return sum(map(grown_by_walk, value.values()))
    if isinstance(value, list):
        return sum(map(grown_by_walk, value))
    if type(value) is float:
        written = orjson.dumps(value).decode()
        return max(len(format(Decimal(written), "f")) - len(written), 0)
    return 0


def separators_by_walk(value: Any) -> int:
    """The commas and colons between the parsed value's members (PostgreSQL writes a space
    after each)."""
    if isinstance(value, dict):
        return max(2 * len(value) - 1, 0) + sum(map(separators_by_walk, value.values()))
    if isinstance(value, list):
        return max(len(value) - 1, 0) + sum(map(separators_by_walk, value))
    return 0


def test_size_as_stored_matches_walk_of_parsed_value():
    rng = random.Random(SEED + 2)
    grown = 0
    for case in range(CASES):
        value = random_document(rng)
        if rng.random() < 0.5:  # floats with exponents, and strings that look like them
            value = [value, rng.choice(EXPONENT_FLOATS),
                     {rng.choice(TRICKY_STRINGS) + "1e300": [rng.choice(EXPONENT_FLOATS)],
                      "k": "5e-7 \\\"1e300\\\" 3fa85e64, {\\\"a\\\": 1}"}]
        text = orjson.dumps(value)
        parsed = loads(text)
        expected = len(text) + grown_by_walk(parsed) + separators_by_walk(parsed)
        assert separators_by_walk(parsed) <= len(text) // 2  # (its quick bound)
        assert stored_size_over(text, 0) == expected, (replay(SEED + 2, case), text)
        # within the limit: 0, however close (the quick count takes in strings' commas)
        assert stored_size_over(text, expected) == 0, (replay(SEED + 2, case), text)
        assert stored_size_over(text, expected - 1) == expected, (replay(SEED + 2, case), text)
        grown += grown_by_walk(parsed) > 0
    assert grown > CASES // 4  # the floats with exponents were generated


# --- The flat-schema validator --------------------------------------------------------------

PROPERTY_NAMES = ["name", "age", "名前", "😀", "", "a b", "$ref", "type"]
TYPES = ["string", "integer", "number", "boolean", "null", "object", "array"]
# Property values at the edges of the bounds and lengths below (non-BMP characters count
# one each, as code points).
VALUES = [*SCALARS, "ab", "abc", "😀😀😀", "a😀", "ééé", 2, 3, 2.0, 3.0, 2.5, -3, [], {},
          ["a"], {"a": 1}]
DIALECTS = ["https://json-schema.org/draft/2020-12/schema",
            "http://json-schema.org/draft-07/schema#",
            "http://json-schema.org/draft-04/schema#"]


def random_bound(rng: random.Random) -> Any:
    return rng.choice([0, 2, 3, -3, 2.5, 1.0, INT64_MAX, INT64_MIN, float(INT64_MAX), 1e308])


def random_property_schema(rng: random.Random) -> Any:
    roll = rng.random()
    if roll < 0.05:
        return True
    if roll < 0.1:
        return {}
    schema: dict[str, Any] = {}
    if rng.random() < 0.85:
        schema["type"] = rng.choice(TYPES) if rng.random() < 0.95 else ["string", "null"]
    for keyword in ("minLength", "maxLength"):
        if rng.random() < 0.25:
            schema[keyword] = rng.choice([0, 1, 2, 3, 3.0])
    for keyword in ("minimum", "maximum"):
        if rng.random() < 0.25:
            schema[keyword] = random_bound(rng)
    if rng.random() < 0.1:
        schema["title"] = "a title"
    if rng.random() < 0.05:  # a nested $schema switches the draft (integer: 1.0 in 04?)
        schema["$schema"] = rng.choice(DIALECTS)
    if rng.random() < 0.05:  # keywords the fast path leaves to jsonschema
        schema.update(rng.choice([{"pattern": "^a"}, {"enum": [1, "a"]},
                                  {"exclusiveMinimum": 2}, {"multipleOf": 2}]))
    return schema


def random_schema(rng: random.Random) -> Any:
    names = rng.sample(PROPERTY_NAMES, rng.randrange(0, 5))
    schema: dict[str, Any] = {"properties": {name: random_property_schema(rng)
                                             for name in names}}
    if rng.random() < 0.9:
        schema["type"] = "object" if rng.random() < 0.95 else rng.choice(TYPES)
    if rng.random() < 0.2:
        schema["$schema"] = DIALECTS[0]
    if rng.random() < 0.6:
        # mostly declared properties, sometimes one that is not
        candidates = names + ["undeclared"]
        schema["required"] = rng.sample(candidates, rng.randrange(0, len(candidates) + 1))
    if rng.random() < 0.4:
        schema["additionalProperties"] = rng.choice([False, False, True, {}])
    if rng.random() < 0.03:
        schema["minProperties"] = 1
    return schema


def edge_values(subschema: Any) -> list[Any]:
    """Values on and next to the subschema's own bounds: numbers as int and float, strings
    of the bound's length in characters outside the BMP (one code point, two UTF-16 units)."""
    if not isinstance(subschema, dict):
        return []
    values: list[Any] = []
    for keyword in ("minimum", "maximum"):
        bound = subschema.get(keyword)
        if type(bound) in (int, float) and abs(bound) < 1e300:
            values += [bound, bound - 1, bound + 1, float(bound), int(bound)]
    for keyword in ("minLength", "maxLength"):
        length = subschema.get(keyword)
        if type(length) is int:
            values += ["😀" * length, "😀" * (length + 1), "😀" * max(length - 1, 0)]
    return values


def random_instance(rng: random.Random, schema: dict) -> dict:
    """A document near the schema: its properties (some left out) with values of every
    type, often on its bounds' edges, sometimes an undeclared key."""
    document = {}
    for name, subschema in schema["properties"].items():
        if rng.random() < 0.85:
            edges = edge_values(subschema)
            document[name] = rng.choice(edges if edges and rng.random() < 0.5 else VALUES)
    if rng.random() < 0.2:
        document[rng.choice(["extra", "😀x", "undeclared"])] = rng.choice(VALUES)
    return document


def is_valid_schema(schema: Any) -> bool:
    """Whether the server takes it as a node type schema (others never reach validation)."""
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError:
        return False
    return True


def test_flat_schema_fast_path_agrees_with_jsonschema():
    """Where the fast path takes a schema, it answers as jsonschema does for every
    document: never valid where jsonschema finds errors (that would store invalid data),
    and not invalid where jsonschema finds none (that would only cost time)."""
    rng = random.Random(SEED + 2)
    taken = outcomes_valid = outcomes_invalid = 0
    documents_per_schema = 4
    for case in range(CASES // documents_per_schema):
        schema = random_schema(rng)
        if not is_valid_schema(schema):
            continue
        fast = fast_check(schema)
        if fast is None:
            continue
        taken += 1
        validator = Draft202012Validator(schema,
                                         format_checker=Draft202012Validator.FORMAT_CHECKER)
        for _ in range(documents_per_schema):
            document = random_instance(rng, schema)
            expected = validator.is_valid(document)
            assert fast(document) == expected, (replay(SEED + 2, case), schema, document)
            outcomes_valid += expected
            outcomes_invalid += not expected
    # Not vacuous: many schemas took the fast path and both answers were compared.
    assert taken >= CASES // documents_per_schema // 4
    assert min(outcomes_valid, outcomes_invalid) >= taken // 4


@pytest.mark.parametrize("schema", [
    {"type": "object", "properties": {"n": {"type": "string", "pattern": "^a"}}},
    {"type": "object", "properties": {"n": {"type": ["string", "null"]}}},
    {"type": "object", "properties": {"n": {"$schema": DIALECTS[2], "type": "integer"}}},
    {"type": "object", "properties": {"n": {"type": "string", "minLength": 1.0}}},
    {"type": "object", "additionalProperties": {"type": "string"}},
    {"type": "object", "minProperties": 1},
    {"type": "array"},
    True,
])
def test_fast_path_leaves_other_schemas_to_jsonschema(schema):
    """What the flat check does not model, it must not take (jsonschema answers)."""
    assert fast_check(schema) is None
