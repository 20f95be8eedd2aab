"""JSON-RPC 2.0 framing and dispatch: parse, enforce limits, validate each batch member on
its own, run members concurrently, and serialize responses in order.

Dispatch is a table lookup: `await methods[name](context, *args, **kwargs)` answers the
result or raises an RpcError (api/registry.py builds the table; each callable checks its own
params). Anything else raised is a bug: logged, answered -32603 with the request id."""
from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, Callable

from rpc_server.errors import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    RpcError,
)
from rpc_server.storage.response_budget import response_too_large
from rpc_server.transport.json_codec import JSONError, JSONTooDeep, OutOfRange, dumps, loads

log = logging.getLogger(__name__)
_ERROR_CODE = re.compile(rb'\{"jsonrpc":"2\.0","error":\{"code":(-?[0-9]+)[,}]')


def error_response(code: int, message: str, id: Any = None, data: Any = None) -> dict:
    error = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "error": error, "id": id}


def invalid_request(reason: str, id: Any = None, **details) -> dict:
    return error_response(INVALID_REQUEST, "Invalid Request", id,
                          {"type": "invalid_request", "reason": reason, **details})


def internal_error(request_id: str, id: Any = None) -> dict:
    return error_response(INTERNAL_ERROR, "Internal error", id,
                          {"type": "internal", "request_id": request_id})


def note(context: Any, method: str, code: int | None, tenant: str | None = None) -> None:
    """Record a call (method, error code or None, tenant id or None) for the access log."""
    calls = getattr(context, "calls", None)
    if calls is not None:
        calls.append((method[:100], code, tenant[:40] if tenant else None))


async def _prepare_batch(context: Any, members: list) -> None:
    """Before a batch's members run: authenticate the caller once, so the members find it
    (or the failure, which each member reports) without waiting, and let the context read
    ahead what the members will ask for (see RequestContext.prepare_batch)."""
    prepare = getattr(context, "prepare_batch", None)
    if prepare is not None:
        await prepare(members)


def _valid_id(value: Any) -> bool:
    return value is None or (isinstance(value, (str, int, float)) and not isinstance(value, bool))


class Dispatcher:
    def __init__(self, methods: dict[str, Callable], *, max_batch: int,
                 max_response_bytes: int, tenant_params: dict[str, str] | None = None):
        self.methods = methods
        self.tenant_params = tenant_params or {}
        self.max_batch = max_batch
        self.max_response_bytes = max_response_bytes

    async def handle(self, body: bytes, context: Any) -> bytes | None:
        """The response body for a request body, or None when nothing is to be sent back
        (only notifications). Nesting is not limited here: each document param limits its
        own (params.Documents), so one too deep is invalid params naming it."""
        try:
            payload = loads(body)
        except JSONTooDeep as exc:
            note(context, "-", INVALID_REQUEST)
            return dumps(invalid_request(f"JSON {exc}"))
        except JSONError as exc:
            note(context, "-", PARSE_ERROR)
            return dumps(error_response(PARSE_ERROR, "Parse error", None,
                                        {"type": "parse_error", "reason": str(exc)}))
        if isinstance(payload, list):
            if not payload:
                note(context, "-", INVALID_REQUEST)
                return dumps(invalid_request("empty batch"))
            if len(payload) > self.max_batch:
                note(context, "-", INVALID_REQUEST)
                return dumps(invalid_request(
                    f"batch of {len(payload)} requests exceeds the limit of {self.max_batch}",
                    max_batch=self.max_batch))
            context.batch = len(payload) > 1
            if context.batch:
                await _prepare_batch(context, payload)
            answers = await self._run_members(payload, context)
            replies = self._within_budget(payload, answers)
            return b"[" + b",".join(replies) + b"]" if replies else None
        reply = await self.handle_one(payload, context)
        if reply is None or len(reply) + 3 <= self.max_response_bytes:  # (as _within_budget)
            return reply
        return self._within_budget([payload], [reply])[0]

    def _within_budget(self, members: list, answers: list) -> list[bytes]:
        """The replies, in order, with each one that would take the response past its byte
        budget replaced by a response_too_large error of its own (the backstop: calls that
        read documents stop within the budget before reading them)."""
        replies, size = [], 2
        for member, reply in zip(members, answers):
            if reply is None:
                continue
            size += len(reply) + 1
            if size > self.max_response_bytes:
                size -= len(reply)
                error = response_too_large(self.max_response_bytes)
                reply = dumps(error_response(error.code, error.message,
                                             member.get("id") if type(member) is dict else None,
                                             error.data))
                size += len(reply)
            replies.append(reply)
        return replies

    async def _run_members(self, members: list, context: Any) -> list:
        """A batch's answers, in order. Members run concurrently, each in a Task, except
        those the context expects to answer at once (read ahead): they run one after the
        other in this task, which saves a Task, a scheduling round and a wake-up each."""
        at_once = getattr(context, "answers_at_once", None)
        answers: list = [None] * len(members)
        tasks = {i: asyncio.ensure_future(self.handle_one(m, context))
                 for i, m in enumerate(members) if at_once is None or not at_once(m)}
        try:
            for i, member in enumerate(members):
                if i not in tasks:
                    answers[i] = await self.handle_one(member, context)
            if tasks:
                for i, answer in zip(tasks, await asyncio.gather(*tasks.values())):
                    answers[i] = answer
        except BaseException:
            for task in tasks.values():
                task.cancel()
            raise
        return answers

    async def handle_one(self, member: Any, context: Any) -> bytes | None:
        """One request object in, its serialized response (or None for a notification) out;
        the call is noted for the access log. (One coroutine per member: each level costs
        on every call of a batch.)"""
        reply = self._refusal(member)
        if reply is None:
            method, params = member["method"], member.get("params", [])
            handler = self.methods.get(method)
            if handler is None:
                wire = error_response(METHOD_NOT_FOUND, "Method not found", None,
                                      {"type": "method_not_found", "method": method})
            else:  # (inline, not a coroutine of its own: each level costs on every call)
                try:
                    result = await (handler(context, **params) if type(params) is dict
                                    else handler(context, *params))
                    wire = {"jsonrpc": "2.0", "result": result, "id": None}
                except RpcError as exc:
                    wire = error_response(exc.code, exc.message, None, exc.data)
                except Exception:  # noqa: BLE001 - a bug: logged; the caller gets a request id
                    log.exception("unexpected error in %s (request_id=%s)", method,
                                  context.request_id)
                    wire = internal_error(context.request_id)
            if "id" in member:  # else a notification: nothing is sent back
                wire["id"] = member["id"]
                reply = self._serialize(wire, method, context)
        self._note(member, reply, context)
        return reply

    def _refusal(self, member: Any) -> bytes | None:
        """The Invalid Request answer for a malformed request object, else None."""
        if not isinstance(member, dict):
            return dumps(invalid_request("a request must be a JSON object"))
        id = member.get("id")
        if isinstance(id, OutOfRange):
            return dumps(invalid_request("id is a number out of range: integers must fit "
                                         "in 64 bits"))
        if not _valid_id(id):
            return dumps(invalid_request("id must be a string, a number or null"))
        if member.get("jsonrpc") != "2.0":
            return dumps(invalid_request('"jsonrpc" must be exactly "2.0"', id))
        if not isinstance(member.get("method"), str):
            return dumps(invalid_request('"method" must be a string', id))
        if not isinstance(member.get("params", []), (list, dict)):
            return dumps(invalid_request('"params" must be an array or an object', id))
        return None

    def _serialize(self, wire: dict, method: str, context: Any) -> bytes:
        try:
            return dumps(wire)
        except (TypeError, ValueError):  # e.g. nesting orjson cannot write
            log.exception("cannot serialize the result of %s (request_id=%s)",
                          method, context.request_id)
            return dumps(internal_error(context.request_id, wire["id"]))

    def _note(self, member: Any, reply: bytes | None, context: Any) -> None:
        if not isinstance(member, dict):
            note(context, "-", INVALID_REQUEST)
            return
        method = member.get("method")
        if not isinstance(method, str):
            method = "-"
        params = member.get("params")
        tenant = None
        if isinstance(params, dict) and method in self.tenant_params:
            tenant = params.get(self.tenant_params[method])
        code = None
        if reply is not None and reply.startswith(b'{"jsonrpc":"2.0","error"'):
            # The code is read off the reply's start: an error may carry megabytes (a failed
            # run's input and result), which need not be parsed again to count it.
            found = _ERROR_CODE.match(reply)
            code = int(found[1]) if found else loads(reply)["error"]["code"]
        note(context, method, code, tenant if isinstance(tenant, str) else None)
