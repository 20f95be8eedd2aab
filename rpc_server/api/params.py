"""Reusable pydantic field types for method params: ids, names, JSON documents, pagination."""
from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

import orjson
from asyncpg.pgproto.pgproto import UUID as FastUUID
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StrictBool,
    StrictInt,
)
from pydantic_core import core_schema

from rpc_server.changes.events import KINDS, OPERATIONS, Kind, Operation
from rpc_server.config import Settings
from rpc_server.storage.repositories.changes import EventFilter
from rpc_server.transport.json_codec import (
    OUT_OF_RANGE,
    JSONError,
    JSONTooDeep,
    OutOfRange,
    holds_out_of_range,
    json_depth_exceeds,
    loads,
)
from rpc_server.transport.json_text import json_text_depth_exceeds, stored_size_over

MAX_NAME = 200
MAX_DESCRIPTION = 2000
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 10
MAX_PAGE_TOKEN = 16_384
MAX_BULK = 1000
BULK_TIMEOUT_MS = 10_000  # statement timeout of one bulk create (a heavy call)
LIST_TIMEOUT_MS = 10_000  # ... of a list page whose filters no single index answers
MAX_VERSION = 2**31 - 1  # the version column is a PostgreSQL integer

SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?$")
# Deliberately simple: one @, no spaces, a dot in the domain. Deliverability is not our job.
EMAIL_RE = re.compile(r"^[^@\s\x00-\x1f]{1,64}@[^@\s\x00-\x1f.]+(?:\.[^@\s\x00-\x1f.]+)+$")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


class Params(BaseModel):
    """Base of every method's params: unknown fields are errors, names are the wire names."""
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


def _no_control_chars(value: str) -> str:
    if CONTROL_RE.search(value):
        raise ValueError("must not contain control characters")
    if value != value.strip():
        raise ValueError("must not start or end with whitespace")
    return value


def _slug(value: str) -> str:
    if not SLUG_RE.match(value):
        raise ValueError("must be 1-63 lowercase letters, digits, '-' or '_', "
                         "starting and ending with a letter or digit")
    return value


def _email(value: str) -> str:
    if len(value) > 254 or not EMAIL_RE.match(value):
        raise ValueError("must be a valid email address")
    return value


class Documents:
    """How deeply a document may nest (FLEXDB_MAX_JSON_DEPTH) and how large it may be
    written out in full (FLEXDB_MAX_BODY_BYTES), set by each process (server, facade) from
    its settings when it starts. A document is any free-form JSON a caller
    gives: a node's or relationship's data, a node type's schema, a pipeline's input, a
    query_nodes filter or sort, each execute_query param. Its depth counts from the
    document itself ({} and [] are one level), wherever it sits in a request and whether
    it comes as JSON or as a JSON string: what one surface stores, the other reads and
    writes back."""
    max_depth: int = Settings.model_fields["max_json_depth"].default
    max_bytes: int = Settings.model_fields["max_body_bytes"].default


def set_document_limits(settings: Settings) -> None:
    Documents.max_depth = settings.max_json_depth
    Documents.max_bytes = settings.max_body_bytes


def _too_deep() -> str:
    return f"is nested deeper than {Documents.max_depth} levels (FLEXDB_MAX_JSON_DEPTH)"


def document_text(value: Any) -> bytes:
    """The document as JSON text, once its nesting and its numbers are in range (else
    ValueError saying which). Checked on the text orjson writes: C speed, where walking a
    document in Python was a tenth of a bulk create's time."""
    try:
        text = orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError too: an OutOfRange, or past ~254 levels
        if holds_out_of_range(value):
            raise ValueError(f"holds a number out of range: {OUT_OF_RANGE}") from None
        if json_depth_exceeds(value, Documents.max_depth):
            raise ValueError(_too_deep()) from None
        raise
    if json_text_depth_exceeds(text, Documents.max_depth):
        raise ValueError(_too_deep())
    return text


def check_document(value: Any) -> Any:
    """Every rule of a document, U+0000 (which PostgreSQL cannot store) included. It counts
    as stored and read back: a few bytes of 1e-300 in a request would otherwise be 302 in
    every read of it, and a document of them tens of MB."""
    text = document_text(value)
    if contains_nul(text):
        raise ValueError("must not contain the character U+0000")
    stored = stored_size_over(text, Documents.max_bytes)
    if stored:
        raise ValueError(
            f"takes {stored} bytes as stored, more than {Documents.max_bytes} "
            "(FLEXDB_MAX_BODY_BYTES): it is read back with a space after each comma and "
            "colon, and its numbers in plain notation (1e-300 takes 302 characters; send "
            "such numbers as strings)")
    return value


def _parse_json_text(value: Any) -> Any:
    """flex-db clients send documents as JSON strings; newer ones send objects. Either is
    then checked as a document (check_document)."""
    if isinstance(value, str):
        try:
            return loads(value)
        except JSONTooDeep:
            raise ValueError(_too_deep()) from None
        except JSONError as exc:
            raise ValueError(f"is not valid JSON: {exc}") from None
    return value


# In JSON text U+0000 can only appear escaped, as \u0000 after an even number of backslashes
# (an odd number means the backslash itself is escaped: the text "\\u0000").
_ESCAPED_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def contains_nul(text: bytes) -> bool:
    """PostgreSQL text and jsonb cannot store U+0000, so it is refused up front."""
    return b"\\u0000" in text and _ESCAPED_NUL.search(text) is not None


def _json_object(value: Any) -> dict:
    if not isinstance(value, dict):
        raise ValueError("must be a JSON object (or a string holding one)")
    return check_document(value)


def error_message(error: dict) -> str:
    """A pydantic error's message for callers (for a number out of range, a plain one)."""
    if isinstance(error.get("input"), OutOfRange):
        return f"is a number out of range: {OUT_OF_RANGE}"
    return str(error.get("msg", "")).removeprefix("Value error, ")


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain the character U+0000")
    return value


def _optional_schema(value: Any) -> Any:
    # An empty string is how flex-db clients say "no schema".
    if value is None or value == "":
        return None
    schema = _parse_json_text(value)
    if type(schema) is bool:  # Draft 2020-12: true accepts every document, false none
        return schema
    if not isinstance(schema, dict):
        raise ValueError("must be a JSON Schema: an object, true or false (or a string "
                         "holding one)")
    return check_document(schema)


def _fast_uuid(value: Any) -> Any:
    """An id in the canonical text (as clients send ids) becomes asyncpg's UUID: a
    uuid.UUID whose hash and comparisons run in C (a call looks its tenant up in several
    per-tenant accounts: each lookup of a uuid.UUID calls its Python __hash__) and which
    asyncpg sends as it is. Any other input is left to pydantic's own check, unchanged."""
    if type(value) is str and len(value) == 36 \
            and value[8] == value[13] == value[18] == value[23] == "-":
        try:
            return FastUUID(value)
        except ValueError:
            pass
    return value


Id = Annotated[UUID, BeforeValidator(_fast_uuid)]
# The patterns below only document the rules in the JSON Schemas (OpenRPC, OpenAPI); the
# validators enforce them, with clearer messages.
PLAIN_TEXT_PATTERN = r"^[^\x00-\x1f\x7f\s](?:[^\x00-\x1f\x7f]*[^\x00-\x1f\x7f\s])?$"
Slug = Annotated[str, Field(min_length=1, max_length=63,
                            json_schema_extra={"pattern": SLUG_RE.pattern}),
                 AfterValidator(_slug)]
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME,
                            json_schema_extra={"pattern": PLAIN_TEXT_PATTERN}),
                 AfterValidator(_no_control_chars)]
Description = Annotated[str, Field(max_length=MAX_DESCRIPTION), AfterValidator(_no_nul)]
Email = Annotated[str, Field(min_length=3, max_length=254,
                             json_schema_extra={"pattern": EMAIL_RE.pattern}),
                  AfterValidator(_email)]
Status = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z][a-z_]*$")]
RelationshipType = Annotated[str, Field(min_length=1, max_length=100,
                                        json_schema_extra={"pattern": PLAIN_TEXT_PATTERN}),
                             AfterValidator(_no_control_chars)]
# Optional filters: "" means "not given" (proto3-style clients send empty strings).
class also_accepts:
    """Documents in the JSON Schema an input form a before-validator turns into the type."""

    def __init__(self, alternative: dict):
        self.alternative = alternative

    def __get_pydantic_json_schema__(self, schema: Any, handler: GetJsonSchemaHandler):
        return {"anyOf": [handler(schema), self.alternative]}


EMPTY_MEANS_NONE = also_accepts({"const": "", "description": "\"\" = not given"})
OptionalId = Annotated[UUID | None,
                       BeforeValidator(lambda v: None if v == "" else _fast_uuid(v)),
                       EMPTY_MEANS_NONE]
JsonObject = Annotated[dict[str, Any], BeforeValidator(_parse_json_text),
                       AfterValidator(_json_object),
                       also_accepts({"type": "string", "contentMediaType": "application/json",
                                     "description": "the object as JSON text"})]
JsonSchemaDoc = Annotated[dict[str, Any] | StrictBool | None,
                          BeforeValidator(_optional_schema),
                          also_accepts({"type": "string", "description": "the schema as JSON "
                                        "text; \"\" = no schema"})]
# Any other free-form JSON a caller stores or sends on (a pipeline's input, a query param).
Document = Annotated[Any, AfterValidator(check_document)]
Version = Annotated[StrictInt, Field(ge=1, le=MAX_VERSION)]


def _in_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(timezone.utc)
    except (OverflowError, ValueError):
        raise ValueError("is out of range (years 1 to 9999 in UTC)") from None


# A point in time with its zone, that PostgreSQL can store (9999-12-31T23:59-23:59 cannot).
Moment = Annotated[AwareDatetime, AfterValidator(_in_utc)]


class zero_means:
    """flex-db clients send 0 (the proto3 default) for "not set". Only the integer 0 counts:
    false and 0.0 stay invalid. The JSON Schema says so too (0 or the field's own range)."""

    def __init__(self, default: int):
        self.default = default

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler):
        default = self.default
        return core_schema.no_info_before_validator_function(
            lambda v: default if type(v) is int and v == 0 else v, handler(source))

    def __get_pydantic_json_schema__(self, schema: Any, handler: GetJsonSchemaHandler):
        return {"anyOf": [handler(schema), {"const": 0, "description": "0 = the default"}]}


class Pagination(Params):
    page_size: Annotated[StrictInt, zero_means(DEFAULT_PAGE_SIZE)] = Field(
        DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)
    # query_nodes tokens carry the last row's sort value, which may be a long string.
    page_token: str = Field("", max_length=MAX_PAGE_TOKEN)
    include_total: StrictBool = True


# null means the defaults (never None once validated; the union documents that null is taken).
if TYPE_CHECKING:  # what a handler gets: the validator has turned null into the defaults
    PaginationParam = Pagination
else:
    PaginationParam = Annotated[Pagination | None,
                                BeforeValidator(lambda v: {} if v is None else v),
                                Field(default_factory=Pagination)]


class ChangeFilter(Params):
    """Which change events a reader wants (list_changes `filter`, GET /events query): all
    of the given conditions; an absent one matches any event."""
    kinds: list[Kind] | None = Field(None, min_length=1, max_length=len(KINDS))
    operations: list[Operation] | None = Field(None, min_length=1, max_length=len(OPERATIONS))
    node_type_id: Id | None = None
    relationship_type: RelationshipType | None = None

    def condition(self) -> EventFilter:
        return EventFilter(kinds=None if self.kinds is None else list(self.kinds),
                           operations=None if self.operations is None else list(self.operations),
                           node_type_id=self.node_type_id,
                           relationship_type=self.relationship_type)

