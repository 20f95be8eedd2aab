"""JSON-RPC error codes and the application errors handlers raise.

Every error carries `data.type`, a machine-readable name, plus details."""
from __future__ import annotations

from typing import Any

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
NOT_FOUND = -32001
UNAUTHENTICATED = -32002
FORBIDDEN = -32003
CONFLICT = -32004
RATE_LIMITED = -32005
QUERY_REJECTED = -32006
PIPELINE_FAILED = -32007


class RpcError(Exception):
    """An error answer: the JSON-RPC error's code, message and data ({"type", ...})."""
    code = INTERNAL_ERROR
    type = "internal"
    default_message = "Internal error"

    def __init__(self, message: str | None = None, **details: Any):
        self.message = message or self.default_message
        self.data = {"type": self.type, **details}
        super().__init__(self.code, self.message, self.data)


class InvalidParams(RpcError):
    code = INVALID_PARAMS
    type = "invalid_params"
    default_message = "Invalid params"

    def __init__(self, message: str | None = None, errors: list[dict] | None = None, **details):
        if errors is None:
            errors = []
        super().__init__(message or _summary(errors), errors=errors, **details)

    @classmethod
    def field(cls, field: str, message: str) -> "InvalidParams":
        return cls(errors=[{"field": field, "message": message}])


def _summary(errors: list[dict]) -> str:
    if not errors:
        return "Invalid params"
    first = errors[0]
    where = first.get("field") or "params"
    prefix = f"item {first['index']}: " if "index" in first else ""
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"Invalid params: {prefix}{where}: {first['message']}{more}"


class PositionExpired(RpcError):
    """A change feed position older than what retention keeps: the events after it are
    partly gone, so the reader must resynchronise from the lists."""
    code = INVALID_PARAMS
    type = "position_expired"

    def __init__(self, after: int, trimmed_through: int, head: int):
        super().__init__(
            f"The changes after position {after} are no longer kept (retention dropped them "
            f"through position {trimmed_through}): resynchronise by reading the current "
            f"objects with the list methods, then follow the feed after position {head}",
            after=after, trimmed_through=trimmed_through, head=head)


class PositionAhead(RpcError):
    """A change feed position past the tenant's last one (from another database?)."""
    code = INVALID_PARAMS
    type = "position_ahead"

    def __init__(self, after: int, head: int):
        super().__init__(f"Position {after} is past the tenant's last change ({head})",
                         after=after, head=head)


class NotFound(RpcError):
    code = NOT_FOUND
    type = "not_found"
    default_message = "Not found"

    def __init__(self, kind: str, id: Any = None, message: str | None = None, **details):
        details["kind"] = kind
        if id is not None:
            details["id"] = str(id)
        super().__init__(message or f"{kind} not found", **details)


class Unauthenticated(RpcError):
    code = UNAUTHENTICATED
    type = "unauthenticated"
    default_message = "Authentication required: send Authorization: Bearer <API key>"


class Forbidden(RpcError):
    code = FORBIDDEN
    type = "forbidden"
    default_message = "Not allowed"


class Conflict(RpcError):
    code = CONFLICT
    type = "conflict"
    default_message = "Conflict"


class NodesInvalid(Conflict):
    """A schema change refused (mode validate) because existing nodes fail the new schema."""
    type = "nodes_invalid"

    def __init__(self, report: dict):
        super().__init__(
            f"{report['nodes_failing']} of the node type's {report['nodes_checked']} nodes fail "
            "the new schema: the change is refused (see data.report). Fix or migrate them "
            "first, or pass mode \"allow_invalid\" to accept it anyway",
            report=report)


class VersionConflict(Conflict):
    type = "version_conflict"

    def __init__(self, kind: str, id: Any, expected: int | None, actual: int):
        super().__init__(f"{kind} version mismatch: expected {expected}, current is {actual}",
                         kind=kind, id=str(id), expected_version=expected, current_version=actual)


class Unavailable(RpcError):
    """The database cannot be reached right now; the caller may retry."""
    code = INTERNAL_ERROR
    type = "unavailable"
    default_message = "Service temporarily unavailable: the database cannot be reached"


class StatementTimeout(RpcError):
    """A statement ran longer than FLEXDB_STATEMENT_TIMEOUT_MS and was cancelled."""
    code = INTERNAL_ERROR
    type = "timeout"
    default_message = "The operation took too long and was cancelled"


class QueryRejected(RpcError):
    """execute_query, query_nodes or a traversal refused or stopped. `type` says why:
    rejected (the statement is not allowed or the database refused it), timeout, or
    too_many_rows (the result is larger than the server returns)."""
    code = QUERY_REJECTED
    type = "rejected"

    def __init__(self, message: str, type: str = "rejected", **details: Any):
        super().__init__(message, **details)
        self.data["type"] = type


class Busy(RpcError):
    """Every slot for this kind of work is taken; the caller may retry after a moment."""
    code = RATE_LIMITED
    type = "busy"
    default_message = "Too many requests of this kind are running; retry shortly"

    def __init__(self, message: str | None = None, retry_after: float = 1.0, **details: Any):
        super().__init__(message, retry_after=retry_after, **details)


class QuotaExceeded(RpcError):
    """A quota (tenants per user, a tenant's nodes or stored bytes) would be passed. Not
    transient: retrying does not help until something is deleted or the cap is raised."""
    code = RATE_LIMITED
    type = "quota_exceeded"

    def __init__(self, message: str, limit: int, usage: int, setting: str):
        super().__init__(f"{message} ({setting}={limit})", limit=limit, usage=usage,
                         setting=setting)


class PipelineFailed(RpcError):
    """A pipeline run (wait: true) ended other than succeeded; data.run holds the record."""
    code = PIPELINE_FAILED
    type = "pipeline_failed"
    default_message = "The pipeline run failed"
