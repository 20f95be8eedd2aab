"""An attacker's corpus against the pipeline sandbox (sandbox_worker/): every test tries to get
out of RestrictedPython, reach the worker's or the server's secrets, another tenant's data,
or take the worker down, and asserts that the attempt FAILED, for the right reason (a compile
error naming the construct, or a run that ended with an error showing which guard fired),
that nothing of the host or its secrets leaked into the run record, and, after the nastier
ones, that the worker still runs an ordinary pipeline.

No attack here gets out of the sandbox. Tests marked xfail(strict=True) document bugs and
hardening gaps found on the way (none an escape; the reason says what happens and what to
change). They assert the safe behaviour, so they start failing (XPASS, strict) once the hole
is closed: then drop the mark.

test_child_death_reported_after_the_deadline pauses the session's sandbox zygote (SIGSTOP, then
SIGCONT in a finally) for 1.5 s to make a race deterministic.

Order matters in one place: test_concurrent_runs_beyond_the_slots_get_busy comes first, while
the worker's slots are free; the db call flood (about 15-20 s, queued with wait: false so that
the server's queue runs it beside the other tests) is started right after it and collected by
the last test."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid

import asyncpg
import httpx
import pytest

import rpc_server.methods  # noqa: F401  (registers every method)
from rpc_server.client import PipelineFailed, RpcError

from .conftest import TEST_SANDBOX_SECRET, TEST_SECRET, make_tenant, unique

# ---------------------------------------------------------------- helpers

ALLOWED_IMPORTS = ("collections, datetime, decimal, fractions, functools, itertools, json, "
                   "math, random, re, statistics, string")
# Strings that must never show up in anything a run hands back (result, output, error,
# db operations): the shared secrets, execution tokens, API keys, and host paths.
LEAK_MARKERS = (TEST_SANDBOX_SECRET, TEST_SECRET, "fdbx_", "fdb_", "Bearer ", "/work/",
                "/root", "/home/", "/usr/", "site-packages", ".pyenv", "FLEXDB_",
                "postgresql://")
DEFAULT_TIMEOUT_MS = 2000
DEFAULT_MEMORY_MB = 64


def pipeline_code(body: str) -> str:
    """`body` as the body of run(input, db), unless it defines run itself."""
    if "def run(" in body:
        return body
    return "def run(input, db):\n" + "".join(f"    {line}\n" for line in body.splitlines())


async def create(rpc, tenant_id: str, body: str, timeout_ms: int = DEFAULT_TIMEOUT_MS,
                 memory_mb: int = DEFAULT_MEMORY_MB) -> str:
    result = await rpc.call("create_pipeline", {
        "tenant_id": tenant_id, "name": unique("attack"), "code": pipeline_code(body),
        "timeout_ms": timeout_ms, "memory_mb": memory_mb})
    return result["pipeline"]["id"]


async def start(rpc, tenant_id: str, pipeline_id: str, input=None) -> dict:
    """Run with wait: true; the run record whether it succeeded or not (-32007)."""
    try:
        result = await rpc.call("run_pipeline", {"tenant_id": tenant_id,
                                                 "pipeline_id": pipeline_id, "input": input})
    except PipelineFailed as exc:
        assert exc.code == -32007 and exc.type == "pipeline_failed", exc
        run = exc.data["run"]
        assert run["status"] != "succeeded"
        assert run["status"] in exc.message, exc.message
        return run
    return result["run"]


async def attack(rpc, tenant_id: str, body: str, input=None, **limits) -> dict:
    run = await start(rpc, tenant_id, await create(rpc, tenant_id, body, **limits), input)
    assert_no_leak(run)
    return run


async def attack_as_stored(rpc, database_url: str, tenant_id: str, body: str,
                           **limits) -> tuple[dict, list[dict] | None]:
    """Run `body` even if saving refuses it: then it goes straight into the pipelines table,
    as code saved before the save-time check existed would be (runs do not repeat that
    check). So the run-time guards are proven on their own. (run, the save's errors or None)"""
    try:
        return await attack(rpc, tenant_id, body, **limits), None
    except RpcError as exc:
        if exc.code != -32602:
            raise
    errors = await refused_at_compile(rpc, tenant_id, body)
    pipeline_id = await create(rpc, tenant_id, "return 'placeholder'", **limits)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("UPDATE pipelines SET code = $1 WHERE tenant_id = $2 AND id = $3",
                           pipeline_code(body), uuid.UUID(tenant_id), uuid.UUID(pipeline_id))
    finally:
        await conn.close()
    run = await start(rpc, tenant_id, pipeline_id)
    assert_no_leak(run)
    return run, errors


async def refused_at_compile(rpc, tenant_id: str, body: str) -> list[dict]:
    """create_pipeline answers -32602 with errors on field `code`; returns them."""
    with pytest.raises(RpcError) as exc:
        await create(rpc, tenant_id, body)
    assert exc.value.code == -32602 and exc.value.type == "invalid_params", exc.value
    errors = exc.value.data["errors"]
    assert errors and all(e["field"] == "code" for e in errors)
    assert_no_leak(errors)
    return errors


def assert_no_leak(anything) -> None:
    text = json.dumps(anything)
    for marker in LEAK_MARKERS:
        assert marker not in text, f"{marker!r} leaked: {text[:2000]}"


def assert_failed(run: dict, error_type: str, *fragments: str) -> None:
    """The run failed with error type `error_type` and a message holding every fragment."""
    assert run["status"] == "failed", run
    assert run["result"] is None
    error = run["error"]
    assert error["type"] == error_type, error
    for fragment in fragments:
        assert fragment in error["message"], (fragment, error)


async def assert_worker_fine(rpc, tenant_id: str) -> None:
    """An ordinary pipeline still runs (the worker and the server carry on)."""
    run = await attack(rpc, tenant_id, "print('fine')\nreturn input * 2", input=21)
    assert run["status"] == "succeeded", run
    assert run["result"] == 42 and run["output"] == "fine\n"


# ------------------------------------------------ 6. concurrency (first: the slots are free)

async def test_concurrent_runs_beyond_the_slots_get_busy(rpc, tenant, server):
    """Six slow runs at once (two each of three tenants: a tenant runs at most
    FLEXDB_PIPELINE_TENANT_RUNNING at once) on a worker with four slots: two get -32005
    busy at once, the others time out on their own, and afterwards runs work again."""
    tenants = [tenant["id"]] + [(await rpc.call("create_tenant", {
        "slug": unique("slots"), "name": "S"}))["tenant"]["id"] for _ in range(2)]
    spins = {t: await create(rpc, t, "while True:\n    pass", timeout_ms=1500)
             for t in tenants}
    began = time.monotonic()

    async def one(tenant_id):
        try:
            return await start(rpc, tenant_id, spins[tenant_id])
        except RpcError as exc:
            exc.tenant_id = tenant_id
            return exc

    outcomes = await asyncio.gather(*[one(t) for t in tenants for _ in range(2)])
    elapsed = time.monotonic() - began
    busy = [o for o in outcomes if isinstance(o, RpcError)]
    runs = [o for o in outcomes if not isinstance(o, RpcError)]
    assert len(busy) >= 2, outcomes
    for exc in busy:
        assert exc.code == -32005 and exc.type == "busy", exc
        assert exc.data["run_id"]
        record = await rpc.call("get_pipeline_run", {"tenant_id": exc.tenant_id,
                                                     "id": exc.data["run_id"]})
        assert record["run"]["status"] == "failed"
        assert record["run"]["error"]["type"] == "busy"
    assert runs and all(r["status"] == "timed_out" for r in runs), runs
    assert elapsed < 8, elapsed  # nothing queued behind the busy ones, nothing hung
    async with httpx.AsyncClient() as http:
        health = (await http.get(server.sandbox.base + "/health")).json()
    assert health["running"] == 0
    await assert_worker_fine(rpc, tenant["id"])


# ------------------------------------------------ 4b. db call flood (in the background)

FLOOD_CALLS = 10_005
_flood: dict = {}


async def _start_flood(rpc) -> None:
    """A run making more db calls than a run may (10,000), queued (wait: false) so that it
    goes on while the other tests run; test_db_call_flood_is_cut_off collects it."""
    if _flood:
        return
    tenant = await make_tenant(rpc)
    pipeline = await create(rpc, tenant["id"], f"""\
answers = {{}}
for i in range({FLOOD_CALLS}):
    try:
        db.get_node('not-a-uuid')
    except DbError as e:
        answers[e.kind] = answers.get(e.kind, 0) + 1
        last = [e.code, e.kind, str(e)]
return [answers, last]""", timeout_ms=60_000)
    queued = await rpc.call("run_pipeline", {"tenant_id": tenant["id"], "pipeline_id": pipeline,
                                             "wait": False})
    _flood.update(tenant_id=tenant["id"], run_id=queued["run"]["id"])


async def test_db_call_flood_started(rpc):
    await _start_flood(rpc)
    assert _flood["run_id"]


# ---------------------------------------------------------------- 1. introspection walks

UNDERSCORE = 'because it starts with "_"'
RESTRICTED = "is a restricted name"

COMPILE_REFUSED = [
    ("subclasses_walk", "return ().__class__.__bases__[0].__subclasses__()", UNDERSCORE),
    ("dunder_import", "return __import__('os')", '"__import__" is an invalid variable name'),
    ("builtins_name", "return __builtins__", '"__builtins__" is an invalid variable name'),
    ("builtins_assign", "__builtins__ = {}\nreturn 1", '"__builtins__" is an invalid'),
    ("module_name", "return __name__", '"__name__" is an invalid variable name'),
    ("func_globals", "f = lambda: 1\nreturn f.__globals__", '"__globals__" is an invalid'),
    ("lambda_code", "return (lambda: 1).__code__.co_consts", '"__code__" is an invalid'),
    ("closure_cells", "return db.get_node.__func__.__closure__[0].cell_contents",
     '"__closure__" is an invalid'),
    ("db_self", "return db.get_node.__self__", '"__self__" is an invalid attribute name'),
    ("db_class", "return db.__class__", '"__class__" is an invalid attribute name'),
    ("db_dict", "return db.__dict__", '"__dict__" is an invalid attribute name'),
    ("dberror_init_globals", "return DbError.__init__.__globals__", UNDERSCORE),
    ("generator_frame", "def g():\n    yield 1\nreturn g().gi_frame.f_back.f_globals",
     '"gi_frame" is a restricted name'),
    ("generator_code", "def g():\n    yield 1\nreturn g().gi_code", '"gi_code" is a restricted'),
    ("frame_back", "return input.f_back", '"f_back" is a restricted name'),
    ("frame_builtins", "return input.f_builtins", '"f_builtins" is a restricted name'),
    ("traceback", "try:\n    1 / 0\nexcept Exception as e:\n    return e.__traceback__",
     '"__traceback__" is an invalid attribute name'),
    ("traceback_frame", "try:\n    1 / 0\nexcept Exception as e:\n    return e.tb_frame",
     '"tb_frame" is a restricted name'),
    ("exception_context", "try:\n    1 / 0\nexcept Exception as e:\n    return e.__context__",
     UNDERSCORE),
    ("fstring_dunder", "return f'{db.__class__.__mro__}'", '"__class__" is an invalid'),
    ("fstring_format_spec", "return f'{input:{db.__class__}}'", UNDERSCORE),
    # NFKC: the parser folds fullwidth low lines into "_", and the check sees the result
    ("fullwidth_dunder", "return db._\uff3fclass\uff3f\uff3f", '"__class__" is an invalid'),
    ("async_def", "async def f():\n    pass\nreturn 1", "async functions are not allowed"),
    # classes are plain records: no metaclass, keywords, decorators or special hooks
    ("class_metaclass", "class A(metaclass=DbError):\n    pass\nreturn 1",
     "class keywords are not allowed"),
    ("class_kwargs", "class A(**input):\n    pass\nreturn 1", "class keywords are not allowed"),
    ("class_decorator", "@print\nclass A:\n    pass\nreturn 1",
     "decorators on classes are not allowed"),
    *[(f"class_{hook.strip('_')}", f"class A:\n    def {hook}(self, *a):\n        return 1\n"
       "return 1", f"special method '{hook}' is not allowed")
      for hook in ("__getattr__", "__getattribute__", "__setattr__", "__format__", "__index__",
                   "__hash__", "__get__", "__set__", "__del__", "__init_subclass__",
                   "__set_name__", "__class_getitem__", "__repr__", "__str__", "__iter__",
                   "__getitem__", "__call__", "__bool__", "__mro_entries__", "__prepare__")],
    ("class_dunder_assignment", "class A:\n    __getattr__ = print\nreturn 1", UNDERSCORE),
    ("class_slots", "class A:\n    __slots__ = ['x']\nreturn 1", UNDERSCORE),
    ("class_guard_shadow", "class A:\n    _getattr_ = print\nreturn 1", UNDERSCORE),
    ("class_private_name", "class _A:\n    pass\nreturn 1", UNDERSCORE),
    ("class_body_statement", "class A:\n    import json\nreturn 1",
     "a class body may hold only a docstring, assignments and def methods"),
    ("class_cell", "class A:\n    def f(self):\n        return __class__\nreturn 1",
     '"__class__" is an invalid variable name'),
    ("class_base_init", "class A:\n    pass\nclass B(A):\n    def __init__(self):\n"
                        "        A.__init__(self)\nreturn 1", '"__init__" is an invalid attribute'),
    ("eval", "return eval('1')", "Eval calls are not allowed"),
    ("exec", "exec('x = 1')\nreturn 1", "Exec calls are not allowed"),
    ("breakpoint", "breakpoint()\nreturn 1", '"breakpoint" is a reserved name'),
    ("import_builtins", "import builtins\nreturn 1", '"builtins" is a reserved name'),
    ("import_private_module", "import _thread\nreturn 1", '"_thread" is an invalid'),
    ("import_posixsubprocess", "import _posixsubprocess\nreturn 1", UNDERSCORE),
    ("import_strptime", "import _strptime\nreturn 1", '"_strptime" is an invalid'),
    ("import_as_dunder", "import json as __builtins__\nreturn 1", UNDERSCORE),
    ("star_import", "from json import *\nreturn 1", "import *"),
    ("augmented_attribute", "db.get_node += 1\nreturn 1",
     "Augmented assignment of attributes is not allowed"),
    ("print_internals", "return _print", '"_print" is an invalid variable name'),
    ("getattr_guard", "return _getattr_", '"_getattr_" is an invalid variable name'),
    ("await_outside_async", "return await db.get_node('x')", "'await' outside"),
    ("async_comprehension", "return [x async for x in input]", "asynchronous comprehension"),
    ("try_star", "try:\n    pass\nexcept* ValueError:\n    pass\nreturn 1",
     "TryStar statements are not allowed"),
    # what a run would refuse for certain, refused when saved too (policy.save_time_problems)
    ("import_os", "import os\nreturn os.system('id')", "import of 'os' is not allowed"),
    ("relative_import", "from . import child\nreturn 1", "relative import from '.' is not"),
    ("open", "return open('/etc/passwd').read()", "name 'open' is not available"),
    ("eval_by_name", "f = eval\nreturn f('1')", "name 'eval' is not available"),
    ("str_format", "return '{0.__class__}'.format(1)",
     "format field {0.__class__} is not allowed: str.format and format_map take only plain"),
    ("namespace_walk", "import json\nreturn json.decoder", "json.decoder is not available"),
]


@pytest.mark.parametrize("body,message", [c[1:] for c in COMPILE_REFUSED],
                         ids=[c[0] for c in COMPILE_REFUSED])
async def test_refused_when_saved(rpc, tenant, body, message):
    errors = await refused_at_compile(rpc, tenant["id"], body)
    assert any(message in e["message"] for e in errors), errors
    assert all(isinstance(e.get("line"), int) and e["line"] >= 2 for e in errors), errors


NAME_ERROR = "NameError: name '{}' is not defined"
ATTRIBUTE_UNDERSCORE = ("AttributeError", UNDERSCORE)
FORMAT_REFUSED = ("ValueError: format field {", "} is not allowed: str.format and format_map "
                  "take only plain fields")
CLASS_BASE_REFUSED = ("TypeError: class A: a pipeline class may derive only from classes the "
                      "code defines and from Exception or a builtin exception",)
WRITE_REFUSED = ("TypeError: attribute-less object (assign or del)",)

RUNTIME_REFUSED = [
    # builtins that are simply not there
    *[(f"builtin_{name}", f"return str({name}{args})", (NAME_ERROR.format(name),))
      for name, args in [
          ("vars", "()"), ("globals", "()"), ("locals", "()"), ("dir", "(db)"),
          ("type", "(db)"), ("object", ""), ("super", "()"), ("open", "('/etc/passwd')"),
          ("compile", "('1', 'x', 'eval')"), ("help", "()"), ("exit", "()"), ("quit", "()"),
          ("memoryview", "(b'a')"), ("bytearray", "(10)"), ("setattr", "(db, 'x', 1)"),
          ("delattr", "(db, 'get_node')"), ("id", "(db)"), ("format", "(db, '')"),
          ("classmethod", "(len)"), ("staticmethod", "(len)"), ("property", "(len)"),
          ("ExceptionGroup", "('x', [ValueError()])"), ("RecursionError", "")]],
    # getattr with names computed at run time
    ("getattr_dunder", "return str(getattr(1, '__class__'))", ATTRIBUTE_UNDERSCORE),
    ("getattr_computed", "n = '_' + '_class__'\nreturn str(getattr(1, n))",
     ATTRIBUTE_UNDERSCORE),
    ("getattr_joined", "n = ''.join(['_', '_', 'globals', '_', '_'])\n"
                       "return str(getattr(lambda: 1, n))", ATTRIBUTE_UNDERSCORE),
    ("getattr_chr", "return str(getattr(db, chr(95) * 2 + 'class' + chr(95) * 2))",
     ATTRIBUTE_UNDERSCORE),
    ("getattr_fullwidth_string", "return str(getattr(1, '\uff3f\uff3fclass\uff3f\uff3f'))",
     ("AttributeError", "has no attribute")),
    ("getattr_non_str", "return str(getattr(db, 5))", ("TypeError",)),
    ("map_getattr", "return str(list(map(getattr, [db], ['__class__'])))",
     ATTRIBUTE_UNDERSCORE),
    ("partial_getattr", "import functools\ng = functools.partial(getattr, db)\n"
                        "return str(g('__class__'))", ATTRIBUTE_UNDERSCORE),
    ("reduce_getattr", "import functools\n"
                       "return str(functools.reduce(getattr, ['__class__', '__base__'], db))",
     ATTRIBUTE_UNDERSCORE),
    # walking up from the classes the code can see
    ("mro_subclasses", "o = DbError.mro()[-1]\nreturn str(getattr(o, '__subclasses__')())",
     ATTRIBUTE_UNDERSCORE),
    ("generic_alias_walk", "o = list[int].mro()[-1]\nreturn str(getattr(o, '__subclasses__'))",
     ATTRIBUTE_UNDERSCORE),
    ("exception_traceback", "try:\n    1 / 0\nexcept Exception as e:\n"
                            "    return str(getattr(e, '__traceback__'))", ATTRIBUTE_UNDERSCORE),
    ("db_method_func", "return str(getattr(db.get_node, '__func__'))", ATTRIBUTE_UNDERSCORE),
    ("db_method_closure", "return str(getattr(db.get_node, '__closure__'))",
     ATTRIBUTE_UNDERSCORE),
    ("print_self", "return str(getattr(print, '__self__'))", ATTRIBUTE_UNDERSCORE),
    ("random_self", "import random\nreturn str(getattr(random.random, '__self__'))",
     ATTRIBUTE_UNDERSCORE),
    ("lru_wrapped", "import functools\nf = functools.lru_cache(lambda x: x)\n"
                    "return str(getattr(f, '__wrapped__'))", ATTRIBUTE_UNDERSCORE),
    ("hasattr_then_getattr", "if hasattr(db, '__class__'):\n    return 'reachable'\n"
                             "return str(getattr(db, '__class__'))", ATTRIBUTE_UNDERSCORE),
    # frames through generators, whatever the spelling
    ("generator_frame_getattr", "def g():\n    yield 1\nx = g()\nnext(x)\n"
                                "return str(getattr(x, 'gi_' + 'frame'))",
     ("AttributeError", '"gi_frame" is a restricted name')),
    ("generator_code_getattr", "def g():\n    yield 1\nreturn str(getattr(g(), 'gi_code'))",
     ("AttributeError", '"gi_code" is a restricted name')),
    ("generator_yieldfrom", "def g():\n    yield from [1]\nx = g()\nnext(x)\n"
                            "return str(getattr(x, 'gi_yieldfrom'))",
     ("AttributeError", '"gi_yieldfrom" is a restricted name')),
    # str.format and friends walk attributes: refused on every route
    ("format", "return '{0.__class__}'.format(1)", FORMAT_REFUSED),
    ("format_globals", "return '{0.get_node.__func__.__globals__}'.format(db)", FORMAT_REFUSED),
    ("format_map", "return '{x.__init__.__globals__}'.format_map({'x': db})", FORMAT_REFUSED),
    ("format_getattr", "return getattr('{0.__class__}', 'format')(1)", FORMAT_REFUSED),
    ("format_unbound", "return str.format('{0.__class__}', 1)", FORMAT_REFUSED),
    ("format_map_unbound", "return str.format_map('{x.__class__}', {'x': 1})", FORMAT_REFUSED),
    ("format_via_map", "return list(map(getattr, ['{0.__class__}'], ['format']))[0](1)",
     FORMAT_REFUSED),
    ("format_computed", "s = '{0' + '.__class__}'\nreturn s.format(1)", FORMAT_REFUSED),
    ("format_index", "s = '{0[0]}'\nreturn s.format(['secret'])", FORMAT_REFUSED),
    ("format_map_index", "s = '{x[k]}'\nreturn s.format_map({'x': {'k': 1}})", FORMAT_REFUSED),
    ("format_nested_spec", "s = '{0:{1.__class__}}'\nreturn s.format(1, 2)", FORMAT_REFUSED),
    ("format_deeply_nested", "s = '{0:{1:{2.real}}}'\nreturn s.format(1, 2, 3)",
     FORMAT_REFUSED),
    ("format_then_malformed", "s = '{0.__class__.__nope}{'\nreturn s.format(1)", FORMAT_REFUSED),
    ("format_bound_kept", "f = '{0.__class__}'.format\nreturn f(1)", FORMAT_REFUSED),
    ("format_method_on_subclass", "class A(str):\n    pass\nreturn A('{0.real}').format(1)",
     CLASS_BASE_REFUSED),
    # classes: bases only the code's own classes and plain exceptions, made by the sandbox
    *[(f"class_base_{name}", f"{setup}\nclass A(b):\n    pass\nreturn 1", CLASS_BASE_REFUSED)
      for name, setup in [
          ("dict", "b = dict"), ("str", "b = str"), ("int", "b = int"), ("tuple", "b = tuple"),
          ("object_at_run_time", "b = DbError.mro()[-1]"),
          ("generic_alias", "b = list[int]"), ("function", "b = print"),
          ("instance", "b = ValueError()"), ("dberror", "b = DbError"),
          ("module_class", "import collections\nb = collections.Counter"),
          ("json_error", "import json\nb = json.JSONDecodeError"),
          ("unicode_decode_error", "b = UnicodeDecodeError"), ("os_error", "b = OSError"),
          ("syntax_error", "b = SyntaxError"), ("attribute_error", "b = AttributeError"),
          ("stop_iteration", "b = StopIteration"), ("system_exit", "b = SystemExit"),
          ("base_exception", "b = BaseException")]],
    ("class_base_starred", "bases = [dict]\nclass A(*bases):\n    pass\nreturn 1",
     CLASS_BASE_REFUSED),
    # attributes are written only on instances of the code's own classes
    ("write_on_class", "class A:\n    x = 1\nA.x = print\nreturn A.x", WRITE_REFUSED),
    ("write_on_function", "def f():\n    pass\nf.x = 1\nreturn 1", WRITE_REFUSED),
    ("write_on_exception", "e = ValueError()\ne.args = (db,)\nreturn 1", WRITE_REFUSED),
    ("write_on_db", "db.get_node = print\nreturn 1", WRITE_REFUSED),
    ("write_on_namespace", "import json\njson.loads = print\nreturn 1", WRITE_REFUSED),
    ("class_super", "class A:\n    def f(self):\n        return super()\nreturn A().f()",
     (NAME_ERROR.format("super"),)),
    ("class_type_of_instance", "class A:\n    pass\nreturn str(type(A()))",
     (NAME_ERROR.format("type"),)),
    ("class_getattr_metaclass", "class A:\n    pass\nreturn str(getattr(A, '__class__'))",
     ATTRIBUTE_UNDERSCORE),
    ("class_getattr_dict", "class A:\n    pass\nreturn str(getattr(A(), '__dict__'))",
     ATTRIBUTE_UNDERSCORE),
    ("string_formatter", "import string\nreturn string.Formatter().format('{0.__class__}', 1)",
     ("AttributeError", "'Formatter' is not available here")),
    ("string_template", "import string\nreturn str(string.Template)",
     ("AttributeError", "'Template' is not available here")),
    ("sys_exc_info", "import sys\nreturn str(sys.exc_info())",
     ("ImportError", "import of 'sys' is not allowed")),
    # what saving lets through (a name bound anywhere, a module under another name) meets
    # the same guards
    ("builtin_bound_elsewhere", "def elsewhere():\n    open = None\n"
                                "return str(open('/etc/passwd'))", (NAME_ERROR.format("open"),)),
    ("namespace_via_variable", "import json\nm = json\nreturn str(m.decoder)",
     ("AttributeError", "'decoder' is not available here")),
]


@pytest.mark.parametrize("body,fragments", [c[1:] for c in RUNTIME_REFUSED],
                         ids=[c[0] for c in RUNTIME_REFUSED])
async def test_refused_when_run(rpc, tenant, database_url, body, fragments):
    """Whether or not saving refuses it too (most builtins, str.format, imports): code that
    is already stored meets the run-time guards."""
    run, _ = await attack_as_stored(rpc, database_url, tenant["id"], body)
    assert_failed(run, "exception", *fragments)
    assert run["error"]["traceback"].startswith("Traceback (pipeline code):\n  line ")
    assert "File " not in run["error"]["traceback"]  # no frames but the pipeline's own


HARMLESS = [
    # what the guards let through gives nothing away
    ("getattr_default", "return getattr(db, '__class__', 'refused')", "refused"),
    ("hasattr_dunder", "return [hasattr(db, '__class__'), hasattr(db, 'get_node'), "
                       "hasattr(db, 'gi_frame'), hasattr(db, 'channel')]",
     [False, True, False, False]),
    ("percent_formatting", "return '%(a)s' % {'a': 1}", "1"),
    ("fstring_conversions", "x = 5\nreturn f'{x!r:>4}'", "   5"),
    ("mro_names", "return [str(c) for c in DbError.mro()][1:]",
     ["<class 'Exception'>", "<class 'BaseException'>", "<class 'object'>"]),
    ("attribute_error_obj", "try:\n    (1).foo\nexcept AttributeError as e:\n"
                            "    return [e.obj, e.name]", [1, "foo"]),
    ("print_to_file", "print('x', file=db)\nreturn printed", "x\n"),
    ("dberror_fields", "e = DbError('m', 1, 'k')\nreturn [str(e), e.code, e.kind]",
     ["m", 1, "k"]),
    ("strptime_lazy_import", "import datetime\n"
                             "return str(datetime.datetime.strptime('2020-01-02', '%Y-%m-%d'))",
     "2020-01-02 00:00:00"),
    ("input_rebound", "input = 3\nreturn input", 3),
    ("global_rebound", "global DbError\nDbError = 1\nreturn DbError", 1),
    # plain classes and str.format with plain fields: what users write, within the guards
    ("class_record", """\
class Item:
    \"\"\"A record.\"\"\"
    unit = 'kg'
    def __init__(self, name, weight):
        self.name = name
        self.weight = weight
    def __lt__(self, other):
        return self.weight < other.weight
    def __eq__(self, other):
        return isinstance(other, Item) and self.name == other.name
    def __contains__(self, letter):
        return letter in self.name
    def label(self):
        return f'{self.name} ({self.weight} {self.unit})'
class Heavy(Item):
    def label(self):
        return 'heavy ' + Item.label(self)
items = sorted([Heavy('anvil', 50), Item('feather', 1)])
items[0].weight = items[0].weight + 1
del items[0].name
items[0].name = 'quill'
return [i.label() for i in items] + [Item('a', 1) == Item('a', 2), 'q' in items[0],
        Item.unit, isinstance(items[1], Item), 'Item object at' in str(items[0])]""",
     ["quill (2 kg)", "heavy anvil (50 kg)", True, True, "kg", True, True]),
    ("class_object_base", "class A(object):\n    pass\nreturn [isinstance(A(), A), "
                          "[str(c) for c in A.mro()]]",
     [True, ["<class 'pipeline.run.<locals>.A'>", "<class 'object'>"]]),
    ("class_exception", """\
class NotFound(KeyError):
    pass
class Invalid(ValueError):
    def __init__(self, field, problem):
        self.field = field
        self.problem = problem
try:
    raise Invalid('age', 'negative')
except ValueError as e:
    caught = [e.field, e.problem, str(e), list(e.args)]
try:
    raise NotFound('x')
except LookupError as e:
    caught.append(str(e))
return caught""", ["age", "negative", "('age', 'negative')", ["age", "negative"], "'x'"]),
    ("class_in_function", "def make():\n    class Local:\n        n = 1\n    return Local\n"
                          "return make().n + make()().n", 2),
    ("format_plain", "return ['{} {}'.format(1, 'a'), '{1}{0}'.format('a', 'b'), "
                     "'{n:>4}|{n!r}'.format(n='x'), '{a:{w}.{p}f}'.format(a=3.14159, w=7, p=2), "
                     "'{x}-{y}'.format_map({'x': 1, 'y': 2}), str.format('{}', 5), "
                     "'{{0.__class__}}'.format(), 'plain'.format()]",
     ["1 a", "ba", "   x|'x'", "   3.14", "1-2", "5", "{0.__class__}", "plain"]),
    ("format_computed_plain", "t = '{' + 'name' + '}'\nreturn t.format(name='ok')", "ok"),
]


@pytest.mark.parametrize("body,expected", [c[1:] for c in HARMLESS],
                         ids=[c[0] for c in HARMLESS])
async def test_harmless_leftovers(rpc, tenant, body, expected):
    run = await attack(rpc, tenant["id"], body)
    assert run["status"] == "succeeded", run["error"]
    assert run["result"] == expected


async def test_module_level_builtins_are_the_same(rpc, tenant):
    """`input` is only run()'s parameter: at module level there is no input(), open() ..."""
    run = await attack(rpc, tenant["id"], "x = input('> ')\ndef run(input, db):\n    return 1")
    assert_failed(run, "exception", NAME_ERROR.format("input"))


async def test_fullwidth_format_is_not_reached(rpc, tenant, database_url):
    """`.ｆormat` is folded to `.format` by the parser, so saving and the guard refuse it.
    (Today the child dies first: see test_non_ascii_identifiers_run; either way nothing is
    formatted.)"""
    run, errors = await attack_as_stored(rpc, database_url, tenant["id"],
                                         "return '{0.__class__}'.\uff46ormat(1)")
    assert [(e["line"], e["column"]) for e in errors] == [(2, 28)], errors
    assert errors[0]["message"].startswith("format field {0.__class__} is not allowed")
    assert run["status"] == "failed" and run["result"] is None
    assert run["error"]["type"] in ("exception", "crashed"), run["error"]
    if run["error"]["type"] == "exception":
        assert "format field {0.__class__} is not allowed" in run["error"]["message"]


async def test_non_ascii_identifiers_run(rpc, tenant):
    """Compiling a non-ASCII identifier imports unicodedata lazily, after the limits are set:
    with spawned children (RLIMIT_NOFILE leaving no free descriptor) that import failed and
    the child died (crashed). It works with zygote-forked children, which can still open
    files: see test_run_cannot_open_files. Pre-importing unicodedata keeps both right."""
    run = await attack(rpc, tenant["id"], "caf\u00e9 = 20\nreturn caf\u00e9 + 1")
    assert run["status"] == "succeeded", run["error"]
    assert run["result"] == 21


# ---------------------------------------------------------------- 2. imports

DENIED_MODULES = ["os", "sys", "subprocess", "socket", "importlib", "ctypes", "io", "pathlib",
                  "pickle", "marshal", "types", "inspect", "gc", "threading", "multiprocessing",
                  "posix", "pty", "resource", "signal", "codecs", "unicodedata", "encodings",
                  "shutil", "tempfile", "asyncio", "urllib", "http", "sqlite3", "code", "pdb",
                  "runpy", "sandbox_worker", "rpc_server", "RestrictedPython", "orjson"]


@pytest.mark.parametrize("module", DENIED_MODULES)
async def test_import_refused(rpc, tenant, database_url, module):
    """Refused when saved, and by the run time when the code is already stored."""
    run, errors = await attack_as_stored(rpc, database_url, tenant["id"],
                                         f"import {module}\nreturn str({module})")
    assert errors == [{"field": "code", "line": 2, "column": 12, "message":
                       f"import of '{module}' is not allowed; allowed modules: "
                       f"{ALLOWED_IMPORTS}"}]
    assert_failed(run, "exception", f"ImportError: import of '{module}' is not allowed; "
                                    f"allowed: {ALLOWED_IMPORTS}")


IMPORT_WALKS = [
    ("dotted", "import json.decoder\nreturn 1", ("import of 'json.decoder' is not allowed",)),
    ("dotted_os", "import os.path\nreturn 1", ("import of 'os.path' is not allowed",)),
    ("from_submodule", "from json import decoder\nreturn str(decoder)",
     ("ImportError", "cannot import name 'decoder'")),
    ("from_module_attr", "from datetime import sys\nreturn str(sys)",
     ("ImportError", "cannot import name 'sys'")),
    ("from_os_import", "from os import system\nreturn 1", ("import of 'os' is not allowed",)),
    ("relative", "from . import json\nreturn 1", ("ImportError", "is not allowed")),
    ("relative_parent", "from .. import os\nreturn 1", ("ImportError", "is not allowed")),
    ("relative_named", "from .child import DbError\nreturn 1", ("ImportError",)),
    *[(f"namespace_{mod}_{attr}", f"import {mod}\nreturn str({mod}.{attr})",
       ("AttributeError", f"'{attr}' is not available here"))
      for mod, attr in [("json", "decoder"), ("json", "scanner"), ("re", "sre_compile"),
                        ("re", "enum"), ("re", "copyreg"), ("datetime", "sys"),
                        ("collections", "abc"), ("collections", "namedtuple"),
                        ("functools", "sys"), ("statistics", "sys"), ("random", "getstate"),
                        ("random", "SystemRandom"), ("string", "Formatter"),
                        ("decimal", "getcontext"), ("math", "sys"), ("itertools", "sys")]],
    ("namespace_dict", "import math\nreturn str(getattr(math, '__dict__'))",
     ("AttributeError", "'__dict__' is not available here")),
    ("function_module", "import json\nreturn getattr(json.loads, '__module__')",
     ATTRIBUTE_UNDERSCORE),
    ("fork_via_anything", "import os\nreturn os.fork()", ("import of 'os' is not allowed",)),
]


@pytest.mark.parametrize("body,fragments", [c[1:] for c in IMPORT_WALKS],
                         ids=[c[0] for c in IMPORT_WALKS])
async def test_import_walks_refused(rpc, tenant, database_url, body, fragments):
    """Refused when saved, and by the run time when the code is already stored."""
    run, errors = await attack_as_stored(rpc, database_url, tenant["id"], body)
    assert (errors is None) == ("getattr(" in body), errors  # names spelled out: refused
    assert_failed(run, "exception", *fragments)


@pytest.mark.parametrize("body", ["return 'x'.encode('idna').decode()",
                                  "return b'\\xc1'.decode('cp037')",
                                  "return str(b'41'.decode('hex'))"],
                         ids=["idna", "cp037", "hex"])
async def test_codec_lookup_does_not_leak_paths(rpc, tenant, body):
    """A codec not loaded yet is imported from encodings/<name>.py when first used. Where
    the child cannot open files that fails, and the OSError used to carry the host path
    ('/root/.pyenv/versions/3.11.7/lib/python3.11/encodings/idna.py') into run.error."""
    run = await attack(rpc, tenant["id"], body)  # assert_no_leak inside
    assert run["status"] in ("succeeded", "failed")


async def test_run_cannot_open_files(rpc, tenant):
    run = await attack(rpc, tenant["id"], "return b'\\xc1'.decode('cp037')")
    assert run["status"] == "failed", run["result"]


@pytest.mark.xfail(reason="HARDENING (no escape): every zygote-forked child has the zygote's "
                          "memory layout and hash seed, so runs of all tenants see the same "
                          "addresses ('%s' % db -> same 0x7f... in every run) and the same "
                          "hash('abc'): ASLR is effectively per zygote, not per run, which helps "
                          "turn a memory-safety bug (cf. the nested map/filter/zip segfaults) "
                          "into an exploit. Bounded, not removed: the worker replaces its "
                          "zygote every ZYGOTE_MAX_FORKS (256) forks, so at most that many "
                          "runs share one layout", strict=True)
async def test_runs_do_not_share_memory_layout(rpc, tenant):
    body = "return ['%s' % db, hash('abc')]"
    first = await attack(rpc, tenant["id"], body)
    second = await attack(rpc, tenant["id"], body)
    assert first["status"] == second["status"] == "succeeded"
    assert first["result"][0] != second["result"][0]
    assert first["result"][1] != second["result"][1]


# ---------------------------------------------------------------- 3. writes and shared state

WRITES = [
    ("namespace_function", "import json\njson.loads = lambda s: 'pwned'\nreturn 1"),
    ("namespace_constant", "import math\nmath.pi = 3\nreturn 1"),
    ("namespace_delete", "import json\ndel json.loads\nreturn 1"),
    ("db_method", "db.get_node = 1\nreturn 1"),
    ("db_new_attribute", "db.channel = 1\nreturn 1"),
    ("db_delete", "del db.get_node\nreturn 1"),
    ("dberror_class", "DbError.code = 5\nreturn 1"),
    ("class_of_allowed_module", "import collections\ncollections.Counter.most_common = 1\n"
                                "return 1"),
    ("function_attribute", "import json\njson.loads.x = 1\nreturn 1"),
    ("own_function_attribute", "f = lambda: 1\nf.x = 1\nreturn 1"),
]


@pytest.mark.parametrize("body", [c[1] for c in WRITES], ids=[c[0] for c in WRITES])
async def test_attribute_writes_refused(rpc, tenant, body):
    run = await attack(rpc, tenant["id"], body)
    assert_failed(run, "exception", "TypeError: attribute-less object (assign or del)")


async def test_no_state_survives_between_runs(rpc, tenant):
    """Run A seeds the random generator, tries to patch modules and caches things; run B (a
    fresh process, fresh namespaces) sees none of it."""
    a = await attack(rpc, tenant["id"], """\
import random, json, functools
random.seed(1234)
try:
    json.marker = 'A'
except TypeError:
    pass
f = functools.lru_cache(lambda x: 'A')
f(1)
print('run A was here')
return [random.random(), random.random()]""")
    b = await attack(rpc, tenant["id"], """\
import random, json
print('run B')
return [random.random(), random.random(), hasattr(json, 'marker'), printed]""")
    assert a["status"] == b["status"] == "succeeded", (a["error"], b["error"])
    assert b["result"][:2] != a["result"]
    assert b["result"][2:] == [False, "run B\n"] and b["output"] == "run B\n"


# ---------------------------------------------------------------- 4. the db object

@pytest.fixture
async def two_tenants(rpc):
    """Tenant A (where the pipelines run) and tenant B holding a secret node."""
    a, b = await make_tenant(rpc), await make_tenant(rpc)
    type_a = (await rpc.call("create_node_type", {"tenant_id": a["id"], "name": "Mine"}))
    type_b = (await rpc.call("create_node_type", {"tenant_id": b["id"], "name": "Secret"}))
    node_a = (await rpc.call("create_node", {"tenant_id": a["id"], "data": {"x": 1},
                                             "node_type_id": type_a["node_type"]["id"]}))
    node_b = (await rpc.call("create_node", {"tenant_id": b["id"], "data": {"s": "TOPSECRET"},
                                             "node_type_id": type_b["node_type"]["id"]}))
    return {"A": a["id"], "B": b["id"], "na": node_a["node"]["id"], "nb": node_b["node"]["id"],
            "ta": type_a["node_type"]["id"], "tb": type_b["node_type"]["id"]}


OTHER_TENANT = [
    ("get", "return db.get_node(input['nb'])", "node not found"),
    ("create_with_their_type", "return db.create_node(input['tb'], {'a': 1})",
     "node_type not found"),
    ("relationship_to_theirs", "return db.create_relationship(input['na'], input['nb'], "
                               "'knows', {})", "not found"),
    ("traverse_theirs", "return db.traverse(input['nb'])", "node not found"),
    ("path_to_theirs", "return db.shortest_path(input['na'], input['nb'])", "node not found"),
]


@pytest.mark.parametrize("body,message", [c[1:] for c in OTHER_TENANT],
                         ids=[c[0] for c in OTHER_TENANT])
async def test_other_tenants_data_is_out_of_reach(rpc, two_tenants, body, message):
    t = two_tenants
    run = await attack(rpc, t["A"], body, input=t)
    assert_failed(run, "exception", "DbError: ", message)
    assert "TOPSECRET" not in json.dumps(run)
    node = await rpc.call("get_node", {"tenant_id": t["B"], "id": t["nb"]})
    assert node["node"]["data"] == {"s": "TOPSECRET"} and node["node"]["version"] == 1


def other_tenant_refused(method: str, run_tenant: str) -> str:
    return (f"DbError: {method}: tenant_id names another tenant; a pipeline's db calls reach "
            f"only the tenant it runs in ({run_tenant}): leave tenant_id out or pass that id")


NAMING_ANOTHER_TENANT = [
    ("get_node", "db.get_node(id=input['nb'], tenant_id=input['B'])"),
    ("get_node", "db.get_node(**{'id': input['nb'], 'tenant_id': input['B']})"),
    ("get_node", "db.get_node(input['nb'], tenant_id=input['B'].upper())"),
    ("update_node", "db.update_node(input['nb'], {'s': 'pwned'}, tenant_id=input['B'])"),
    ("delete_node", "db.delete_node(input['nb'], tenant_id=input['B'])"),
    ("create_node", "db.create_node(input['tb'], {'a': 1}, tenant_id=input['B'])"),
    ("create_relationship", "db.create_relationship(input['na'], input['nb'], 'knows', {}, "
                            "tenant_id=input['B'])"),
    ("traverse", "db.traverse(input['nb'], tenant_id=input['B'])"),
    ("list_nodes", "db.list_nodes(tenant_id=input['B'])"),
    ("execute_query", "db.execute_query('select 1', [], tenant_id=input['B'])"),
    ("list_nodes", "db.list_nodes(tenant_id='not-a-uuid')"),
    ("list_nodes", "db.list_nodes(tenant_id=None)"),
    ("list_nodes", "db.list_nodes(tenant_id=[input['A']])"),
]


@pytest.mark.parametrize("method,call", NAMING_ANOTHER_TENANT,
                         ids=[f"{i}_{c[0]}" for i, c in enumerate(NAMING_ANOTHER_TENANT)])
async def test_a_db_call_naming_another_tenant_is_refused(rpc, two_tenants, method, call):
    """Refused by the worker with a clear error (it was quietly rewritten to the run's
    tenant); the server refuses such a call too: see test_pipeline_tokens.py
    test_a_token_is_confined_to_its_tenant."""
    t = two_tenants
    run = await attack(rpc, t["A"], f"return {call}", input=t)
    assert_failed(run, "exception", other_tenant_refused(method, t["A"]))
    assert [(o["method"], o["ok"]) for o in run["db_operations"]] == [(method, False)]
    assert "TOPSECRET" not in json.dumps(run)
    node = await rpc.call("get_node", {"tenant_id": t["B"], "id": t["nb"]})
    assert node["node"]["data"] == {"s": "TOPSECRET"} and node["node"]["version"] == 1


async def test_the_refusal_is_a_db_error_the_code_can_catch(rpc, two_tenants):
    t = two_tenants
    run = await attack(rpc, t["A"], """try:
    db.list_nodes(tenant_id=input['B'])
except DbError as e:
    return [e.code, e.kind, str(e)]""", input=t)
    assert run["status"] == "succeeded", run["error"]
    assert run["result"] == [-32602, "invalid_params",
                             other_tenant_refused("list_nodes", t["A"])[len("DbError: "):]]


async def test_the_runs_own_tenant_named_or_left_out_works(rpc, two_tenants):
    t = two_tenants
    run = await attack(rpc, t["A"], """\
own = db.get_node(input['na'], tenant_id=input['A'])['node']['data']
spelled = db.get_node(input['na'], tenant_id=input['A'].upper())['node']['data']
left_out = db.get_node(input['na'])['node']['data']
return [own, spelled, left_out]""", input=t)
    assert run["status"] == "succeeded", run["error"]
    assert run["result"] == [{"x": 1}] * 3


async def test_listing_and_sql_see_only_the_runs_tenant(rpc, two_tenants):
    t = two_tenants
    run = await attack(rpc, t["A"], """nodes = db.list_nodes()['nodes']
rows = db.execute_query('select id::text, tenant_id::text, data from nodes')['rows']
return [[n['id'] for n in nodes], rows]""", input=t)
    assert run["status"] == "succeeded", run["error"]
    listed, rows = run["result"]
    assert listed == [t["na"]]
    assert [r[:2] for r in rows] == [[t["na"], t["A"]]]
    assert "TOPSECRET" not in json.dumps(run)


DB_INTERNALS = [
    ("channel", "return str(getattr(db, 'channel'))", "'Db' object has no attribute 'channel'"),
    ("call", "return db.call('create_api_key', {})", "'Db' object has no attribute 'call'"),
    ("admin_method", "return db.create_api_key()", "has no attribute 'create_api_key'"),
    ("tenant_method", "return db.delete_tenant()", "has no attribute 'delete_tenant'"),
    ("pipeline_method", "return db.run_pipeline()", "has no attribute 'run_pipeline'"),
    ("token", "return db.token", "'Db' object has no attribute 'token'"),
    ("too_many_positional", "return db.get_node(1, 2)",
     "get_node() takes at most 1 positional arguments"),
]


@pytest.mark.parametrize("body,message", [c[1:] for c in DB_INTERNALS],
                         ids=[c[0] for c in DB_INTERNALS])
async def test_db_internals_unreachable(rpc, tenant, body, message):
    run = await attack(rpc, tenant["id"], body)
    assert_failed(run, "exception", message)
    assert run["db_operations"] == []


BAD_PARAMS = [
    ("set", "db.get_node({1})", "params must be JSON (Object of type set"),
    ("db_itself", "db.get_node(db)", "params must be JSON (Object of type Db"),
    ("function", "db.get_node(lambda: 1)", "params must be JSON (Object of type function"),
    ("huge_int", "db.get_node(10 ** 5000)", "params must be JSON (Exceeds the limit"),
    ("tuple_key", "db.create_node('x', {(1, 2): 3})", "params must be JSON"),
    ("int_beyond_64_bits", "db.get_node(2 ** 70)", ""),
    ("nested_300", "x = 1\nfor i in range(300):\n    x = [x]\ndb.get_node(x)", ""),
    ("unknown_param", "db.list_nodes(secret=1)", "is not a parameter of this method"),
    ("three_mib", "db.get_node('a' * (3 * 1024 * 1024))", ""),
]


@pytest.mark.parametrize("call,message", [c[1:] for c in BAD_PARAMS],
                         ids=[c[0] for c in BAD_PARAMS])
async def test_db_call_with_bad_params_raises_dberror(rpc, tenant, call, message):
    body = "try:\n" + "".join(f"    {line}\n" for line in call.splitlines())
    run = await attack(rpc, tenant["id"], body + "except DbError as e:\n"
                                                 "    return ['DbError', str(e)]", memory_mb=128)
    assert run["status"] == "succeeded", run["error"]
    assert run["result"][0] == "DbError" and message in run["result"][1]


@pytest.mark.parametrize("call", ["db.get_node(float('nan'))", "db.get_node('\\ud800')",
                                  "db.get_node('a' * (20 * 1024 * 1024))"],
                         ids=["nan", "lone_surrogate", "over_the_line_limit"])
async def test_db_call_the_worker_cannot_forward_ends_the_run(rpc, tenant, call):
    """The worker cannot send these on (NaN / a lone surrogate are not JSON for httpx, 20 MiB
    is beyond its 16 MiB line): the run ends, failed, and the worker carries on."""
    run = await attack(rpc, tenant["id"], f"{call}\nreturn 1", memory_mb=256)
    assert_failed(run, "crashed", "the run's process broke off")
    await assert_worker_fine(rpc, tenant["id"])


@pytest.mark.parametrize("body", ["db.get_node('a\\x00b')\nreturn 1",
                                  "try:\n    db.get_node('a\\x00b')\nexcept DbError:\n"
                                  "    return 'caught'"],
                         ids=["id", "id_caught"])
async def test_db_call_with_nul_is_recorded(rpc, tenant, body):
    run = await attack(rpc, tenant["id"], body)
    assert run["status"] in ("succeeded", "failed")
    assert run["db_operations"] and not run["db_operations"][0]["ok"]


# ---------------------------------------------------------------- 5. resource abuse

# Wall clocks of 1.1 s: the CPU limit is then 2 s, so the wall clock always ends these runs
# first. (With 1000 ms both expire together: see test_child_death_reported_after_the_deadline.)
WALL_CLOCK_MS = 1100

SLOW = {"timeout_ms": WALL_CLOCK_MS}
TIMED_OUT = ("timed_out", ("timeout",))
OUT_OF_MEMORY = ("failed", ("memory",))
CRASHED = ("failed", ("crashed",))

RESOURCE_ABUSE = [
    # (id, body, limits, (expected status, accepted error types))
    ("while_true", "while True:\n    pass", SLOW, TIMED_OUT),
    ("for_range_huge", "for x in range(10 ** 12):\n    pass", SLOW, TIMED_OUT),
    ("sum_range_huge", "return sum(range(10 ** 12))", SLOW, TIMED_OUT),
    ("float_in_huge_range", "return 0.5 in range(10 ** 12)", SLOW, TIMED_OUT),
    ("top_level_loop", "while True:\n    pass\ndef run(input, db):\n    return 1", SLOW,
     TIMED_OUT),
    ("string_bomb", "return len('a' * 10 ** 10)", {"memory_mb": 32}, OUT_OF_MEMORY),
    ("bytes_bomb", "return len(bytes(10 ** 10))", {"memory_mb": 32}, OUT_OF_MEMORY),
    ("list_growth", "x = []\nwhile True:\n    x.append('a' * 100000)", {"memory_mb": 32},
     OUT_OF_MEMORY),
    ("list_repeat", "return len([0] * 10 ** 10)", {"memory_mb": 32}, OUT_OF_MEMORY),
    ("int_power", "return 10 ** (10 ** 9) > 1", {**SLOW, "memory_mb": 32}, TIMED_OUT),
    ("factorial", "import math\nreturn math.factorial(10 ** 7) > 0", SLOW, TIMED_OUT),
    ("regex_backtracking", "import re\nreturn bool(re.match('(a+)+$', 'a' * 40 + 'b'))", SLOW,
     TIMED_OUT),
    ("deep_recursion", "def f(n):\n    return f(n + 1)\nreturn f(0)", {},
     ("failed", ("recursion",))),
    ("self_application", "f = lambda g: g(g)\nreturn f(f)", {}, ("failed", ("recursion",))),
    ("catch_memory_error_forever", "while True:\n    try:\n        x = 'a' * 10 ** 9\n"
                                   "    except MemoryError:\n        pass",
     {**SLOW, "memory_mb": 32}, TIMED_OUT),
    ("catch_recursion_forever", "def f():\n    try:\n        f()\n    except Exception:\n"
                                "        f()\nf()", SLOW, TIMED_OUT),
    ("generator_result_with_endless_finally",
     "def g():\n    try:\n        yield 1\n    finally:\n        while True:\n"
     "            pass\nx = g()\nnext(x)\nreturn x", SLOW, TIMED_OUT),
    # user code that runs inside the child's own error handling (str(exc) -> Counter repr ->
    # sorted -> cmp_to_key -> the user's cmp): looping there, or exiting there
    ("error_message_runs_user_code_forever",
     "import collections, functools\ndef cmp(a, b):\n    while True:\n        pass\n"
     "K = functools.cmp_to_key(cmp)\n"
     "raise ValueError(collections.Counter({'a': K(1), 'b': K(2)}))", SLOW, TIMED_OUT),
    ("error_message_runs_user_code_that_exits",
     "import collections, functools\ndef cmp(a, b):\n    raise SystemExit(3)\n"
     "K = functools.cmp_to_key(cmp)\n"
     "raise ValueError(collections.Counter({'a': K(1), 'b': K(2)}))", {},
     ("failed", ("crashed", "exception"))),
    ("error_message_too_deep",
     "x = 1\nfor i in range(100000):\n    x = [x]\nraise ValueError(x)", {},
     ("failed", ("crashed", "exception", "recursion"))),
    # C-stack exhaustion through nested C iterators: a segfault of the run's own process
    ("nested_map", "x = [1]\nfor i in range(200000):\n    x = map(abs, x)\nreturn list(x)", {},
     CRASHED),
    ("nested_filter", "x = [1]\nfor i in range(200000):\n    x = filter(None, x)\n"
                      "return list(x)", {}, CRASHED),
    ("nested_zip", "x = [1]\nfor i in range(200000):\n    x = zip(x)\nreturn list(x)", {},
     CRASHED),
]


@pytest.mark.parametrize("body,limits,expected", [c[1:] for c in RESOURCE_ABUSE],
                         ids=[c[0] for c in RESOURCE_ABUSE])
async def test_resource_abuse_ends_the_run(rpc, tenant, body, limits, expected):
    status, types = expected
    began = time.monotonic()
    run = await attack(rpc, tenant["id"], body, **limits)
    assert run["status"] == status, run["error"]
    assert run["result"] is None
    assert run["error"]["type"] in types, run["error"]
    assert time.monotonic() - began < limits.get("timeout_ms", DEFAULT_TIMEOUT_MS) / 1000 + 5
    await assert_worker_fine(rpc, tenant["id"])


def _zygote_of(worker_pid: int) -> int | None:
    """The sandbox worker's zygote: its child process running sandbox_worker.zygote."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                command = cmdline.read()
        except (OSError, ValueError, IndexError):
            continue
        if parent == worker_pid and b"sandbox_worker.zygote" in command:
            return int(entry)
    return None


async def test_child_death_reported_after_the_deadline(rpc, tenant, server):
    zygote_pid = _zygote_of(server.sandbox.proc.pid)
    if zygote_pid is None:
        pytest.skip("the worker has no zygote")
    segfault = await create(rpc, tenant["id"], "x = [1]\nfor i in range(200000):\n"
                                               "    x = map(abs, x)\nreturn list(x)",
                            timeout_ms=1000)
    async with httpx.AsyncClient() as http:
        for _ in range(50):  # a child forked ahead, so that the run does not need the zygote
            if (await http.get(server.sandbox.base + "/health")).json()["warm"]:
                break
            await asyncio.sleep(0.1)
    os.kill(zygote_pid, signal.SIGSTOP)
    try:
        running = asyncio.ensure_future(start(rpc, tenant["id"], segfault))
        await asyncio.sleep(1.5)  # the child is dead (~0.2 s), its deadline (1 s) has passed
    finally:
        os.kill(zygote_pid, signal.SIGCONT)
    run = await running
    await assert_worker_fine(rpc, tenant["id"])
    assert run["status"] in ("failed", "timed_out")
    assert run["error"]["type"] in ("crashed", "timeout"), run["error"]


@pytest.mark.parametrize("exception", ["SystemExit(0)", "SystemExit(1)", "KeyboardInterrupt()",
                                       "GeneratorExit()", "BaseException('x')"])
async def test_base_exceptions_raised_by_user_code(rpc, tenant, exception):
    run = await attack(rpc, tenant["id"], f"raise {exception}")
    assert_failed(run, "exception", exception.split("(")[0])
    await assert_worker_fine(rpc, tenant["id"])


async def test_base_exception_at_module_level(rpc, tenant):
    run = await attack(rpc, tenant["id"], "raise SystemExit(0)\ndef run(input, db):\n    return 1")
    assert_failed(run, "exception", "SystemExit")
    await assert_worker_fine(rpc, tenant["id"])


async def test_output_flood_is_bounded(rpc, tenant):
    run = await attack(rpc, tenant["id"], "for i in range(100000):\n    print('x' * 100)\n"
                                          "print('y' * (10 * 1024 * 1024))\nreturn 1")
    assert run["status"] == "succeeded", run["error"]
    output = run["output"]
    assert len(output) <= 64 * 1024 + 100
    assert output.startswith("x" * 100 + "\n")
    assert output.endswith(f"\n[output truncated: {100000 * 101 + 10 * 1024 * 1024 + 1 - 65536}"
                           " more characters]")


NOT_A_RESULT = [
    ("too_large_string", "return 'a' * (2 * 1024 * 1024)", "result_too_large",
     "the result is larger than 1048576 bytes"),
    ("too_large_list", "return list(range(300000))", "result_too_large", "larger than"),
    # 35 KB as written, over 1 MB as stored: PostgreSQL returns 1e-300 in full
    ("too_large_as_stored", "return [1e-300] * 3500", "result_too_large",
     "the result is larger than 1048576 bytes as stored (numbers in plain notation)"),
    ("set", "return {1, 2}", "exception", "TypeError: Object of type set is not JSON"),
    ("nan", "return float('nan')", "exception", "ValueError: Out of range float values"),
    ("infinity", "return [float('inf')]", "exception", "ValueError: Out of range float"),
    ("generator", "return (i for i in range(3))", "exception",
     "TypeError: Object of type generator is not JSON serializable"),
    ("function", "return run", "exception", "TypeError: Object of type function"),
    ("db", "return db", "exception", "TypeError: Object of type Db is not JSON"),
    ("tuple_keys", "return {(1, 2): 3}", "exception", "TypeError: keys must be"),
    ("int_over_4300_digits", "return 10 ** 5000", "exception", "ValueError: Exceeds the limit"),
]


@pytest.mark.parametrize("body,error_type,message", [c[1:] for c in NOT_A_RESULT],
                         ids=[c[0] for c in NOT_A_RESULT])
async def test_results_that_are_not_json_or_too_large(rpc, tenant, body, error_type, message):
    run = await attack(rpc, tenant["id"], body)
    assert_failed(run, error_type, message)


async def test_a_result_of_tiny_numbers_within_the_limit_as_stored_is_kept(rpc, tenant):
    run = await attack(rpc, tenant["id"], "return [1e-300] * 3000")  # 912,000 bytes as stored
    assert run["status"] == "succeeded", run
    assert run["result"] == [1e-300] * 3000


async def test_generator_result_cleanup_cannot_change_the_outcome(rpc, tenant):
    """A generator's finally runs when the child drops it: it may still call db and print,
    but the outcome (already decided) stays failed."""
    run = await attack(rpc, tenant["id"], """\
def g():
    try:
        yield 1
    finally:
        print('cleanup')
        db.list_nodes()
        raise SystemExit(0)
x = g()
next(x)
return x""")
    assert_failed(run, "exception", "TypeError: Object of type generator")
    await assert_worker_fine(rpc, tenant["id"])


UNSTORABLE_OUTCOMES = [
    # (id, body, status, error type, text expected in the result/output/error message)
    ("result_int_beyond_64_bits", "return 2 ** 64", "failed", "result_not_storable",
     "integer beyond 64 bits"),
    ("result_nested_300", "x = 1\nfor i in range(300):\n    x = [x]\nreturn x", "failed",
     "result_not_storable", "could not be encoded"),
    ("result_dict_nested_300", "x = 1\nfor i in range(300):\n    x = {'a': x}\nreturn x",
     "failed", "result_not_storable", "could not be encoded"),
    ("result_lone_surrogate", "return ['\\ud800']", "failed", "result_not_storable",
     "lone surrogate"),
    ("result_nul", "return 'a\\x00b'", "failed", "result_not_storable", "U+0000"),
    ("result_key_nul", "return {'a\\x00': 1}", "failed", "result_not_storable", "U+0000"),
    ("output_lone_surrogate", "print('\\udfff')\nreturn 1", "succeeded", None, "?\n"),
    ("output_nul", "print('a\\x00b')\nreturn 1", "succeeded", None, "a\ufffdb\n"),
    ("error_lone_surrogate", "raise ValueError('\\ud800')", "failed", "exception",
     "ValueError: ?"),
    ("error_nul", "raise ValueError('a\\x00b')", "failed", "exception", "ValueError: a\ufffdb"),
]


@pytest.mark.parametrize("body,status,error_type,text", [c[1:] for c in UNSTORABLE_OUTCOMES],
                         ids=[c[0] for c in UNSTORABLE_OUTCOMES])
async def test_outcomes_postgresql_or_orjson_cannot_hold(rpc, tenant, body, status, error_type,
                                                        text):
    """Ints beyond 64 bits, nesting beyond orjson's 255, lone surrogates and U+0000 used to
    turn into a worker HTTP 500 (run failed as 'sandbox_unavailable': a tenant could fake
    worker outages) or a -32602 with the run left 'running'. Now: a clean run record."""
    run = await attack(rpc, tenant["id"], body)
    assert run["status"] == status, (run["error"], run["duration_ms"], run["cpu_ms"])
    if error_type is None:
        assert run["error"] is None and run["output"] == text
    else:
        assert_failed(run, error_type, text)
    await assert_worker_fine(rpc, tenant["id"])


async def test_error_message_is_bounded(rpc, tenant):
    run = await attack(rpc, tenant["id"], "raise ValueError('x' * (5 * 1024 * 1024))",
                       memory_mb=128)
    assert run["status"] == "failed"
    assert len(json.dumps(run["error"])) <= 1024 * 1024, len(json.dumps(run["error"]))


# ---------------------------------------------------------------- compile-time abuse

COMPILE_BOMBS = [
    ("deep_binop", "x = 1\nreturn " + "x+" * 30000 + "x"),
    ("deep_unary", "return " + "-" * 30000 + "1"),
    ("deep_attribute", "return input" + ".a" * 30000),
    ("deep_calls", "return f" + "(1)" * 30000),
    ("deep_lambda", "return " + "lambda:" * 5000 + "1"),
    ("deep_parens", "return " + "(" * 300 + "1" + ")" * 300),
    ("too_long", "return 1\n" + "#" * 100_001),
    ("nul", "return 1\x00"),
    ("no_top_level_entry_point", "if True:\n    def run(input, db):\n        return 1"),
    ("syntax_error", "return (1"),
]


@pytest.mark.parametrize("body", [c[1] for c in COMPILE_BOMBS], ids=[c[0] for c in COMPILE_BOMBS])
async def test_compile_bombs_are_refused_quickly(rpc, tenant, body):
    began = time.monotonic()
    with pytest.raises(RpcError) as exc:
        await create(rpc, tenant["id"], body)
    assert exc.value.code == -32602, exc.value
    assert time.monotonic() - began < 5
    await assert_worker_fine(rpc, tenant["id"])


# ---------------------------------------------------------------- the flood, collected

async def test_db_call_flood_is_cut_off(rpc):
    """Calls beyond 10,000 in one run are answered with DbError(kind too_many_calls) without
    reaching the server; the run record keeps at most 1,000 of them."""
    await _start_flood(rpc)
    deadline = time.monotonic() + 75
    while True:
        run = (await rpc.call("get_pipeline_run", {"tenant_id": _flood["tenant_id"],
                                                   "id": _flood["run_id"]}))["run"]
        if run["status"] not in ("queued", "running") or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert run["status"] == "succeeded", run["error"]
    answers, last = run["result"]
    assert answers == {"invalid_params": 10_000, "too_many_calls": FLOOD_CALLS - 10_000}
    assert last == [-32005, "too_many_calls", "more than 10000 db calls in one run"]
    assert len(run["db_operations"]) == 1000
    assert_no_leak(run)
