"""`rpc.discover`: an OpenRPC document of every registered method, generated from the
pydantic params and result models the handlers are registered with (no hand-written copy)."""
from __future__ import annotations

from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from typing import Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from rpc_server.api.registry import REGISTRY
from rpc_server.security.auth import Permission

OPENRPC_VERSION = "1.3.2"
REF = "#/components/schemas/{model}"

ERRORS = {
    "InvalidParams": (-32602, "Invalid params: data.errors lists each field"),
    "Internal": (-32603, "Internal error, database unavailable or statement timeout "
                         "(data.type: internal, unavailable, timeout)"),
    "NotFound": (-32001, "Not found (also: a tenant the caller has no role in)"),
    "Unauthenticated": (-32002, "No or invalid credentials"),
    "Forbidden": (-32003, "The caller's role is too low"),
    "Conflict": (-32004, "Duplicate, version mismatch or a state that forbids the change"),
    "RateLimited": (-32005, "Too many requests of this kind; data.retry_after in seconds"),
    "QueryRejected": (-32006, "A query was refused (data.layer) or hit a limit"),
    "PipelineFailed": (-32007, "A pipeline run did not succeed; data.run holds the record"),
}
COMMON_ERRORS = ("InvalidParams", "Internal", "Unauthenticated", "Forbidden", "NotFound",
                 "RateLimited")
EXTRA_ERRORS = {
    "execute_query": ("QueryRejected",), "traverse": ("QueryRejected",),
    "shortest_path": ("QueryRejected",), "run_pipeline": ("PipelineFailed", "Conflict"),
}
READ_PREFIXES = ("get_", "list_", "query_", "verify_")


def who_may_call(permission: Permission) -> str:
    if permission.kind == "authenticated":
        return "any authenticated caller"
    if permission.kind == "platform_admin":
        return "platform admins"
    return (f"members of the tenant ({permission.tenant_param}) with the {permission.role} "
            "role or higher, and platform admins")


def _version() -> str:
    try:
        return version("flexdb")
    except PackageNotFoundError:
        return "0.0.0"


def _method(spec, params_schema: dict, result_schema: dict) -> dict:
    required = set(params_schema.get("required", ()))
    params = [{"name": name, "required": name in required, "schema": schema}
              for name, schema in params_schema.get("properties", {}).items()]
    # Writes can conflict (duplicates, versions, states); reads cannot.
    default = () if spec.name.startswith(READ_PREFIXES) else ("Conflict",)
    errors = COMMON_ERRORS + EXTRA_ERRORS.get(spec.name, default)
    return {
        "name": spec.name,
        "summary": spec.summary,
        "description": f"{spec.summary} Who may call it: {who_may_call(spec.permission)}.",
        "paramStructure": "either",
        "params": params,
        "result": {"name": "result", "schema": result_schema},
        "errors": [{"$ref": f"#/components/errors/{name}"} for name in errors],
        "x-permission": {"kind": spec.permission.kind, "role": spec.permission.role},
    }


@lru_cache(maxsize=1)
def openrpc_document() -> dict:
    specs = sorted(REGISTRY.values(), key=lambda s: s.name)
    keys: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
        (s.params_model, "validation") for s in specs]
    keys += [(s.result_model, "serialization") for s in specs]
    schemas, definitions = models_json_schema(keys, ref_template=REF)
    components = dict(definitions.get("$defs", {}))

    def resolve(schema: dict) -> dict:
        ref = schema.get("$ref", "")
        return components[ref.rsplit("/", 1)[-1]] if ref.startswith("#/components/") else schema

    methods = [_method(s, resolve(schemas[(s.params_model, "validation")]),
                       schemas[(s.result_model, "serialization")]) for s in specs]
    return {
        "openrpc": OPENRPC_VERSION,
        "info": {"title": "flexdb JSON-RPC API", "version": _version(),
                 "description": "Multi-tenant graph-document database. Authenticate with "
                                "Authorization: Bearer <API key>. Params go by name "
                                "(an object) or by position in the order listed."},
        "servers": [{"name": "this server", "url": "/jsonrpc"}],
        "methods": methods,
        "components": {
            "schemas": components,
            "errors": {name: {"code": code, "message": text}
                       for name, (code, text) in ERRORS.items()},
        },
    }


async def rpc_discover(ctx) -> dict:
    """The OpenRPC document (public, like the method list in the README)."""
    return openrpc_document()
