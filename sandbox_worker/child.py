"""One pipeline run in a process of its own (forked warm by the zygote, used once, then gone).

Protocol with the worker, JSON lines over the child's own socket:
  child -> worker  {"ready": true}                         once imports are done
  worker -> child  {"code", "input", "db_methods", "cpu_s", "memory_mb", "max_output",
                    "max_result", "map"}
  child -> worker  {"call": method, "params": {...}}        a db call ...
  worker -> child  {"result": ...} | {"error": {...}}        ... and its answer
  child -> worker  {"done": {"status", "result", "error", "output", "cpu_ms", "peak_memory_kb"}}

Limits are set after the job arrives and before user code runs: CPU seconds, address space,
no file writes, no new file descriptors, no new processes, no core dumps. The worker enforces
the wall clock and kills the process when it runs over.

Map mode (`"map": true`, for jobs: rpc_server/pipelines/jobs.py): the input is a list and
run() is called once per item, in this one process; the result is a list with, per item,
{"result": what run() returned} or {"error": {"type", "message"}} (that item's exception, or
a result that is not storable). The limits (CPU, memory, wall clock, output, result size)
are the whole batch's: one over them fails the run as a whole."""
from __future__ import annotations

import _strptime  # noqa: F401 - datetime.strptime imports it lazily: no file opens later
import encodings.idna  # noqa: F401 - codecs user code may ask for, loaded before the limits
import encodings.latin_1  # noqa: F401
import encodings.utf_16  # noqa: F401
import encodings.utf_32  # noqa: F401
import json
import os
import resource
import sys
import traceback
import unicodedata  # noqa: F401

from rpc_server.transport.json_text import stored_size_over
from sandbox_worker.policy import BoundedPrinter, DbError, compile_pipeline, make_globals

PIPELINE_FILE = "<pipeline>"


def make_db(call, methods: dict[str, list[str]]):
    """The `db` object: public methods only; the channel lives in a closure, out of reach
    (RestrictedPython refuses every `_` name, so __closure__ and friends too). `methods`
    (name -> params taken by position) comes with the job: rpc_server's registry declares
    what a run's db may call (api/registry.run_db_methods), never a list kept here."""

    class Db:
        __slots__ = ()

    def bind(name, positional):
        def method(self, *args, **kwargs):
            if len(args) > len(positional):
                raise TypeError(f"{name}() takes at most {len(positional)} positional "
                                "arguments")
            params = dict(zip(positional, args))
            params.update(kwargs)
            return call(name, params)
        method.__name__ = name
        return method

    for name, positional in methods.items():
        if name.isidentifier() and not name.startswith("_"):
            setattr(Db, name, bind(name, tuple(positional)))
    return Db()


class Channel:
    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    def send(self, message: dict) -> None:
        self.writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
        self.writer.flush()

    def receive(self) -> dict:
        line = self.reader.readline()
        if not line:
            os._exit(3)  # the worker is gone
        return json.loads(line)

    def call(self, method: str, params: dict):
        try:
            self.send({"call": method, "params": params})
        except (TypeError, ValueError) as exc:
            raise DbError(f"{method}: params must be JSON ({exc})") from None
        reply = self.receive()
        if "error" in reply:
            error = reply["error"]
            raise DbError(error.get("message", "db call failed"), error.get("code"),
                          (error.get("data") or {}).get("type"))
        return reply["result"]


def set_limits(cpu_s: int, memory_mb: int) -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    with open("/proc/self/statm") as statm:
        current = int(statm.read().split()[0]) * resource.getpagesize()
    space = current + memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (space, space))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    # No free descriptor slot is left below the limit: nothing new can be opened.
    in_use = [int(fd) for fd in os.listdir("/proc/self/fd")]  # (includes the listing's own)
    limit = max(fd for fd in in_use if _is_open(fd)) + 1
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def user_traceback(exc: BaseException) -> str:
    """The exception with the frames of the pipeline's own code only."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == PIPELINE_FILE]
    lines = [f"  line {f.lineno}, in {f.name}" for f in frames]
    message = f"{type(exc).__name__}: {exc}"
    return "\n".join(["Traceback (pipeline code):", *lines, message]) if lines else message


def usage() -> tuple[float, int]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return round((ru.ru_utime + ru.ru_stime) * 1000, 3), ru.ru_maxrss


def execute(job: dict, channel: Channel) -> dict:
    printer = BoundedPrinter(job["max_output"])
    code, errors = compile_pipeline(job["code"])
    if errors:
        return {"status": "failed", "error": {"type": "compile_error",
                                              "message": errors[0].message}}
    db = make_db(channel.call, job["db_methods"])
    env = make_globals(printer)
    try:
        exec(code, env)  # noqa: S102 - restricted code object, restricted globals
        if job.get("map"):
            result = map_items(env["run"], job["input"], db)
        else:
            result = env["run"](job["input"], db)
        text = json.dumps(result, separators=(",", ":"), allow_nan=False)
    except MemoryError:
        return {"status": "failed", "error": {"type": "memory",
                                              "message": "the run exceeded its memory limit"},
                "output": printer.text()}
    except RecursionError:
        return {"status": "failed", "error": {"type": "recursion",
                                              "message": "maximum recursion depth exceeded"},
                "output": printer.text()}
    except Exception as exc:  # noqa: BLE001 - user code's own errors
        return {"status": "failed", "error": {"type": "exception",
                                              "message": f"{type(exc).__name__}: {exc}",
                                              "traceback": user_traceback(exc)},
                "output": printer.text()}
    except BaseException as exc:  # SystemExit, KeyboardInterrupt raised by user code
        return {"status": "failed", "error": {"type": "exception",
                                              "message": type(exc).__name__},
                "output": printer.text()}
    problem = unstorable(result)
    if problem:
        return {"status": "failed", "error": {"type": "result_not_storable",
                                              "message": f"the result {problem}"},
                "output": printer.text()}
    # counted as stored: PostgreSQL returns 1e-300 as 302 characters (0.000…1), and a
    # space after each comma and colon
    if stored_size_over(text.encode(), job["max_result"]):
        return {"status": "failed", "error": {"type": "result_too_large",
                                              "message": f"the result is larger than "
                                                         f"{job['max_result']} bytes as "
                                                         "stored (numbers in plain notation)"},
                "output": printer.text()}
    return {"status": "succeeded", "result": json.loads(text), "output": printer.text()}


def map_items(run, items, db) -> list:
    """Map mode: run(item, db) for each item, each item's outcome on its own. MemoryError
    (the batch's memory limit) and what is not an Exception end the whole run."""
    if not isinstance(items, list):
        raise TypeError("a map run's input must be a list")
    outcomes: list = []
    for item in items:
        try:
            value = run(item, db)
            problem = unstorable(value)
            if problem is None:
                json.dumps(value, allow_nan=False)  # (not JSON: a TypeError or ValueError)
        except MemoryError:
            raise
        except RecursionError:
            outcomes.append({"error": {"type": "recursion",
                                       "message": "maximum recursion depth exceeded"}})
            continue
        except Exception as exc:  # noqa: BLE001 - user code's own errors, per item
            message = storable_text(f"{type(exc).__name__}: {exc}")[:MAX_MESSAGE]
            outcomes.append({"error": {"type": "exception", "message": message}})
            continue
        if problem is not None:
            outcomes.append({"error": {"type": "result_not_storable",
                                       "message": f"the result {problem}"}})
        else:
            outcomes.append({"result": value})
    return outcomes


INT64 = 2**63


def unstorable(value) -> str | None:
    """Why PostgreSQL's jsonb (and the JSON on the way) cannot hold this result, or None."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, bool) or item is None or isinstance(item, float):
            continue
        if isinstance(item, int):
            if not -INT64 <= item < INT64:
                return "holds an integer beyond 64 bits (return it as a string)"
        elif isinstance(item, str):
            if "\x00" in item:
                return "holds the character U+0000"
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "holds text that is not valid Unicode (a lone surrogate)"
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


MAX_MESSAGE = 4096
MAX_TRACEBACK = 16_384
# Where Python and the project live: never shown to user code's callers.
HOST_PATHS = sorted({sys.prefix, sys.base_prefix, sys.exec_prefix,
                     os.path.dirname(os.path.dirname(os.path.abspath(__file__)))},
                    key=len, reverse=True)


def storable_text(text: str) -> str:
    """Output and messages as text PostgreSQL can store (no U+0000, valid UTF-8), without
    the host's paths."""
    for path in HOST_PATHS:
        if len(path) > 1:
            text = text.replace(path, "<host>")
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def sanitize(outcome: dict) -> dict:
    outcome["output"] = storable_text(outcome.get("output", ""))
    error = outcome.get("error")
    if isinstance(error, dict):
        for key, limit in (("message", MAX_MESSAGE), ("traceback", MAX_TRACEBACK)):
            if key in error:
                text = storable_text(str(error[key]))
                error[key] = text if len(text) <= limit else text[:limit] + " [truncated]"
    return outcome


def serve_one(reader, writer) -> None:
    """Announce readiness, take one job, run it, report, and end the process."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # nothing user code does can reach the protocol channel by accident
        os.dup2(devnull, fd)
    os.close(devnull)
    channel = Channel(reader, writer)
    channel.send({"ready": True})
    job = channel.receive()
    sys.setrecursionlimit(400)
    set_limits(job["cpu_s"], job["memory_mb"])
    cpu_before, _ = usage()
    outcome = sanitize(execute(job, channel))
    cpu_after, outcome["peak_memory_kb"] = usage()
    outcome["cpu_ms"] = round(cpu_after - cpu_before, 3)
    try:
        channel.send({"done": outcome})
    except (TypeError, ValueError, MemoryError):
        channel.send({"done": {"status": "failed", "error": {
            "type": "exception", "message": "the outcome could not be sent"}}})
    os._exit(0)  # no cleanup of user objects (generators, finalizers) after the run


def main() -> None:
    """A child started on its own, talking over stdin/stdout."""
    serve_one(os.fdopen(os.dup(0), "rb"), os.fdopen(os.dup(1), "wb"))


if __name__ == "__main__":
    main()
