"""What a database failure means, by the names PostgreSQL gives: the constraint a duplicate
or a missing reference broke, and the errors that mean the database cannot be reached. The
API layer turns these into RPC errors (api/registry.translate_database_error); the names
live here, next to the SQL that declares them (sql/)."""
from __future__ import annotations

import asyncpg

# Unique constraint -> (the param it is about, how a duplicate reads to the caller).
UNIQUE_CONFLICTS: dict[str, tuple[str | None, str]] = {
    "tenants_slug_key": ("slug", "a tenant with this slug already exists"),
    "users_email_key": ("email", "a user with this email already exists"),
    "node_types_name_key": ("name", "a node type with this name already exists in the tenant"),
    "tenant_users_pkey": ("user_id", "the user is already a member of this tenant"),
    "pipelines_name_key": ("name", "a pipeline with this name already exists in the tenant"),
}
# Foreign key -> the kind of thing that is missing when it is broken.
MISSING_REFERENCES = {
    "node_types_tenant_id_fkey": "tenant",
    "tenant_users_tenant_id_fkey": "tenant",
    "tenant_users_user_id_fkey": "user",
    "nodes_node_type_fkey": "node_type",
    "relationships_source_fkey": "source_node",
    "relationships_target_fkey": "target_node",
    "api_keys_user_id_fkey": "user",
    "pipelines_tenant_id_fkey": "tenant",
    "pipeline_runs_pipeline_fkey": "pipeline",
}
UNAVAILABLE_ERRORS = (
    asyncpg.AdminShutdownError,  # the server is shutting down or restarting (57P01)
    asyncpg.CrashShutdownError,  # the server is recovering from a crash (57P02)
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.ConnectionFailureError,
    asyncpg.TooManyConnectionsError,
    ConnectionError,
    TimeoutError,
    OSError,
)


def connection_closed(exc: BaseException) -> bool:
    """asyncpg's InterfaceError for a connection the server closed under a call (e.g. a
    transaction ending while PostgreSQL restarts), and its protocol state error when the
    connection was lost between two steps of a call ("cannot switch to state N", seen while
    PostgreSQL shuts down); other InterfaceErrors and InternalClientErrors are our bugs."""
    if isinstance(exc, asyncpg.InternalClientError):
        return "cannot switch to state" in str(exc)
    return isinstance(exc, asyncpg.InterfaceError) and (
        "connection is closed" in str(exc) or "connection was closed" in str(exc))
