"""Node type methods. A node type's optional JSON Schema (Draft 2020-12) validates the
data of its nodes on every create and update. Every change of the schema makes a new
version of it, checked against the existing nodes first (validation/existing_nodes.py)."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, StrictInt

from rpc_server.api import results
from rpc_server.api.context import Call
from rpc_server.api.params import (
    MAX_DESCRIPTION,
    Description,
    Id,
    JsonSchemaDoc,
    Name,
    PaginationParam,
    Params,
    Version,
)
from rpc_server.api.registry import rpc_method
from rpc_server.api.vector_params import Embedding
from rpc_server.errors import (
    EmbeddingsInvalid,
    InvalidParams,
    NodesInvalid,
    NotFound,
    QueryRejected,
    VectorUnavailable,
    VersionConflict,
)
from rpc_server.methods.common import (
    DELETED,
    changes_of,
    json_size,
    read_one,
    read_page,
    require_changes,
    require_tenant,
)
from rpc_server.security.auth import tenant_role
from rpc_server.storage.node_filter import parse_field
from rpc_server.storage.node_search import DEFAULT_LANGUAGE, MAX_LANGUAGE, MAX_SEARCH_FIELDS
from rpc_server.storage.repositories import (
    EmbeddingRepository,
    NodeRepository,
    NodeTypeRepository,
)
from rpc_server.storage.vectors import embedding_path
from rpc_server.validation.existing_nodes import KeptChanging, SchemaReport, check_nodes

UPDATABLE = ("name", "description", "schema", "search", "embedding")
SCHEMA_CHECK_TIMEOUT_MS = 60_000  # default time limit of a check of the existing nodes
MAX_SCHEMA_CHECK_TIMEOUT_MS = 600_000
MAX_REPORTED_FAILURES = 100  # errors listed in a check's report
SchemaCheckTimeout = Annotated[StrictInt, Field(ge=1, le=MAX_SCHEMA_CHECK_TIMEOUT_MS)]
ReportedFailures = Annotated[StrictInt, Field(ge=0, le=MAX_REPORTED_FAILURES)]


def _data_path(raw: Any) -> list[str]:
    try:
        name, path = parse_field(raw, "search.fields")
    except InvalidParams as exc:  # (a validator's refusal must be a ValueError)
        raise ValueError(exc.data["errors"][0]["message"]) from None
    if path is None:
        raise ValueError("must be a path into data: \"data.title\" or [\"data\", \"title\"]")
    return ["data", *path]


class SearchSettings(Params):
    """How a node type's nodes are indexed for full-text search (query_nodes' `search`)."""
    language: str = Field(DEFAULT_LANGUAGE, min_length=1, max_length=MAX_LANGUAGE,
                          description="A text search configuration: simple (the default: "
                                      "words as written, lowercased), english, french, …")
    fields: list[Annotated[Any, AfterValidator(_data_path)]] | None = Field(
        None, max_length=MAX_SEARCH_FIELDS,
        description="Paths into data whose strings are indexed (default: every string "
                    "value of the document).")


class CreateNodeType(Params):
    tenant_id: Id
    name: Name
    description: Description = ""
    schema_: JsonSchemaDoc = Field(None, alias="schema")
    search: SearchSettings | None = None
    embedding: Embedding | None = None  # vector similarity search (needs pgvector)


class NodeTypeId(Params):
    id: Id
    tenant_id: Id


class GetNodeType(NodeTypeId):
    version: Version | None = None  # a schema version: the node type with that schema


class UpdateNodeType(Params):
    id: Id
    tenant_id: Id
    name: Name | None = None
    description: Description | None = None
    schema_: JsonSchemaDoc = Field(None, alias="schema")
    # A new embedding declaration (null removes it) re-indexes the type's nodes, refused
    # when one of them holds something else at the field (-32004 embeddings_invalid).
    embedding: Embedding | None = None
    expected_version: Version | None = None
    search: SearchSettings | None = None  # absent or null: unchanged
    # With a new schema: refuse the change when existing nodes fail it (validate), or
    # accept it and leave those nodes at the schema version they had (allow_invalid).
    mode: Literal["validate", "allow_invalid"] = "validate"
    timeout_ms: SchemaCheckTimeout = SCHEMA_CHECK_TIMEOUT_MS
    max_failures: ReportedFailures = 20


class CheckNodeTypeSchema(Params):
    tenant_id: Id
    id: Id
    schema_: JsonSchemaDoc = Field(None, alias="schema")
    timeout_ms: SchemaCheckTimeout = SCHEMA_CHECK_TIMEOUT_MS
    max_failures: ReportedFailures = 20


class ListNodeTypes(Params):
    tenant_id: Id
    pagination: PaginationParam


class ListNodeTypeVersions(Params):
    tenant_id: Id
    id: Id
    pagination: PaginationParam


@rpc_method(CreateNodeType, tenant_role("admin"), result=results.NodeTypeResult,
             run_db=None, tenant_must_exist=False)
async def create_node_type(ctx: Call, p: CreateNodeType) -> dict:
    """Create a node type; `schema` (object or JSON string) validates its nodes' data,
    `search` says how they are indexed for full-text search."""
    await ctx.validators.check_schema(p.tenant_id, p.schema_)
    search = None if p.search is None else await checked_search(ctx, p.search)
    embedding = p.embedding.stored() if p.embedding is not None else None
    if embedding is not None and not ctx.state.vectors.available:
        raise VectorUnavailable("embedding", ctx.state.vectors.reason)
    async with ctx.transaction() as conn:
        principal = await ctx.principal()
        row = await NodeTypeRepository(conn).create(p.tenant_id, p.name, p.description, p.schema_,
                                                    principal.user_id, search,
                                                    embedding=embedding)
        ctx.set_target("node_type", row["id"])
    return {"node_type": ctx.shaper.one(row)}


@rpc_method(GetNodeType, tenant_role("viewer"), result=results.NodeTypeResult,
             run_db=None, tenant_must_exist=False)
async def get_node_type(ctx: Call, p: GetNodeType) -> dict:
    """Get a node type by id. With `version`, its `schema` and `schema_version` are those of
    that schema version (the other fields are current)."""
    async with ctx.connection() as conn:
        types = NodeTypeRepository(conn)

        async def read():
            row = await types.get(p.tenant_id, p.id)
            if p.version is None or p.version == row["schema_version"]:
                return row
            old = await types.version(p.tenant_id, p.id, p.version)
            if old is None:
                raise NotFound("node_type_version", message=(
                    f"node type version {p.version} not found (versions run from 1 to "
                    f"{row['schema_version']}; the oldest past "
                    "FLEXDB_SCHEMA_VERSIONS_KEPT are dropped)"), version=p.version)
            return {**row, "schema": old["schema"], "schema_version": old["version"]}

        row = await read_one(ctx, ctx.state.settings.max_schema_bytes + MAX_DESCRIPTION, read,
                             lambda row: json_size(row["schema"], row["description"]))
    return {"node_type": ctx.shaper.one(row)}


@rpc_method(UpdateNodeType, tenant_role("admin"), result=results.NodeTypeUpdated,
             run_db=None, tenant_must_exist=False)
async def update_node_type(ctx: Call, p: UpdateNodeType) -> dict:
    """Update a node type. A new `schema` (null or "" removes it) makes a new schema version,
    checked against every existing node first: with `mode` "validate" (the default) the
    change is refused when any node fails it (-32004 `nodes_invalid`, with the report);
    with "allow_invalid" it is made, and the nodes that fail keep the schema version they
    had (query_nodes: `{"field": "schema_version", "op": "lt", "value": "current"}`). The
    report says what the check found. New `search` settings re-index the type's nodes. A
    new `embedding` declaration (null removes it) re-stores the type's embeddings in the
    same transaction: refused (-32004 `embeddings_invalid`) when any node holds at its
    field something other than an embedding of its dimensions (or nothing)."""
    changes = changes_of(p, ("name", "description"))
    if p.search is not None:
        changes["search_config"] = await checked_search(ctx, p.search)
    if "embedding" in p.model_fields_set:
        changes["embedding"] = p.embedding.stored() if p.embedding is not None else None
        if changes["embedding"] is not None and not ctx.state.vectors.available:
            raise VectorUnavailable("embedding", ctx.state.vectors.reason)
    if "schema_" not in p.model_fields_set and "search_config" not in changes \
            and "embedding" not in changes:
        require_changes(changes, UPDATABLE)
        async with ctx.transaction() as conn:  # (the answer within the budget, or no change)
            row = await read_one(ctx, 0, lambda: NodeTypeRepository(conn).update(
                p.tenant_id, p.id, changes, p.expected_version),
                lambda row: json_size(row["schema"], row["description"]))
        ctx.state.node_types.forget(p.tenant_id, p.id)
        return {"node_type": ctx.shaper.one(row)}
    if "schema_" in p.model_fields_set:
        await ctx.validators.check_schema(p.tenant_id, p.schema_)
    report = SchemaReport(p.max_failures)
    principal = await ctx.principal()
    outcome = None
    async with ctx.heavy_transaction(p.timeout_ms, "The node type change (it checks or "
                                     "re-indexes every node of the type: raise timeout_ms)"
                                     ) as conn:
        types = NodeTypeRepository(conn)
        current = await types.lock(p.tenant_id, p.id)
        if p.expected_version is not None and current["version"] != p.expected_version:
            raise VersionConflict("node_type", p.id, p.expected_version, current["version"])
        if "embedding" in changes:
            await reindex_embeddings(ctx, conn, current, changes["embedding"])
        if "schema_" not in p.model_fields_set or current["schema"] == p.schema_:
            # no new schema version, no check
            row = await types.update(p.tenant_id, p.id, {**changes, "schema": current["schema"]},
                                     None)
        else:
            new_version = current["schema_version"] + 1
            await checked(check_nodes(conn, ctx.validators, p.tenant_id, p.id, p.schema_,
                                      report, p.timeout_ms, stamp_version=new_version,
                                      stamp_after_failures=p.mode == "allow_invalid"))
            outcome = report.as_result(new_version)
            if report.failing and p.mode == "validate":
                raise NodesInvalid(outcome)
            row = await types.change_schema(current, changes, p.schema_, principal.user_id,
                                            p.mode, report.checked, report.failing,
                                            ctx.state.settings.schema_versions_kept)
        if changes.get("search_config", current["search"]) != current["search"]:
            await NodeRepository(conn).reindex_search(p.tenant_id, p.id,
                                                      changes["search_config"])
    ctx.state.node_types.forget(p.tenant_id, p.id)
    result = {"node_type": ctx.shaper.one(row)}
    if outcome is not None:
        result["report"] = outcome
    return result


async def checked_search(ctx: Call, search: SearchSettings) -> dict:
    """The search settings as stored ({"language", "fields": key lists or null}), once the
    language is known to the database."""
    async with ctx.connection() as conn:
        if not await NodeTypeRepository(conn).language_exists(search.language):
            raise InvalidParams.field(
                "search.language", f"{search.language!r} is not a text search configuration "
                "of this database (e.g. simple, english, french, german, spanish)")
    return {"language": search.language, "fields": search.fields}


async def reindex_embeddings(ctx: Call, conn, current, embedding: dict | None) -> None:
    """With the node type locked: its nodes' embeddings stored again for a new field or
    dimensions (or dropped). The HNSW indexes follow in the background
    (storage/vectors.py: VectorIndexer)."""
    before = current["embedding"]
    if not ctx.state.vectors.available or (
            before is not None and embedding is not None
            and (before["field"], before["dimensions"]) == (embedding["field"],
                                                            embedding["dimensions"])):
        return
    embeddings = EmbeddingRepository(conn)
    path = embedding_path(embedding["field"]) if embedding is not None else None
    if embedding is not None and path is not None:
        count, sample = await embeddings.misfits(current["tenant_id"], current["id"], path,
                                                 embedding["dimensions"])
        if count:
            raise EmbeddingsInvalid(embedding["field"], embedding["dimensions"], count, sample)
    await embeddings.rebuild(current["tenant_id"], current["id"], path)


async def checked(check):
    try:
        return await check
    except KeptChanging:
        raise QueryRejected("Nodes of the type kept being written while the schema change "
                            "checked them; retry", type="kept_changing") from None


@rpc_method(CheckNodeTypeSchema, tenant_role("admin"), result=results.SchemaCheck,
             run_db=None, tenant_must_exist=False)
async def check_node_type_schema(ctx: Call, p: CheckNodeTypeSchema) -> dict:
    """A dry run of a schema change: validate every existing node of the type against the
    proposed `schema` without changing anything; the count checked, the count failing and
    the first failures (node, path, message). One of the tenant's heavy-call slots, within
    `timeout_ms`."""
    await ctx.validators.check_schema(p.tenant_id, p.schema_)
    report = SchemaReport(p.max_failures)
    async with ctx.heavy(p.timeout_ms, "The schema check (raise timeout_ms)") as conn:
        current = await NodeTypeRepository(conn).get(p.tenant_id, p.id)
        await check_nodes(conn, ctx.validators, p.tenant_id, p.id, p.schema_, report,
                          p.timeout_ms)
    return {"report": {**report.as_result(None), "current_schema_version":
                       current["schema_version"]}}


@rpc_method(ListNodeTypeVersions, tenant_role("viewer"), result=results.NodeTypeVersionList,
             run_db=None, tenant_must_exist=False)
async def list_node_type_versions(ctx: Call, p: ListNodeTypeVersions) -> dict:
    """A node type's schema versions, oldest first: each with its schema, when and by whom
    it was made, and what the check of the existing nodes found then."""
    async with ctx.connection() as conn:
        types = NodeTypeRepository(conn)
        page = await read_page(ctx, p.pagination, ctx.state.settings.max_schema_bytes,
                               lambda max_bytes: types.versions(p.tenant_id, p.id,
                                                                p.pagination, max_bytes))
        if not page.rows:
            await types.get(p.tenant_id, p.id)  # NotFound when there is no such node type
    return ctx.shaper.page("versions", page)


@rpc_method(NodeTypeId, tenant_role("admin"), result=results.Deleted,
             run_db=None, tenant_must_exist=False)
async def delete_node_type(ctx: Call, p: NodeTypeId) -> dict:
    """Delete a node type, its nodes and their relationships."""
    async with ctx.transaction() as conn:
        await NodeTypeRepository(conn).delete(p.tenant_id, p.id)
    ctx.state.node_types.forget(p.tenant_id, p.id)
    return DELETED


@rpc_method(ListNodeTypes, tenant_role("viewer"), result=results.NodeTypeList,
             run_db=None, tenant_must_exist=True)
async def list_node_types(ctx: Call, p: ListNodeTypes) -> dict:
    """List a tenant's node types."""
    async with ctx.connection() as conn:
        await require_tenant(ctx, conn, p.tenant_id)
        page = await read_page(ctx, p.pagination,
                               ctx.state.settings.max_schema_bytes + MAX_DESCRIPTION,
                               lambda max_bytes: NodeTypeRepository(conn).list(
                                   p.tenant_id, p.pagination, max_bytes))
    return ctx.shaper.page("node_types", page)
