"""query_nodes' filter language, compiled to parameterised SQL over the nodes table.

    filter := {"and": [filter, ...]} | {"or": [filter, ...]} | {"not": filter}
            | {"field": FIELD, "op": OP, "value": VALUE}
    FIELD  := "data.a.b" (a path into data; a list ["data", "a", "b.c"] for keys with dots)
            | "data" (the whole document) | "id" | "node_type_id" | "created_at"
            | "updated_at" | "version" | "schema_version"
    OP     := eq | ne | lt | lte | gt | gte | in | contains | exists | prefix
            | search (data paths: full-text, web search syntax; see storage/node_search.py)

Every leaf compiles to an expression that is true or false, never NULL, so `not` is an
exact complement (a missing path is simply "not equal", "not less than", ...). Values only
ever travel as parameters. `schema_version` (the schema version a node was last validated
against) also compares with "current", its node type's schema version now: `{"field":
"schema_version", "op": "lt", "value": "current"}` finds the nodes not valid under the
current schema as far as is known. Equality, `in` and `contains` on data add a containment test
(`data @> ...`) that the GIN index on data (jsonb_path_ops) answers."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

import orjson

from rpc_server.errors import InvalidParams
from rpc_server.storage.node_search import SearchSql

MAX_DEPTH = 8
MAX_CLAUSES = 50
MAX_IN_VALUES = 100
MAX_PATH_SEGMENTS = 16
MAX_SEGMENT_LENGTH = 256
MAX_VALUE_BYTES = 16_384
# All values of one filter together (what PostgreSQL compares, and the containment keys the
# GIN index is asked for, grow with it).
MAX_FILTER_BYTES = 32_768
# What PostgreSQL's #> takes as an array index: the containment shortcut must not be used.
ARRAY_INDEX = re.compile(r"^\s*[+-]?\d+\s*$")
COMPARISONS = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
DATA_OPS = {"eq", "ne", "in", "contains", "exists", "prefix", "search", *COMPARISONS}
COLUMN_OPS = {"eq", "ne", "in", *COMPARISONS}
COLUMNS = {"id": "uuid", "node_type_id": "uuid", "created_at": "timestamptz",
           "updated_at": "timestamptz", "version": "int4", "schema_version": "int4"}
# The node type's schema version now, for a row of nodes (the value "current").
CURRENT_SCHEMA_VERSION = ("(SELECT t.schema_version FROM node_types t "
                          "WHERE t.tenant_id = nodes.tenant_id AND t.id = nodes.node_type_id)")


def _fail(where: str, message: str) -> InvalidParams:
    return InvalidParams.field(where, message)


@dataclass
class SqlArgs:
    """Positional parameters of one statement: add() returns the placeholder."""
    values: list = field(default_factory=list)

    def add(self, value: Any, cast: str) -> str:
        self.values.append(value)
        return f"${len(self.values)}::{cast}"

    def add_json(self, text: str | list[str]) -> str:
        """JSON sent as text: asyncpg would send a Python None as SQL NULL, not JSON null."""
        if isinstance(text, list):
            return f"{self.add(text, 'text[]')}::jsonb[]"
        return f"{self.add(text, 'text')}::jsonb"


def parse_field(raw: Any, where: str) -> tuple[str, list[str] | None]:
    """("data", path) for data paths (path [] = the whole document), (column, None) else."""
    if isinstance(raw, str):
        parts = raw.split(".")
    elif isinstance(raw, list) and raw and all(isinstance(p, str) for p in raw):
        parts = list(raw)
    else:
        raise _fail(where, "must be a field name like \"data.address.city\" or a list of keys")
    if parts[0] == "data":
        path = parts[1:]
        if len(path) > MAX_PATH_SEGMENTS:
            raise _fail(where, f"paths have at most {MAX_PATH_SEGMENTS} keys")
        for segment in path:
            if not segment or len(segment) > MAX_SEGMENT_LENGTH or "\x00" in segment:
                raise _fail(where, f"path keys must be 1-{MAX_SEGMENT_LENGTH} characters "
                                   "(use the list form for keys containing dots)")
        return "data", path
    if len(parts) == 1 and parts[0] in COLUMNS:
        return parts[0], None
    raise _fail(where, "must be data.<path> or one of " + ", ".join(COLUMNS))


def containment(path: list[str], value: Any) -> dict | list | Any:
    """The document `data @> doc` tests for: value nested under the path's keys."""
    for key in reversed(path):
        value = {key: value}
    return value


def _indexable(path: list[str]) -> bool:
    # Containment documents can only express object keys; a digit key may be an array index.
    return not any(ARRAY_INDEX.match(p) for p in path)


def _json(value: Any, where: str) -> str:
    """The value as JSON text, once checked."""
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        raise _fail(where, "must be a JSON value") from None
    if len(text) > MAX_VALUE_BYTES:
        raise _fail(where, f"is larger than {MAX_VALUE_BYTES} bytes")
    if "\\u0000" in text:
        raise _fail(where, "must not contain the character U+0000")
    return text


def _column_value(column: str, value: Any, where: str) -> Any:
    kind = COLUMNS[column]
    try:
        if kind == "uuid" and isinstance(value, str):
            return UUID(value)
        if kind == "timestamptz" and isinstance(value, str):
            parsed = datetime.fromisoformat(value)
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=timezone.utc)
            return parsed.astimezone(timezone.utc)
        if kind == "int4" and isinstance(value, int) and not isinstance(value, bool) \
                and -2**31 <= value < 2**31:
            return value
    except (ValueError, OverflowError):
        pass
    expected = {"uuid": "a UUID string", "timestamptz": "an ISO 8601 timestamp string",
                "int4": "a 32-bit integer"}[kind]
    if column == "schema_version":
        expected += " or \"current\""
    raise _fail(where, f"must be {expected} for {column}")


class FilterCompiler:
    def __init__(self, args: SqlArgs, search: SearchSql | None = None):
        self.args = args
        self.search = search if search is not None else SearchSql(None, args)
        self.clauses = 0
        self.bytes = 0

    def _json(self, value: Any, where: str) -> str:
        """The value as JSON text, once checked, counted against the filter's size."""
        text = _json(value, where)
        self.bytes += len(text)
        if self.bytes > MAX_FILTER_BYTES:
            raise _fail(where, f"makes the filter's values larger than {MAX_FILTER_BYTES} "
                               "bytes in all")
        return text

    def compile(self, node: Any, where: str = "filter", depth: int = 1) -> str:
        if depth > MAX_DEPTH:
            raise _fail(where, f"filters nest at most {MAX_DEPTH} levels deep")
        if not isinstance(node, dict):
            raise _fail(where, "must be an object: {\"field\", \"op\", \"value\"} or "
                               "{\"and\"|\"or\": [...]} or {\"not\": {...}}")
        combinators = {"and", "or", "not"} & node.keys()
        if combinators:
            if len(node) != 1:
                raise _fail(where, "a combinator object has exactly one key")
            (name, operand), = node.items()
            if name == "not":
                return f"NOT ({self.compile(operand, f'{where}.not', depth + 1)})"
            if not isinstance(operand, list) or not operand:
                raise _fail(f"{where}.{name}", "must be a non-empty list of filters")
            parts = [self.compile(item, f"{where}.{name}.{i}", depth + 1)
                     for i, item in enumerate(operand)]
            return "(" + f" {name.upper()} ".join(f"({p})" for p in parts) + ")"
        return self._leaf(node, where)

    def _leaf(self, node: dict, where: str) -> str:
        unknown = set(node) - {"field", "op", "value"}
        if unknown:
            raise _fail(where, "unknown key(s): " + ", ".join(sorted(unknown)))
        self.clauses += 1
        if self.clauses > MAX_CLAUSES:
            raise _fail(where, f"a filter has at most {MAX_CLAUSES} conditions")
        if "field" not in node or "op" not in node:
            raise _fail(where, "a condition needs \"field\" and \"op\"")
        name, path = parse_field(node["field"], f"{where}.field")
        op = node["op"]
        allowed = DATA_OPS if path is not None else COLUMN_OPS
        if not isinstance(op, str) or op not in allowed:
            raise _fail(f"{where}.op", f"must be one of {', '.join(sorted(allowed))} for "
                                       f"{'data paths' if path is not None else name}")
        if op != "exists" and "value" not in node:
            raise _fail(f"{where}.value", f"is required for {op}")
        value = node.get("value", True)
        if path is not None:
            return self._data_leaf(path, op, value, f"{where}.value")
        return self._column_leaf(name, op, value, f"{where}.value")

    def _data_leaf(self, path: list[str], op: str, value: Any, where: str) -> str:
        if op == "search":
            self._json(value, where)  # counted against the filter's size
            return self.search.condition(path, value, where)
        index = _indexable(path)
        if op == "contains" and index:  # the containment document alone says it
            wanted = value if isinstance(value, (dict, list)) else [value]
            return f"data @> {self.args.add_json(self._json(containment(path, wanted), where))}"
        # Every placeholder must appear in the SQL, so the path is added only from here on.
        target = f"(data #> {self.args.add(path, 'text[]')})" if path else "data"
        # Equality and `in` put the containment test outside COALESCE, where the planner can
        # answer it from the GIN index (data is NOT NULL, so it is never NULL itself).
        if op == "eq":
            exact = f"COALESCE({target} = {self.args.add_json(self._json(value, where))}, false)"
            if index:
                doc = self.args.add_json(self._json(containment(path, value), where))
                return f"data @> {doc} AND {exact}"
            return exact
        if op == "ne":
            return f"{target} IS DISTINCT FROM {self.args.add_json(self._json(value, where))}"
        if op == "in":
            if not isinstance(value, list) or not 1 <= len(value) <= MAX_IN_VALUES:
                raise _fail(where, f"must be a list of 1-{MAX_IN_VALUES} values")
            options = [self._json(v, f"{where}.{i}") for i, v in enumerate(value)]
            exact = f"COALESCE({target} = ANY({self.args.add_json(options)}), false)"
            if index:
                docs = [self._json(containment(path, v), where) for v in value]
                return f"data @> ANY({self.args.add_json(docs)}) AND {exact}"
            return exact
        if op == "contains":
            wanted = value if isinstance(value, (dict, list)) else [value]
            return f"COALESCE({target} @> {self.args.add_json(self._json(wanted, where))}, false)"
        if op == "exists":
            if not isinstance(value, bool):
                raise _fail(where, "must be true or false")
            return f"{target} IS {'NOT ' if value else ''}NULL"
        if op == "prefix":
            if not isinstance(value, str):
                raise _fail(where, "must be a string")
            self._json(value, where)
            return (f"COALESCE(jsonb_typeof({target}) = 'string' AND "
                    f"starts_with({target} #>> '{{}}', {self.args.add(value, 'text')}), false)")
        # lt, lte, gt, gte: numbers with numbers, strings with strings.
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise _fail(where, f"{op} compares numbers or strings")
        kind = "string" if isinstance(value, str) else "number"
        return (f"COALESCE(jsonb_typeof({target}) = '{kind}' AND "
                f"{target} {COMPARISONS[op]} {self.args.add_json(self._json(value, where))}, "
                "false)")

    def _column_leaf(self, column: str, op: str, value: Any, where: str) -> str:
        cast = COLUMNS[column]
        if op == "in":
            if not isinstance(value, list) or not 1 <= len(value) <= MAX_IN_VALUES:
                raise _fail(where, f"must be a list of 1-{MAX_IN_VALUES} values")
            values = [_column_value(column, v, f"{where}.{i}") for i, v in enumerate(value)]
            return f"{column} = ANY({self.args.add(values, cast + '[]')})"
        operator = {"eq": "=", "ne": "<>", **COMPARISONS}[op]
        if column == "schema_version" and value == "current":
            return f"{column} {operator} {CURRENT_SCHEMA_VERSION}"
        placeholder = self.args.add(_column_value(column, value, where), cast)
        return f"{column} {operator} {placeholder}"  # columns are NOT NULL: never NULL


def compile_filter(node: Any, args: SqlArgs, search: SearchSql | None = None) -> str:
    """SQL for the filter (TRUE for none); values are appended to `args`. `search`: how
    `search` conditions are matched (the node types in scope by language)."""
    if node is None:
        return "TRUE"
    return FilterCompiler(args, search).compile(node)


@dataclass(frozen=True)
class NodeSort:
    """One sort key (a timestamp column, a data path, or the search rank, best first) plus
    id as the tie-breaker."""
    column: str | None = "created_at"
    path: list[str] | None = None
    descending: bool = False
    rank: bool = False

    @property
    def scope(self) -> str:
        """Page tokens are only valid for the sort they were made for."""
        if self.rank:
            return "query_nodes:rank:desc"
        key = self.column or hashlib.sha256(orjson.dumps(self.path)).hexdigest()[:24]
        return f"query_nodes:{key}:{'desc' if self.descending else 'asc'}"


def parse_sort(raw: Any) -> NodeSort:
    """{"field": "created_at" | "updated_at" | "data.<path>", "direction": "asc" | "desc"},
    or {"by": "rank"} (best match first: the filter must have a `search` condition)."""
    if raw is None:
        return NodeSort()
    if isinstance(raw, dict) and "by" in raw:
        if raw != {"by": "rank"}:
            raise _fail("sort", "must be {\"by\": \"rank\"} (or {\"field\": ..., "
                                "\"direction\": ...})")
        return NodeSort(column=None, descending=True, rank=True)
    if not isinstance(raw, dict) or "field" not in raw or set(raw) - {"field", "direction"}:
        raise _fail("sort", "must be {\"field\": ..., \"direction\": \"asc\"|\"desc\"}"
                            " or {\"by\": \"rank\"}")
    direction = raw.get("direction", "asc")
    if direction not in ("asc", "desc"):
        raise _fail("sort.direction", "must be \"asc\" or \"desc\"")
    name, path = parse_field(raw["field"], "sort.field")
    if path is None and name not in ("created_at", "updated_at"):
        raise _fail("sort.field", "must be created_at, updated_at or data.<path>")
    if path == []:
        raise _fail("sort.field", "sort by a path inside data, not the whole document")
    return NodeSort(None if path is not None else name, path, direction == "desc")
