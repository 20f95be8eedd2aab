"""JSON Schema (Draft 2020-12) checks for node types and node data, with compiled
validators cached per node type version, under a memory budget.

A schema's cost is measured when it is saved (validation/schema_cost.py) and refused over the
limits. Validating one document has a bounded cost whatever the schema: every keyword jsonschema
applies is counted, and validation stops once it has used FLEXDB_VALIDATION_CPU_MS of CPU.
It never holds the event loop for long: a document is first checked on the loop with a
budget of a couple of milliseconds (enough for almost every document); one that needs more
is checked again in a thread, one at a time per tenant, with the full budget."""
from __future__ import annotations

import asyncio
import reprlib
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Protocol
from uuid import UUID

import orjson
from jsonschema import Draft202012Validator, ValidationError, validators
from jsonschema.exceptions import SchemaError
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from rpc_server.caching.ttl_cache import parsed_json_bytes
from rpc_server.errors import InvalidParams, QueryRejected
from rpc_server.validation import safe_regex
from rpc_server.validation.embeddings import embeddings_errors
from rpc_server.validation.schema_cost import (
    DATA_KEYWORDS,
    MAX_PATTERN_LENGTH,
    SchemaLimits,
    SchemaTooCostly,
    measure,
)
from rpc_server.validation.schema_fast_path import fast_check

MAX_REPORTED_ERRORS = 10  # per document
MAX_REPORTED_ERRORS_PER_CALL = 50
MAX_MESSAGE = 300  # jsonschema messages quote the whole offending value
# Instances tried once when a schema is saved, to catch references that loop on themselves.
PROBE_INSTANCES: tuple[object, ...] = (None, True, 0, "", [], {})
# CPU a document may use on the event loop before it is checked again in a thread.
INLINE_BUDGET_MS = 2.0
# Bytes a cached validator is counted as, per byte of its schema's JSON (the schema as
# Python objects, plus what jsonschema and referencing build from it); for a schema of many
# small values (examples: [{}, {}, ...]), what they take parsed, if more.
VALIDATOR_BYTES_PER_SCHEMA_BYTE = 12
VALIDATION_THREADS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="flexdb-validate")
# Schemas checked when saved (each up to FLEXDB_VALIDATION_CPU_MS) have a thread of their own:
# on the two above, two tenants' costly schemas made every write that needed a thread wait.
SCHEMA_CHECK_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flexdb-schema")

safe_regex.install()


class OutOfBudget(Exception):
    """Validation used up its CPU budget."""


_budget = threading.local()  # .deadline (thread CPU seconds) or None, .steps


@contextmanager
def cpu_budget(ms: float) -> Iterator[None]:
    """Validation in this block stops (OutOfBudget) once it has used `ms` of this thread's
    CPU."""
    _budget.deadline, _budget.steps = time.thread_time() + ms / 1000, 0
    try:
        yield
    finally:
        _budget.deadline = None


def _metered(keyword):
    """Every keyword application is counted; every 32nd looks at the clock."""
    def apply(validator, value, instance, schema):
        deadline = getattr(_budget, "deadline", None)
        if deadline is not None:
            _budget.steps += 1
            if not _budget.steps & 31 and time.thread_time() > deadline:
                raise OutOfBudget()
        return keyword(validator, value, instance, schema)
    return apply


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


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlist = _SHORT.maxdict = 4


def _any_of(validator, any_of, instance, schema):
    """anyOf that stops at the first branch the instance is valid under, and keeps none of
    the failing branches' errors (jsonschema keeps them all as the error's context: they
    grow with alternatives × document, and nested alternatives multiply them)."""
    for subschema in any_of:
        if validator.evolve(schema=subschema).is_valid(instance):
            return
    yield ValidationError(f"{_SHORT.repr(instance)} is not valid under any of the given "
                          "schemas")


def _one_of(validator, one_of, instance, schema):
    """oneOf, keeping no branch's errors (as _any_of), stopping at a second valid branch."""
    valid = 0
    for subschema in one_of:
        if validator.evolve(schema=subschema).is_valid(instance):
            valid += 1
            if valid > 1:
                yield ValidationError(f"{_SHORT.repr(instance)} is valid under more than "
                                      "one of the given schemas")
                return
    if not valid:
        yield ValidationError(f"{_SHORT.repr(instance)} is not valid under any of the given "
                              "schemas")


NodeDataValidator = validators.extend(Draft202012Validator, {
    keyword: _metered(function) for keyword, function in
    {**Draft202012Validator.VALIDATORS, "uniqueItems": _unique_items, "anyOf": _any_of,
     "oneOf": _one_of}.items()})


SCHEMA_URI = "urn:flexdb:node-type-schema"
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _resolver(schema: dict):
    return Registry().with_resource(
        SCHEMA_URI, DRAFT202012.create_resource(schema)).resolver(base_uri=SCHEMA_URI)


def check_schema(schema: dict | bool | None, limits: SchemaLimits, probe_budget_ms: float,
                 field: str = "schema") -> None:
    """Refuse a schema that is not valid Draft 2020-12, whose $refs cannot be resolved (only
    references inside the schema itself are: nothing is ever fetched), or that costs more
    than the limits. CPU-heavy: run it off the event loop (ValidatorCache.check_schema)."""
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
        raise InvalidParams.field(
            field, f"is not a valid JSON Schema{where}: {exc.message}") from None
    except RecursionError:  # the meta-schema's check recurses ~8 frames per level
        raise InvalidParams.field(field, "is nested too deeply to be checked as a JSON "
                                  "Schema") from None
    root = _resolver(schema)
    refs, patterns = _references_and_patterns(schema)
    for ref in refs:
        try:
            root.lookup(ref)
        except Unresolvable:
            raise InvalidParams.field(field, f"$ref {ref!r} cannot be resolved: only references "
                                      "to parts of the same schema are supported") from None

    def resolve(ref: str, base):
        try:
            found = (base or root).lookup(ref)
        except Unresolvable:
            return None
        return found.contents, found.resolver

    try:
        measure(schema, resolve, limits)
    except SchemaTooCostly as exc:
        raise InvalidParams.field(field, str(exc)) from None
    for pattern in patterns:
        reason = safe_regex.unsupported_reason(pattern)
        if reason:
            raise InvalidParams.field(field, f"pattern {pattern!r} is not supported ({reason}); "
                                      "patterns use RE2 syntax: no backreferences or lookaround")
    validator = NodeDataValidator(schema)
    for probe in PROBE_INSTANCES:
        try:
            with cpu_budget(probe_budget_ms):
                for _ in validator.iter_errors(probe):
                    pass
        except RecursionError:
            raise InvalidParams.field(field, "the schema refers to itself without end "
                                      "(a $ref loop)") from None
        except OutOfBudget:
            probe_text = orjson.dumps(probe).decode()
            raise InvalidParams.field(field, f"checking even the document {probe_text} "
                                      f"against it takes more than {probe_budget_ms:g} ms of "
                                      "CPU (FLEXDB_VALIDATION_CPU_MS)") from None


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


@dataclass(frozen=True)
class ValidationLimits:
    schema: SchemaLimits
    cpu_ms: float           # CPU one call's documents may use to be validated
    cache_bytes: int        # compiled validators kept, by estimated size


def validation_limits(settings) -> ValidationLimits:
    return ValidationLimits(
        SchemaLimits(max_bytes=settings.max_schema_bytes,
                     max_subschemas=settings.max_schema_subschemas,
                     max_patterns=settings.max_schema_patterns,
                     max_pattern_length=MAX_PATTERN_LENGTH,
                     max_values_bytes=settings.max_schema_values_bytes),
        cpu_ms=settings.validation_cpu_ms, cache_bytes=settings.validator_cache_bytes)


class TenantSlots(Protocol):
    def slot(self, tenant_id: UUID) -> AbstractAsyncContextManager[None]: ...


class ValidatorCache:
    """Compiled validators keyed by (tenant, node type, version), least recently used out
    first once their estimated size passes the budget: a schema change bumps the version, so
    stale validators are never used and need no invalidation."""

    def __init__(self, limits: ValidationLimits, threads: TenantSlots):
        """threads: a tenant's costly checks run one at a time, so another tenant always
        finds a thread (a security.tenant_limits.TenantLimiter of 1 per tenant)."""
        self.limits = limits
        # (tenant, node type, version) -> (compiled validator, fast yes or None, bytes)
        self._items: OrderedDict[tuple, tuple] = OrderedDict()
        self._bytes = 0
        self.hits = self.misses = 0  # read by /metrics
        self.threads = threads

    def get(self, tenant_id: UUID, node_type_id: UUID, version: int, schema: Any) -> tuple:
        key = (tenant_id, node_type_id, version)
        entry = self._items.get(key)
        if entry is None:
            self.misses += 1
            text = orjson.dumps(schema)
            size = max(len(text) * VALIDATOR_BYTES_PER_SCHEMA_BYTE, parsed_json_bytes(text))
            entry = (NodeDataValidator(schema,
                                       format_checker=Draft202012Validator.FORMAT_CHECKER),
                     fast_check(schema), size)
            self._items[key] = entry
            self._bytes += size
            while self._bytes > self.limits.cache_bytes and len(self._items) > 1:
                _, (_, _, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped
        else:
            self.hits += 1
            self._items.move_to_end(key)
        return entry

    async def check_schema(self, tenant_id: UUID, schema: Any, field: str = "schema") -> None:
        """check_schema in a thread (one at a time per tenant)."""
        if schema is None or type(schema) is bool:
            return
        async with self.threads.slot(tenant_id):
            await asyncio.get_running_loop().run_in_executor(
                SCHEMA_CHECK_THREAD, check_schema, schema, self.limits.schema,
                self.limits.cpu_ms, field)

    async def errors(self, node_type: Any, data: Any, field: str = "data") -> list[dict]:
        """Validation errors of `data` against the node type's schema and its embedding
        declaration ([] when valid)."""
        return await self.errors_of_many([(node_type, data, field, {})])

    async def errors_of_many(self, items: list[tuple[Any, Any, str, dict]]) -> list[dict]:
        """Errors of several (node type, data, field, extra keys for its errors) at once:
        the embeddings' (validation/embeddings.py), then the schemas'."""
        return await embeddings_errors(items) + await self._schema_errors(items)

    async def _schema_errors(self, items: list[tuple[Any, Any, str, dict]]) -> list[dict]:
        """The schemas' errors of the items, in order: on the event loop while that stays
        cheap, else in a thread; one call's documents share one budget."""
        pending = []
        for node_type, data, field, extra in items:
            schema = node_type["schema"]
            if schema is None or schema is True:
                continue
            validator, fast, _ = self.get(node_type["tenant_id"], node_type["id"],
                                          node_type["version"], schema)
            if fast is not None and fast(data):
                # valid: jsonschema would find nothing (see validation/schema_fast_path.py)
                continue
            pending.append((validator, data, field, extra))
        if not pending:
            return []
        try:
            return _errors(pending, INLINE_BUDGET_MS)
        except OutOfBudget:
            pass
        tenant_id = items[0][0]["tenant_id"]
        async with self.threads.slot(tenant_id):
            try:
                return await asyncio.get_running_loop().run_in_executor(
                    VALIDATION_THREADS, _errors, pending, self.limits.cpu_ms)
            except OutOfBudget:
                raise QueryRejected(
                    f"Validating the data against its node type's schema used more than "
                    f"{self.limits.cpu_ms:g} ms of CPU and was stopped (FLEXDB_VALIDATION_CPU_MS): "
                    "send fewer or smaller documents per call, or simplify the schema",
                    type="too_costly", cpu_ms=self.limits.cpu_ms) from None


    def compile(self, schema: Any) -> tuple:
        """A validator of a schema not saved yet (a proposed one): (validator, fast yes or
        None), not cached."""
        return (NodeDataValidator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER),
                fast_check(schema))

    async def failures(self, tenant_id: UUID, compiled: tuple, documents: list[str],
                       deadline: float, field: str = "data") -> list[tuple[int, list[dict]]]:
        """(index, errors) of each document (JSON text) that fails the compiled schema, in a
        thread, one batch at a time per tenant. Each document has the CPU budget of one
        call's documents; one that uses it up fails, saying so. Past `deadline`
        (time.monotonic()): TimeoutError. The documents go to the thread a slice at a time
        (THREAD_SLICE_S, and the document in hand), so other tenants' validations queued for
        the two threads wait for a slice, not for a whole batch of costly documents."""
        loop = asyncio.get_running_loop()
        found: list[tuple[int, list[dict]]] = []
        start = 0
        async with self.threads.slot(tenant_id):
            while start < len(documents):
                failed, start = await loop.run_in_executor(
                    VALIDATION_THREADS, _failures, compiled, documents, start, field,
                    self.limits.cpu_ms, deadline)
                found += failed
        return found


# Wall time one turn of a thread spends on a batch of existing documents before it gives the
# thread back (the document it is on is finished first: at most FLEXDB_VALIDATION_CPU_MS).
THREAD_SLICE_S = 0.05


def _failures(compiled: tuple, documents: list[str], start: int, field: str, budget_ms: float,
              deadline: float) -> tuple[list[tuple[int, list[dict]]], int]:
    """(index, errors) of the failing documents from `start` on, until THREAD_SLICE_S has
    passed, and the index to go on from."""
    validator, fast = compiled
    found: list[tuple[int, list[dict]]] = []
    slice_ends = time.monotonic() + THREAD_SLICE_S
    for index in range(start, len(documents)):
        if index > start and time.monotonic() >= slice_ends:  # (one at least: progress)
            return found, index
        text = documents[index]
        left_ms = (deadline - time.monotonic()) * 1000
        if left_ms <= 0:
            raise TimeoutError()
        budget_ms = min(budget_ms, left_ms)
        data = orjson.loads(text)
        if fast is not None and fast(data):
            continue
        try:
            with cpu_budget(budget_ms):
                errors = _errors_of(validator, data, field)
        except OutOfBudget:
            errors = [{"field": field, "message": f"validating it used more than {budget_ms:g} "
                                                  "ms of CPU (FLEXDB_VALIDATION_CPU_MS)"}]
        if errors:
            found.append((index, errors))
    return found, len(documents)


def _errors(pending: list[tuple[Any, Any, str, dict]], budget_ms: float) -> list[dict]:
    found: list[dict] = []
    with cpu_budget(budget_ms):
        for validator, data, field, extra in pending:
            found += [{**error, **extra} for error in _errors_of(validator, data, field)]
            if len(found) >= MAX_REPORTED_ERRORS_PER_CALL:
                break
    return found[:MAX_REPORTED_ERRORS_PER_CALL]


def _errors_of(validator, data: Any, field: str) -> list[dict]:
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
        return [{"field": "schema",
                 "message": f"node type schema has an unsupported pattern: {exc}"}]
