"""JSON-RPC 2.0 framing: parse, enforce limits, validate each batch member on its own,
run members concurrently, and serialize responses in order.

jsonrpcserver dispatches each valid member (method lookup, argument binding, JsonRpcError
mapping). Its own validator rejects a whole batch for one bad member, so members are
validated here instead."""
from __future__ import annotations

import asyncio
from typing import Any, Callable

import orjson
from jsonrpcserver.async_dispatcher import dispatch_request
from jsonrpcserver.dispatcher import to_response
from jsonrpcserver.request import Request
from jsonrpcserver.sentinels import NODATA, NOID
from oslash.either import Left

from .errors import (INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND,
                     PARSE_ERROR)


def _default(value: Any) -> Any:
    # asyncpg returns its own UUID class, which orjson does not know.
    if hasattr(value, "hex") and type(value).__name__ == "UUID":
        return str(value)
    raise TypeError(f"cannot serialize {type(value).__name__}")


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_default)


def error_response(code: int, message: str, id: Any = None, data: Any = None) -> dict:
    error = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "error": error, "id": id}


def invalid_request(reason: str, id: Any = None, **details) -> dict:
    return error_response(INVALID_REQUEST, "Invalid Request", id,
                          {"type": "invalid_request", "reason": reason, **details})


def json_depth_exceeds(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, (dict, list)))
    return False


def _valid_id(value: Any) -> bool:
    return value is None or (isinstance(value, (str, int, float)) and not isinstance(value, bool))


class Dispatcher:
    def __init__(self, methods: dict[str, Callable], *, max_batch: int, max_depth: int):
        self.methods = methods
        self.max_batch = max_batch
        self.max_depth = max_depth

    async def handle(self, body: bytes, context: Any) -> bytes | None:
        """The response body for a request body, or None when nothing is to be sent back
        (only notifications)."""
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return dumps(error_response(
                PARSE_ERROR, "Parse error", None, {"type": "parse_error", "reason": str(exc)}))
        if json_depth_exceeds(payload, self.max_depth):
            return dumps(invalid_request(
                f"JSON nesting deeper than {self.max_depth} levels", max_depth=self.max_depth))
        if isinstance(payload, list):
            if not payload:
                return dumps(invalid_request("empty batch"))
            if len(payload) > self.max_batch:
                return dumps(invalid_request(
                    f"batch of {len(payload)} requests exceeds the limit of {self.max_batch}",
                    max_batch=self.max_batch))
            responses = await asyncio.gather(*(self.handle_one(m, context) for m in payload))
            replies = [r for r in responses if r is not None]
            return dumps(replies) if replies else None
        response = await self.handle_one(payload, context)
        return None if response is None else dumps(response)

    async def handle_one(self, member: Any, context: Any) -> dict | None:
        if not isinstance(member, dict):
            return invalid_request("a request must be a JSON object")
        id = member.get("id")
        if not _valid_id(id):
            return invalid_request("id must be a string, a number or null")
        if member.get("jsonrpc") != "2.0":
            return invalid_request('"jsonrpc" must be exactly "2.0"', id)
        method = member.get("method")
        if not isinstance(method, str):
            return invalid_request('"method" must be a string', id)
        params = member.get("params", [])
        if not isinstance(params, (list, dict)):
            return invalid_request('"params" must be an array or an object', id)
        is_notification = "id" not in member
        request = Request(method, params, NOID if is_notification else id)
        _, result = await dispatch_request(self.methods, context, request)
        if is_notification:
            return None
        return self._to_wire(to_response(request, result), method, context)

    @staticmethod
    def _to_wire(response, method: str, context: Any) -> dict:
        if not isinstance(response, Left):
            success = response._value
            return {"jsonrpc": "2.0", "result": success.result, "id": success.id}
        error = response._error
        data = None if error.data is NODATA else error.data
        if error.code == METHOD_NOT_FOUND:
            data = {"type": "method_not_found", "method": method}
        elif error.code == INVALID_PARAMS and isinstance(data, str):
            # From jsonrpcserver's signature check: unknown names or too many positions.
            data = {"type": "invalid_params", "errors": [{"field": "params", "message": data}]}
            return error_response(INVALID_PARAMS, f"Invalid params: {data['errors'][0]['message']}",
                                  error.id, data)
        elif error.code == INTERNAL_ERROR and not isinstance(data, dict):
            # Never pass an exception text through; the log has the detail.
            data = {"type": "internal", "request_id": context.request_id}
        return error_response(error.code, error.message, error.id, data)
