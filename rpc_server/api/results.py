"""Result models: the exact shape of every JSON-RPC method's result.

The handlers return plain dicts (rows shaped by api/shaping.py); these models only describe
them, for the OpenRPC document (`rpc.discover`) and the REST facade. Unknown keys are
refused (additionalProperties: false), so a result that drifts from its model is caught by
the tests. Ids are UUIDs and timestamps RFC 3339 strings with a UTC offset on the wire.

A few fields are left out of a result, rather than sent as null, when they have no value
(`omittable`): they are not required, and a model dumps without them unless they were set.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_serializer

Role = Literal["owner", "admin", "member", "viewer"]
RunStatus = Literal["queued", "running", "succeeded", "failed", "timed_out", "cancelled"]
DebugLevel = Literal["none", "basic", "verbose"]

JSON_FIELDS_NOTE = ("A JSON object; a string holding the JSON text when the server runs with "
                    "FLEXDB_JSON_FIELDS=string (for older flex-db clients).")
JsonDocument = Annotated[dict[str, Any] | str, Field(description=JSON_FIELDS_NOTE)]
OptionalJsonSchema = Annotated[
    dict[str, Any] | bool | str | None,
    Field(description="The JSON Schema (Draft 2020-12: an object, or true / false to accept "
                      "every / no document) that validates the data of this type's nodes, "
                      "or null for none. " + JSON_FIELDS_NOTE + " In string mode, no schema "
                      "is \"\".")]


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)  # absent, not null: the schema must not claim a null default


def omittable(description: str) -> Any:
    """A field the server leaves out (never sends as null) when it has no value."""
    return Field(default=None, description=description, json_schema_extra=_no_default)


class ResultModel(BaseModel):
    """Base of every result model: unknown keys are errors."""
    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True,
                              serialize_by_alias=True)

    @model_serializer(mode="wrap")
    def _leave_out_absent(self, handler):
        """Dump omittable fields only when the result had them, as the server sends it."""
        data = handler(self)
        for name, field in type(self).model_fields.items():
            if field.json_schema_extra is _no_default and name not in self.model_fields_set:
                data.pop(name, None)
        return data


# ---------------------------------------------------------------- shared pieces

class Pagination(ResultModel):
    """Where the next page starts, and optionally how many items the list has."""
    next_page_token: str = Field(description="Pass as pagination.page_token to get the next "
                                             "page; \"\" on the last page.")
    total_count: int = omittable("Number of items in the whole list (all pages); present "
                                 "only when pagination.include_total was true.")


class Deleted(ResultModel):
    """The object was deleted (or the membership removed)."""
    success: Literal[True]


# ---------------------------------------------------------------- tenants, users, keys

class TenantUsage(ResultModel):
    """What a tenant stores, and its caps (null: none)."""
    nodes: int
    bytes: int = Field(description="Bytes of its node and relationship documents, as stored.")
    max_nodes: int | None = Field(description="FLEXDB_TENANT_MAX_NODES, or null.")
    max_bytes: int | None = Field(description="FLEXDB_TENANT_MAX_BYTES, or null.")


class Tenant(ResultModel):
    """A tenant: the owner of node types, nodes, relationships and pipelines."""
    id: UUID
    slug: str = Field(description="Unique, URL-safe name of the tenant.")
    name: str
    status: str = Field(description="Free-form status, 'active' when created.")
    created_at: AwareDatetime
    updated_at: AwareDatetime
    version: int = Field(description="Incremented by every update; pass as expected_version "
                                     "to guard against lost updates.")


class TenantUsageResult(ResultModel):
    """What a tenant stores against its caps."""
    usage: TenantUsage


class TenantResult(ResultModel):
    """One tenant."""
    tenant: Tenant


class TenantList(ResultModel):
    """A page of tenants, oldest first."""
    tenants: list[Tenant]
    pagination: Pagination


class User(ResultModel):
    """A user: holds API keys and tenant memberships."""
    id: UUID
    email: str
    display_name: str
    internal: bool = Field(description="Made by flexdb itself, not by a person: the platform "
                                       "admin created at the first start (its email is a "
                                       "placeholder in the reserved .invalid domain).")
    created_at: AwareDatetime
    updated_at: AwareDatetime
    version: int = Field(description="Incremented by every update; pass as expected_version "
                                     "to guard against lost updates.")


class UserResult(ResultModel):
    """One user."""
    user: User


class UserList(ResultModel):
    """A page of users, oldest first."""
    users: list[User]
    pagination: Pagination


class TenantUser(ResultModel):
    """A user's membership of a tenant, with their role there."""
    tenant_id: UUID
    user_id: UUID
    role: Role = Field(description="owner > admin > member > viewer.")
    status: str = Field(description="Membership status, 'active' when created.")
    created_at: AwareDatetime
    updated_at: AwareDatetime


class TenantUserResult(ResultModel):
    """One tenant membership."""
    tenant_user: TenantUser


class TenantUserList(ResultModel):
    """A page of a tenant's members, oldest membership first."""
    tenant_users: list[TenantUser]
    pagination: Pagination


class ApiKey(ResultModel):
    """An API key's record; its secret is never shown again after creation."""
    id: UUID
    user_id: UUID = Field(description="The user the key authenticates as.")
    name: str
    prefix: str = Field(description="The first characters of the secret, to recognise a key.")
    created_at: AwareDatetime
    expires_at: AwareDatetime | None = Field(description="When the key stops working; null "
                                                         "for never.")
    revoked_at: AwareDatetime | None = Field(description="When the key was revoked; null "
                                                         "while it is not.")


class ApiKeyResult(ResultModel):
    """One API key (without its secret)."""
    api_key: ApiKey


class ApiKeyCreated(ResultModel):
    """A new API key, with its secret."""
    api_key: ApiKey
    secret: str = Field(description="The key to send as 'Authorization: Bearer <secret>'. "
                                    "Shown only this once: the server keeps only a hash.")


class ApiKeyList(ResultModel):
    """A page of API keys (never their secrets), oldest first."""
    api_keys: list[ApiKey]
    pagination: Pagination


# ---------------------------------------------------------------- graph documents

class EmbeddingDeclaration(ResultModel):
    """A node type's embedding (vector similarity search: query_nodes `near`)."""
    field: str = Field(description="Where in a node's data its embedding is, e.g. "
                                   "\"data.embedding\".")
    dimensions: int
    metrics: list[Literal["cosine", "l2", "inner"]] = Field(
        description="The metrics its HNSW indexes are built for.")


class SearchSettings(ResultModel):
    """A node type's full-text search settings."""
    language: str = Field(description="The text search configuration (simple, english, …).")
    fields: list[list[str]] | None = Field(description="The indexed paths (each a list of "
                                                       "keys starting with \"data\"), or null "
                                                       "for every string value.")


class NodeType(ResultModel):
    """A node type: names a kind of node, optionally with a JSON Schema for its data."""
    id: UUID
    tenant_id: UUID
    name: str
    description: str
    schema_: OptionalJsonSchema = Field(alias="schema")
    created_at: AwareDatetime
    updated_at: AwareDatetime
    version: int = Field(description="Incremented by every update; pass as expected_version "
                                     "to guard against lost updates.")
    schema_version: int = Field(description="The schema's version: 1 at creation, "
                                            "incremented by every change of the schema "
                                            "(see list_node_type_versions).")
    embedding: EmbeddingDeclaration | None = Field(
        None, description="The embedding its nodes carry for vector similarity search "
                          "(null: none).")
    search: SearchSettings = Field(description="How its nodes are indexed for full-text "
                                               "search.")


class NodeTypeResult(ResultModel):
    """One node type."""
    node_type: NodeType


class NodeTypeList(ResultModel):
    """A page of a tenant's node types, oldest first."""
    node_types: list[NodeType]
    pagination: Pagination


class SchemaFailure(ResultModel):
    """One error of an existing node against a schema."""
    node_id: UUID
    path: str = Field(description="Where in the node: `data.a.b` (array items by index).")
    message: str


class SchemaReport(ResultModel):
    """What a check of a node type's existing nodes against a schema found."""
    schema_version: int | None = Field(description="The version the schema was checked as "
                                                   "(null in a dry run).")
    nodes_checked: int
    nodes_failing: int
    failures: list[SchemaFailure] = Field(description="The first errors (up to max_failures), "
                                                      "one entry per error.")
    failures_truncated: bool = Field(description="More errors were found than are listed.")
    elapsed_ms: float
    current_schema_version: int | None = omittable("In a dry run: the node type's schema "
                                                   "version now.")


class SchemaCheck(ResultModel):
    """A dry run's report: nothing was changed."""
    report: SchemaReport


class NodeTypeUpdated(ResultModel):
    """The node type as updated; with a new schema, the report of its check of the existing
    nodes."""
    node_type: NodeType
    report: SchemaReport | None = omittable("Present when the schema changed.")


class NodeTypeVersion(ResultModel):
    """One version of a node type's schema."""
    tenant_id: UUID
    node_type_id: UUID
    version: int
    schema_: OptionalJsonSchema = Field(alias="schema")
    created_at: AwareDatetime
    created_by_user_id: UUID | None
    mode: Literal["create", "validate", "allow_invalid"] = Field(
        description="How the version was made: with the node type, or by update_node_type "
                    "in that mode.")
    nodes_checked: int = Field(description="Existing nodes checked against it when it was "
                                           "made.")
    nodes_invalid: int = Field(description="Of those, the ones failing it (allow_invalid).")


class NodeTypeVersionList(ResultModel):
    """A page of a node type's schema versions, oldest first."""
    versions: list[NodeTypeVersion]
    pagination: Pagination


class Node(ResultModel):
    """A node: a JSON document of a node type."""
    id: UUID
    tenant_id: UUID
    node_type_id: UUID
    data: JsonDocument
    created_at: AwareDatetime
    updated_at: AwareDatetime
    version: int = Field(description="Incremented by every update; pass as expected_version "
                                     "to guard against lost updates.")
    schema_version: int = Field(description="The node type's schema version this node's data "
                                            "was last validated against.")
    distance: float = omittable("query_nodes with `near` only: the node's distance from the "
                                "query vector by the clause's metric (cosine: 1 - cosine "
                                "similarity; l2: Euclidean; inner: the negative inner "
                                "product). Smaller is nearer.")
    rank: float | None = omittable("query_nodes with a search condition: how well the node "
                                   "matches (ts_rank; higher is better).")
    snippet: str | None = omittable("query_nodes with `highlight`: the searched text around "
                                    "the matches, as HTML: the text escaped, the matches in "
                                    "<mark>…</mark>.")
    score: float | None = omittable("query_nodes with near and a search condition (hybrid): "
                                    "the reciprocal-rank fusion score (higher is better).")


class NodeResult(ResultModel):
    """One node."""
    node: Node


class NodeList(ResultModel):
    """A page of nodes (list_nodes: oldest first; query_nodes: in the requested order)."""
    nodes: list[Node]
    pagination: Pagination


class NodesCreated(ResultModel):
    """The nodes made by a bulk create, in the order they were given."""
    nodes: list[Node]


class Relationship(ResultModel):
    """A typed, directed link from a source node to a target node, with its own data."""
    id: UUID
    tenant_id: UUID
    source_node_id: UUID
    target_node_id: UUID
    relationship_type: str
    data: JsonDocument
    created_at: AwareDatetime
    updated_at: AwareDatetime
    version: int = Field(description="Incremented by every update; pass as expected_version "
                                     "to guard against lost updates.")


class RelationshipResult(ResultModel):
    """One relationship."""
    relationship: Relationship


class RelationshipList(ResultModel):
    """A page of relationships, oldest first."""
    relationships: list[Relationship]
    pagination: Pagination


class RelationshipsCreated(ResultModel):
    """The relationships made by a bulk create, in the order they were given."""
    relationships: list[Relationship]


# ---------------------------------------------------------------- queries and walks

class QueryColumn(ResultModel):
    """A column of an execute_query result."""
    name: str
    type: str = Field(description="PostgreSQL type name, e.g. 'int8', 'jsonb', 'text[]'.")


class QueryResult(ResultModel):
    """The rows of a read-only SQL statement."""
    columns: list[QueryColumn]
    rows: list[list[Any]] = Field(description="One list of values per row, in column order, "
                                              "as plain JSON (see the README for each type).")
    row_count: int = Field(description="Number of rows returned.")
    truncated: bool = Field(description="True when the statement had more than max_rows rows "
                                        "and only the first max_rows were returned.")
    duration_ms: float = Field(description="Time spent in the database, in milliseconds.")


class ReachedNode(ResultModel):
    """A node reached by a traversal, with how it was reached."""
    node: Node
    depth: int = Field(description="Hops from the start node (1 = a direct neighbour).")
    path: list[UUID] = Field(description="Relationship ids of one shortest path from the "
                                         "start node to this node.")


class TraverseResult(ResultModel):
    """Nodes reachable from the start node (not itself), nearest first."""
    nodes: list[ReachedNode]
    truncated: bool = Field(description="True when more nodes were reachable than `limit`, "
                                        "or than FLEXDB_MAX_PAGE_BYTES of documents.")


class GraphPath(ResultModel):
    """A path through the graph."""
    node_ids: list[UUID] = Field(description="The nodes on the path, source first, target last.")
    relationship_ids: list[UUID] = Field(description="The relationships between consecutive "
                                                     "nodes of node_ids.")
    length: int = Field(description="Number of relationships (0 when source is target).")


class ShortestPathResult(ResultModel):
    """One shortest path between two nodes."""
    path: GraphPath | None = Field(description="null when the target cannot be reached within "
                                               "max_depth hops.")


# ---------------------------------------------------------------- audit

class AuditEvent(ResultModel):
    """One event of a tenant's append-only, hash-chained audit trail."""
    id: UUID
    tenant_id: UUID
    seq: int = Field(description="Position in the tenant's chain, from 1.")
    created_at: AwareDatetime
    actor_user_id: UUID | None = Field(description="The caller's user; null for anonymous "
                                                   "callers.")
    actor_key_id: UUID | None = Field(description="The caller's API key; null for anonymous "
                                                  "callers.")
    method: str = Field(description="The JSON-RPC method called.")
    target_kind: str | None = Field(description="Kind of the object acted on (e.g. 'node'), "
                                                "null when the call has none.")
    target_id: str | None = Field(description="Id of the object acted on, null when the call "
                                               "has none.")
    outcome: Literal["ok", "denied", "rejected"]
    request_id: str
    summary: dict[str, Any] = Field(description="The call's params with secrets redacted and "
                                                "documents reduced to their size, plus "
                                                "outcome details.")
    hash: str = Field(description="SHA-256 (hex) of the previous event's hash and this event.")


class AuditEventList(ResultModel):
    """A page of audit events, oldest first."""
    audit_events: list[AuditEvent]
    pagination: Pagination


class DeniedCall(ResultModel):
    """How many calls of one source to one method were refused one way in one interval."""
    id: UUID
    interval_start: AwareDatetime = Field(description="Start of the interval counted (60 s "
                                                      "long).")
    source: str = Field(description="`key:<API key id>` (also behind a run's token), or "
                                    "without valid credentials `address:<IPv4>` or "
                                    "`address:<IPv6 /64>`.")
    method: str = Field(description="The JSON-RPC method refused.")
    outcome: Literal["unauthenticated", "forbidden", "not_found"]
    count: int = Field(description="Calls refused so in the interval.")
    last_at: AwareDatetime = Field(description="When the last of them came.")


class DeniedCallList(ResultModel):
    """A page of refused-call counts, oldest interval first."""
    denied_calls: list[DeniedCall]
    pagination: Pagination


class AuditChainVerification(ResultModel):
    """Whether a tenant's audit chain is intact, or where it first breaks."""
    ok: bool
    events_checked: int = Field(description="Number of events found intact.")
    first_broken_seq: int = omittable("Sequence number where the chain breaks; only when ok "
                                      "is false.")
    event_id: UUID | None = omittable("The event at first_broken_seq; only when ok is false, "
                                      "null when the events at the end of the chain are "
                                      "missing.")
    reason: str = omittable("Why the chain breaks there; only when ok is false.")


# ---------------------------------------------------------------- pipelines

class Pipeline(ResultModel):
    """A stored Python pipeline: code defining run(input, db), and its limits."""
    id: UUID
    tenant_id: UUID
    name: str
    description: str
    code: str
    timeout_ms: int = Field(description="Wall-clock limit of a run, in milliseconds.")
    memory_mb: int = Field(description="Memory limit of a run, in MiB.")
    created_at: AwareDatetime
    updated_at: AwareDatetime
    version: int = Field(description="Incremented by every update; pass as expected_version "
                                     "to guard against lost updates.")


class PipelineResult(ResultModel):
    """One pipeline."""
    pipeline: Pipeline


class PipelineList(ResultModel):
    """A page of a tenant's pipelines, oldest first."""
    pipelines: list[Pipeline]
    pagination: Pagination


class RunError(ResultModel):
    """Why a run did not succeed."""
    type: str = Field(description="Machine-readable reason, e.g. 'exception', 'timeout', "
                                  "'memory', 'cancelled', 'interrupted'.")
    message: str
    traceback: str = omittable("The user code's traceback, for an exception (not with "
                               "debug_level 'none').")


class DbOperation(ResultModel):
    """One `db` call the run's code made."""
    method: str = Field(description="The JSON-RPC method called.")
    duration_ms: float
    ok: bool
    error: str = omittable("The error message; only when ok is false.")
    params: dict[str, Any] = omittable("The call's params, redacted; only with debug_level "
                                       "'verbose'.")


class PipelineRun(ResultModel):
    """A run of a pipeline: its status, input, outcome, output, timings and db calls."""
    id: UUID
    tenant_id: UUID
    pipeline_id: UUID
    status: RunStatus
    input: Any = Field(description="The run's input, any JSON value (null when none was given).")
    result: Any = Field(description="What run() returned, any JSON value; null until it "
                                    "succeeds.")
    error: RunError | None = Field(description="Why the run failed, timed out or was "
                                               "cancelled; null otherwise.")
    output: str = Field(description="Captured print output (bounded).")
    debug_level: DebugLevel
    timeout_ms: int
    memory_mb: int
    actor_user_id: UUID | None = Field(description="Who started the run; null for anonymous "
                                                   "callers.")
    actor_key_id: UUID | None = Field(description="The API key that started the run; null "
                                                  "for anonymous callers.")
    duration_ms: float | None = Field(description="Wall-clock time of the run; null until it "
                                                  "finishes.")
    cpu_ms: float | None = Field(description="CPU time used; null until it finishes (or when "
                                             "unknown).")
    peak_memory_kb: int | None = Field(description="Peak memory used; null until it finishes "
                                                   "(or when unknown).")
    db_operations: list[DbOperation]
    created_at: AwareDatetime
    started_at: AwareDatetime | None = Field(description="null while queued.")
    finished_at: AwareDatetime | None = Field(description="null until it finishes.")
    updated_at: AwareDatetime


class PipelineRunResult(ResultModel):
    """One pipeline run."""
    run: PipelineRun


class PipelineRunList(ResultModel):
    """A page of pipeline runs, oldest first."""
    runs: list[PipelineRun]
    pagination: Pagination


class ChangeActor(ResultModel):
    user_id: UUID | None = Field(description="The user who made the change (None: the "
                                             "server itself).")
    key_id: UUID | None = Field(description="The API key it was made with.")
    run_id: UUID | None = Field(description="The pipeline run whose execution token made it "
                                            "(None: not a run).")


class ChangeEvent(ResultModel):
    """One committed change, as the feed delivers it."""
    position: int = Field(description="The event's place in its tenant's feed: 1, 2, 3 … "
                                      "in commit order, never reused, never skipped.")
    time: AwareDatetime = Field(description="When the changing transaction began.")
    operation: Literal["create", "update", "delete"]
    kind: Literal["node", "relationship", "node_type", "pipeline", "membership"]
    id: str = Field(description="The object's id (a membership's: its user's id).")
    version: int | None = Field(description="The object's version after the change (before "
                                            "it, for a delete; None for memberships).")
    actor: ChangeActor
    node_type_id: UUID | None = Field(description="A node's node type.")
    relationship_type: str | None = Field(description="A relationship's type.")
    object: dict[str, Any] | None = Field(
        description="The object after the change, as its get method answers it (a "
                    "membership: tenant_id, user_id, role, status and its times); None after "
                    "a delete or when `object_omitted`.")
    object_omitted: bool = Field(description="The object was larger than "
                                             "FLEXDB_FEED_MAX_OBJECT_BYTES: read it with its "
                                             "get method.")
    object_bytes: int = Field(description="The object's size as JSON text (0 after a delete).")


class ChangeList(ResultModel):
    """Change events after a position, oldest first."""
    changes: list[ChangeEvent]
    last_position: int = Field(description="Pass as `after` to read on: the position through "
                                           "which this read looked (filtered-out events "
                                           "included).")
    head: int = Field(description="The tenant's last position when this was read.")


# ---------------------------------------------------------------- webhooks

class WebhookFilter(ResultModel):
    """Which change events a webhook gets: all of the given conditions."""
    kinds: list[Literal["node", "relationship", "node_type", "pipeline", "membership"]] = \
        omittable("Only these kinds of object.")
    operations: list[Literal["create", "update", "delete"]] = omittable("Only these operations.")
    node_type_id: UUID = omittable("Only nodes of this node type.")
    relationship_type: str = omittable("Only relationships of this type.")


class Webhook(ResultModel):
    """A webhook: where a tenant's change events are POSTed (or, for a trigger, which
    pipeline runs them), and how its deliveries go. Its secret is never shown again after
    creation."""
    id: UUID
    tenant_id: UUID
    url: str | None = Field(description="Where events are POSTed; null for a trigger.")
    pipeline_id: UUID | None = Field(description="A trigger's pipeline, run with each event "
                                                 "as input; null for a URL webhook.")
    description: str
    filter: WebhookFilter | None = Field(description="null: every event.")
    secret_hint: str | None = Field(description="The secret's last characters, to tell "
                                                "secrets apart; null for a trigger.")
    status: Literal["active", "paused"]
    paused_reason: str | None = Field(description=(
        "Why it is paused: `failing` (FLEXDB_WEBHOOK_PAUSE_AFTER_FAILURES attempts in a row "
        "failed), `position_expired` (retention dropped events it had not delivered), "
        "`paused` (by update_webhook), `secret_unreadable`, `creator_unauthorized` (a "
        "trigger's creator lost the key, membership or role its runs need); null while "
        "active."))
    paused_at: AwareDatetime | None
    delivered_position: int = Field(description="The last position it is done with "
                                                "(delivered, or not matching its filter).")
    failures: int = Field(description="Failed attempts in a row at the next event.")
    next_attempt_at: AwareDatetime = Field(description="When the next event is tried (no "
                                                       "earlier).")
    last_attempt_at: AwareDatetime | None
    last_http_status: int | None = Field(description="The receiver's answer to the last "
                                                     "attempt (null: none came).")
    last_error: str | None = Field(description="Why the last attempt failed; null after a "
                                               "success.")
    created_by_user_id: UUID | None = Field(description=(
        "Who created it (or last resumed a trigger): a trigger's runs run as this user…"))
    created_by_key_id: UUID | None = Field(description="… with this API key.")
    run_id: UUID | None = Field(description="A trigger's run in flight (queued or running), "
                                            "for the event after delivered_position.")
    created_at: AwareDatetime
    updated_at: AwareDatetime
    version: int


class WebhookResult(ResultModel):
    """One webhook (without its secret)."""
    webhook: Webhook


class WebhookCreated(ResultModel):
    """A new webhook, with its signing secret."""
    webhook: Webhook
    secret: str | None = Field(description="The signing secret (`whsec_…`). Shown only this "
                                           "once. null for a trigger, which has none.")


class WebhookList(ResultModel):
    """A page of a tenant's webhooks, oldest first."""
    webhooks: list[Webhook]
    pagination: Pagination


class WebhookDelivery(ResultModel):
    """An event's delivery to a webhook (with all its attempts), or a redelivery."""
    id: UUID
    webhook_id: UUID
    position: int
    redelivery: bool = Field(description="Asked for with redeliver (sent once).")
    status: Literal["pending", "running", "retrying", "delivered", "failed"] = Field(
        description="`running`: a trigger's run for it is queued or running.")
    attempts: int
    last_http_status: int | None
    last_error: str | None
    run_id: UUID | None = Field(description="A trigger's run of the last attempt (see "
                                            "get_pipeline_run).")
    next_attempt_at: AwareDatetime | None = Field(description="When a retrying delivery is "
                                                              "tried again.")
    created_at: AwareDatetime
    updated_at: AwareDatetime


class WebhookDeliveryResult(ResultModel):
    """The redelivery queued."""
    delivery: WebhookDelivery


class WebhookDeliveryList(ResultModel):
    """A page of a webhook's deliveries, oldest first."""
    deliveries: list[WebhookDelivery]
    pagination: Pagination


# ---------------------------------------------------------------- jobs

class FieldError(ResultModel):
    """One validation error: where (a JSON path under `data`) and what."""
    field: str
    message: str


class JobFailure(ResultModel):
    """A node a job left unchanged, and why."""
    node_id: UUID
    reason: Literal["pipeline_error", "not_an_object", "invalid", "changed_meanwhile",
                    "batch_failed"] = Field(description=(
        "`pipeline_error`: run() raised for it (or its result could not be stored); "
        "`not_an_object`: it returned something else than a JSON object; `invalid`: the new "
        "data fails the schema (see errors); `changed_meanwhile`: the node was updated or "
        "deleted while its batch ran; `batch_failed`: the batch's run failed as a whole "
        "(timeout, memory, result size)."))
    message: str
    errors: list[FieldError] = omittable("The first validation errors (for `invalid`).")


class JobError(ResultModel):
    """Why a job failed or was cancelled."""
    type: str = Field(description="e.g. 'schema_changed', 'node_type_deleted', "
                                  "'pipeline_deleted', 'creator_unauthorized', 'cancelled'.")
    message: str
    current_version: int = omittable("For `schema_changed`: the node type's schema version "
                                     "now.")


class Job(ResultModel):
    """A job: long work done in batches by the servers, with its progress."""
    id: UUID
    tenant_id: UUID
    kind: Literal["migrate_nodes"]
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    params: dict[str, Any] = Field(description="What it was started with (for migrate_nodes: "
                                               "node_type_id, pipeline_id, to_version, "
                                               "only_outdated).")
    total: int = Field(description="Items it goes through, counted when it started.")
    processed: int = Field(description="Items done so far (changed, unchanged or failed).")
    changed: int = Field(description="Items written with new data (nodes: version + 1).")
    failed: int = Field(description="Items left unchanged because they failed.")
    batches: int = Field(description="Batches applied (one pipeline run and one audit event "
                                     "each).")
    failures: list[JobFailure] = Field(description="The first failed items (at most 100), "
                                                   "with why.")
    error: JobError | None = Field(description="Why it failed or was cancelled; null "
                                               "otherwise.")
    run_id: UUID | None = Field(description="The pipeline run of its batch in flight.")
    current_schema_version: int | None = Field(description=(
        "The node type's schema version now (the job fails if it moves away from "
        "to_version); null when the node type is gone."))
    created_by_user_id: UUID | None = Field(description="Who started it (it runs as them).")
    created_by_key_id: UUID | None
    created_at: AwareDatetime
    started_at: AwareDatetime | None = Field(description="null while queued.")
    finished_at: AwareDatetime | None = Field(description="null until it ends.")
    updated_at: AwareDatetime
    version: int


class JobResult(ResultModel):
    """One job."""
    job: Job


class JobList(ResultModel):
    """A page of a tenant's jobs, oldest first."""
    jobs: list[Job]
    pagination: Pagination
