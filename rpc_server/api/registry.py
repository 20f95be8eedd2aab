"""The method registry: each handler's registration declares its params model, who may call
it (role, pipeline runs' tokens, whether its tenant must exist) and its result model; the
wrapper turns raw JSON-RPC params (by name or by position) into that model, authorizes as
declared and maps failures to RPC errors (database ones by storage/constraint_errors.py)."""
from __future__ import annotations

import inspect
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import asyncpg
from pydantic import BaseModel, ValidationError

from rpc_server.api.context import Call
from rpc_server.api.params import Params, error_message
from rpc_server.audit.denied_calls import source_of
from rpc_server.errors import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    Busy,
    Conflict,
    Forbidden,
    InvalidParams,
    NotFound,
    RpcError,
    StatementTimeout,
    Unauthenticated,
    Unavailable,
)
from rpc_server.security.auth import ROLE_RANK, Permission
from rpc_server.storage.constraint_errors import (
    MISSING_REFERENCES,
    UNAVAILABLE_ERRORS,
    UNIQUE_CONFLICTS,
    connection_closed,
)

log = logging.getLogger(__name__)

Handler = Callable[[Call, Any], Awaitable[dict]]


@dataclass(frozen=True)
class DbMethod:
    """A pipeline run's `db` object offers this method (its calls carry the run's execution
    token); `positional` names the params that its Python call takes by position, in order."""
    positional: tuple[str, ...] = ()


def db_method(*positional: str) -> DbMethod:
    return DbMethod(positional)


@dataclass(frozen=True)
class MethodSpec:
    """Everything about a method, declared once at its registration: who may call it
    (`permission`), whether a pipeline run's execution token may (`run_db`: None = no), and
    whether it answers not found for a tenant that does not exist even to a platform admin,
    who skips the membership check that proves it for everyone else (`tenant_must_exist`:
    see methods/common.require_tenant)."""
    name: str
    params_model: type[Params]
    permission: Permission
    run_db: DbMethod | None
    tenant_must_exist: bool
    handler: Handler
    summary: str
    result_model: type[BaseModel]


REGISTRY: dict[str, MethodSpec] = {}

def validation_errors(exc: ValidationError, prefix: str = "") -> list[dict]:
    errors = []
    for err in exc.errors(include_url=False):  # (the input only tells error_message apart)
        path = ".".join(str(p) for p in err["loc"])
        field = f"{prefix}.{path}" if prefix and path else (prefix or path)
        message = error_message(dict(err))
        item: dict[str, Any] = {"field": field or "params", "message": message}
        if len(err["loc"]) > 1 and isinstance(err["loc"][1], int):
            item["index"] = err["loc"][1]  # position in a bulk list
        errors.append(item)
    return errors


def translate_database_error(exc: BaseException | None) -> RpcError | None:
    """The RPC error for a database failure, looking through wrapping exceptions (e.g. a
    rollback failing because the server is shutting down, raised from the real cause)."""
    seen = 0
    while exc is not None and seen < 5:
        mapped = _translate_one(exc)
        if mapped is not None:
            return mapped
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def _translate_one(exc: BaseException) -> RpcError | None:
    if isinstance(exc, asyncpg.UniqueViolationError):
        field, message = UNIQUE_CONFLICTS.get(exc.constraint_name or "", (None, "already exists"))
        return Conflict(message, field=field)
    if isinstance(exc, asyncpg.ForeignKeyViolationError):
        kind = MISSING_REFERENCES.get(exc.constraint_name or "")
        if kind:
            return NotFound(kind)
    if isinstance(exc, (asyncpg.UntranslatableCharacterError,
                        asyncpg.CharacterNotInRepertoireError)):
        # Backstop for text PostgreSQL cannot store (params validation refuses U+0000).
        return InvalidParams.field("params", "contains a character the database cannot store")
    if isinstance(exc, asyncpg.QueryCanceledError):
        return StatementTimeout()
    if isinstance(exc, (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)):
        # The database undid the call's transaction for a concurrent one: nothing changed,
        # and the same call may well succeed now.
        return Busy("The call collided with a concurrent change in the database and was "
                    "undone (nothing changed); retry it", retry_after=0.1,
                    reason="deadlock" if isinstance(exc, asyncpg.DeadlockDetectedError)
                    else "serialization")
    if isinstance(exc, UNAVAILABLE_ERRORS) or connection_closed(exc):
        return Unavailable()
    return None


def rpc_method(params: type[Params], permission: Permission, name: str | None = None, *,
               run_db: DbMethod | None, tenant_must_exist: bool, result: type[BaseModel]):
    """Register `async def handler(ctx, params) -> dict` as a JSON-RPC method. Every method
    declares who may call it (`permission`), whether a pipeline run's `db` may (`run_db`),
    whether a missing tenant must answer not found (`tenant_must_exist`) and the model of its
    result (see api/results.py); none has a default, and a declaration that cannot hold is
    refused here, at import."""
    _check_declaration(params, permission, run_db, tenant_must_exist, result)

    def decorate(handler: Handler) -> Handler:
        method_name = name or handler.__name__
        if method_name in REGISTRY:
            raise RuntimeError(f"method registered twice: {method_name}")
        summary = (inspect.getdoc(handler) or "").split("\n")[0]
        REGISTRY[method_name] = MethodSpec(method_name, params, permission, run_db,
                                           tenant_must_exist, handler, summary, result)
        return handler

    return decorate


def _check_declaration(params: type[Params], permission: Permission, run_db: DbMethod | None,
                       tenant_must_exist: bool, result: type[BaseModel]) -> None:
    if not isinstance(permission, Permission):
        raise TypeError("rpc_method needs a Permission (AUTHENTICATED, PLATFORM_ADMIN, "
                        "tenant_role(...))")
    if not (isinstance(result, type) and issubclass(result, BaseModel)):
        raise TypeError("rpc_method needs result=<a pydantic model of the result>")
    if not (run_db is None or isinstance(run_db, DbMethod)):
        raise TypeError("rpc_method needs run_db=None or run_db=db_method(<positional params>)")
    if not isinstance(tenant_must_exist, bool):
        raise TypeError("rpc_method needs tenant_must_exist=True or False")
    scoped = permission.kind == "tenant"
    if scoped and permission.tenant_param not in params.model_fields:
        raise TypeError(f"{params.__name__} has no {permission.tenant_param} for the tenant check")
    if tenant_must_exist and not scoped:
        raise TypeError("tenant_must_exist needs a tenant-scoped permission (tenant_role)")
    if run_db is not None:  # the sandbox worker fills in tenant_id: the run's own tenant
        if not scoped or permission.tenant_param != "tenant_id":
            raise TypeError("run_db needs a tenant_role permission on tenant_id")
        positional = set(run_db.positional)
        unknown = (positional - set(_wire_names(params))) | (positional & {"tenant_id"})
        if unknown:
            raise TypeError(f"run_db names params {params.__name__} cannot take by position: "
                            f"{sorted(unknown)}")


def roles_that_may(method: str) -> frozenset[str]:
    """The tenant roles that may call a tenant-scoped `method` (as declared at its
    registration): what a trigger's creator must still hold for each run (run_pipeline)."""
    needed = REGISTRY[method].permission.role
    assert needed is not None, f"{method} is not tenant-scoped"
    return frozenset(r for r, rank in ROLE_RANK.items() if rank >= ROLE_RANK[needed])


def run_db_methods() -> dict[str, list[str]]:
    """What a pipeline run's `db` offers: method -> params taken by position. Sent to the
    sandbox worker with every run (runner.PipelineRunner.job), so it never keeps a copy."""
    return {name: list(spec.run_db.positional) for name, spec in REGISTRY.items()
            if spec.run_db is not None}


def record_denied(call: Call, denied: RpcError) -> None:
    """A refused call is counted per interval, source, method and outcome (audit/denied_calls.py),
    never by the tenant it names."""
    call.state.denied.note(source_of(call.request.known_principal, call.request.client_address),
                           call.method, denied.data["type"])


async def authorize(ctx, spec: MethodSpec, params: Params) -> None:
    """Raise unless the caller may call this method on these params, as its registration
    declares. A tenant the caller has no role in answers exactly like a missing tenant."""
    principal = ctx.known_principal or await ctx.principal()  # (no coroutine once known)
    if principal.run is not None and spec.run_db is None:
        raise Forbidden(f"A pipeline run's db object cannot call {spec.name}",
                        required_role="api_key")
    permission = spec.permission
    if permission.kind == "authenticated" or principal.is_platform_admin:
        return
    if permission.kind == "platform_admin":
        raise Forbidden("This method needs a platform admin", required_role="platform_admin")
    tenant_id = getattr(params, permission.tenant_param)
    role = await ctx.role_in(tenant_id)
    if role is None:
        raise NotFound("tenant", tenant_id)
    if ROLE_RANK[role] < ROLE_RANK[permission.role or "viewer"]:
        raise Forbidden(f"This method needs the {permission.role} role or higher in the tenant "
                        f"(yours: {role})", required_role=permission.role, role=role)


def tenant_params() -> dict[str, str]:
    """Method -> the param naming its tenant (tenant-scoped methods), for the access log."""
    return {name: spec.permission.tenant_param for name, spec in REGISTRY.items()
            if spec.permission.kind == "tenant"}


def _wire_names(model: type[Params]) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items()]


def build_dispatch_table() -> dict[str, Callable]:
    """What transport/protocol.py dispatches to: `await call(context, *args, **kwargs)`
    answers the result or raises an RpcError (never anything else)."""
    return {name: _make_callable(spec) for name, spec in REGISTRY.items()}


def binding_error(names: frozenset | tuple, args: tuple, kwargs: dict) -> InvalidParams | None:
    """The error for params a method with these wire names cannot take (more by position
    than it has, a name it does not have), else None. (JSON-RPC params come either by
    position or by name, never both.)"""
    if len(args) > len(names):
        return InvalidParams.field("params", "too many positional arguments")
    for key in kwargs:
        if key not in names:
            return InvalidParams.field(key, "is not a parameter of this method")
    return None


def without_params(method: Callable[[Any], Awaitable[dict]]) -> Callable:
    """A dispatch-table callable for a method that takes no params (rpc.discover)."""
    async def call(ctx, /, *args, **kwargs):
        problem = binding_error((), args, kwargs)
        if problem is not None:
            raise problem
        return await method(ctx)
    return call


def _make_callable(spec: MethodSpec) -> Callable:
    names = _wire_names(spec.params_model)
    tenant_param = spec.permission.tenant_param if spec.permission.kind == "tenant" else None
    name_set = frozenset(names)

    async def call(ctx, /, *args, **kwargs):
        started = time.perf_counter()
        problem = binding_error(name_set, args, kwargs)
        if problem is not None:
            ctx.state.metrics.observe(spec.name, INVALID_PARAMS, time.perf_counter() - started)
            raise problem
        if args:  # by position
            raw = dict(zip(names, args))
            raw.update(kwargs)
        else:
            raw = kwargs  # a fresh dict of this call's own
        outcome = None
        try:  # (one coroutine for the whole call: each level costs on every call)
            try:
                params = spec.params_model.model_validate(raw)
            except ValidationError as exc:
                raise InvalidParams(errors=validation_errors(exc)) from None
            this_call = Call(ctx, spec.name, params, tenant_param)
            try:
                try:
                    await authorize(ctx, spec, params)
                except (Unauthenticated, Forbidden, NotFound) as denied:
                    record_denied(this_call, denied)
                    raise
                if ctx.state.limits.enabled:
                    await ctx.state.limits.admit_call(
                        await ctx.principal(),
                        getattr(params, tenant_param) if tenant_param else None)
                return await spec.handler(this_call, params)
            except RpcError:
                raise
            except Exception as exc:  # noqa: BLE001 - everything else must not leak
                mapped = translate_database_error(exc)
                if mapped is not None:
                    if mapped.code == INTERNAL_ERROR:  # unavailable, timeout: findable in the log
                        log.warning("%s in %s (request_id=%s): %r", mapped.data["type"],
                                    spec.name, ctx.request_id, exc)
                        mapped.data["request_id"] = ctx.request_id
                    raise mapped from None
                log.exception("unexpected error in %s (request_id=%s)", spec.name,
                              ctx.request_id)
                raise RpcError("Internal error", request_id=ctx.request_id) from None
        except RpcError as exc:
            outcome = exc.code
            raise
        finally:
            ctx.state.metrics.observe(spec.name, outcome, time.perf_counter() - started)

    call.__name__ = spec.name
    return call
