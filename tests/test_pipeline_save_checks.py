"""Pipeline code is checked when saved (create_pipeline, update_pipeline) for what a run
would refuse for certain: imports that are not allowed, names the run does not provide and
the code does not define, str.format on a literal with fields a run refuses, names an allowed
module does not provide, and classes that are more than plain records. Each refusal with its
exact place and message; benign code, and the README's example, saves and runs. (That runs
still refuse such code when it is already stored is in test_sandbox_escapes.py.)"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from rpc_server.client import InvalidParams

from .conftest import unique

ALLOWED = ("collections, datetime, decimal, fractions, functools, itertools, json, math, "
           "random, re, statistics, string")
BUILTINS = ("abs, all, any, bin, bool, bytes, callable, chr, complex, dict, divmod, Ellipsis, "
            "enumerate, filter, float, frozenset, getattr, hasattr, hash, hex, int, isinstance, "
            "issubclass, iter, len, list, map, max, min, next, oct, ord, pow, print, printed, "
            "range, repr, reversed, round, set, slice, sorted, str, sum, tuple, zip")
RUN = "\n\ndef run(input, db):\n    return 1\n"


def import_refused(module: str) -> str:
    return f"import of '{module}' is not allowed; allowed modules: {ALLOWED}"


def relative_refused(module: str) -> str:
    return f"relative import from '{module}' is not allowed; allowed modules: {ALLOWED}"


def not_provided(module: str, name: str, provides: str) -> str:
    return f"{module}.{name} is not available; {module} provides: {provides}"


def unavailable(name: str) -> str:
    return (f"name '{name}' is not available: pipelines have no such builtin and the code does "
            f"not define it; available builtins: {BUILTINS} and the exception classes "
            "(Exception, ValueError, DbError ...)")


def format_field_refused(field: str) -> str:
    return (f"format field {{{field}}} is not allowed: str.format and format_map take only "
            "plain fields ({}, {0}, {name}, with !r/!s/!a and a format spec); attribute access "
            "and indexing in a field reach past the sandbox's guards (use an f-string)")


JSON = "dumps, JSONDecodeError, loads"
NOT_BUILTINS = ["open", "eval", "exec", "compile", "globals", "locals", "vars", "type", "input",
                "breakpoint", "help", "exit", "quit", "memoryview", "bytearray", "object",
                "super", "dir", "id", "format", "setattr", "delattr", "classmethod",
                "staticmethod", "property", "ExceptionGroup", "RecursionError"]
# RestrictedPython refuses these names itself, with its own message at the same place
RESTRICTED_PYTHON_SAYS = {"breakpoint": '"breakpoint" is a reserved name.'}

REFUSED = [
    # (id, code, line, column, message)
    ("import", "import os" + RUN, 1, 8, import_refused("os")),
    ("import_as", "import os as o" + RUN, 1, 8, import_refused("os")),
    ("import_second_name", "import json, os" + RUN, 1, 14, import_refused("os")),
    ("import_submodule", "import json.decoder" + RUN, 1, 8, import_refused("json.decoder")),
    ("import_in_run", "def run(input, db):\n    import subprocess\n    return 1\n", 2, 12,
     import_refused("subprocess")),
    ("from_import", "from os import path" + RUN, 1, 6, import_refused("os")),
    ("from_import_spaced", "from   os   import path" + RUN, 1, 8, import_refused("os")),
    ("from_submodule", "from os.path import join" + RUN, 1, 6, import_refused("os.path")),
    ("from_future", "from __future__ import annotations" + RUN, 1, 6,
     import_refused("__future__")),
    ("relative", "from . import json" + RUN, 1, 6, relative_refused(".")),
    ("relative_named", "from ..child import DbError" + RUN, 1, 6, relative_refused("..child")),
    ("from_import_not_provided", "from json import decoder" + RUN, 1, 18,
     not_provided("json", "decoder", JSON)),
    ("from_import_second_name", "from json import loads, scanner as s" + RUN, 1, 25,
     not_provided("json", "scanner", JSON)),
    ("module_attribute", "import collections\n\ndef run(input, db):\n"
                         "    return collections.namedtuple('P', 'x')\n", 4, 24,
     not_provided("collections", "namedtuple", "ChainMap, Counter, defaultdict, deque, "
                                               "OrderedDict")),
    ("module_alias_attribute", "import string as s\n\ndef run(input, db):\n"
                               "    return s.Formatter()\n", 4, 14,
     not_provided("string", "Formatter", "ascii_letters, ascii_lowercase, ascii_uppercase, "
                                         "capwords, digits, hexdigits, octdigits, printable, "
                                         "punctuation, whitespace")),
    *[(f"builtin_{name}", f"def run(data, db):\n    f = {name}\n    return 1\n", 2, 9,
       RESTRICTED_PYTHON_SAYS.get(name, unavailable(name))) for name in NOT_BUILTINS],
    ("builtin_called", "def run(input, db):\n    return open('/etc/passwd').read()\n", 2, 12,
     unavailable("open")),
    ("builtin_at_module_level", "data = input('> ')\n\ndef run(value, db):\n    return data\n",
     1, 8, unavailable("input")),
    ("builtin_in_default", "def run(input, db, f=vars):\n    return 1\n", 1, 22,
     unavailable("vars")),
    # str.format on a literal whose fields a run would refuse (plain fields are fine)
    ("format_attribute", "def run(input, db):\n    return '{0.__class__}'.format(input)\n",
     2, 28, format_field_refused("0.__class__")),
    ("format_map_index", "def run(input, db):\n    return '{x[0]}'.format_map(input)\n", 2, 21,
     format_field_refused("x[0]")),
    ("format_nested_spec", "def run(input, db):\n    return '{0:{1.real}}'.format(1, 2)\n",
     2, 27, format_field_refused("1.real")),
    ("format_spaced", "def run(input, db):\n    return ('{0.real}'\n        ) . format(1)\n",
     3, 13, format_field_refused("0.real")),
    # classes: plain records only (what a run refuses of them is in test_sandbox_escapes.py)
    ("class_special_method", "class A:\n    def __getattr__(self, name):\n        return 1\n"
     + RUN, 2, 5, "special method '__getattr__' is not allowed: a pipeline class may define "
     "only __contains__, __eq__, __ge__, __gt__, __init__, __le__, __lt__, __ne__ (the others "
     "are hooks the interpreter calls around the sandbox's guards)"),
    ("class_decorator", "def deco(c):\n    return c\n\n@deco\nclass A:\n    pass\n" + RUN,
     4, 2, "decorators on classes are not allowed"),
    ("class_keyword", "class A(answer=42):\n    pass\n" + RUN, 1, 1,
     "class keywords are not allowed (no metaclass=, no arguments for a base class)"),
    ("class_body_loop", "class A:\n    for i in range(3):\n        pass\n" + RUN, 2, 5,
     "a class body may hold only a docstring, assignments and def methods"),
    ("column_in_characters", "def run(input, db):\n    s = 'ünï'; return open(s)\n", 2, 23,
     unavailable("open")),
]


async def refused(rpc, tenant_id: str, code: str, how: str) -> list[dict]:
    """Save `code` (create, or update of a good pipeline): -32602; the pipeline is unchanged."""
    if how == "create":
        with pytest.raises(InvalidParams) as exc:
            await rpc.call("create_pipeline", {"tenant_id": tenant_id, "name": unique("bad"),
                                               "code": code})
        listed = await rpc.call("list_pipelines", {"tenant_id": tenant_id})
        assert listed["pipelines"] == []
    else:
        good = (await rpc.call("create_pipeline", {
            "tenant_id": tenant_id, "name": unique("good"),
            "code": "def run(input, db):\n    return 1\n"}))["pipeline"]
        with pytest.raises(InvalidParams) as exc:
            await rpc.call("update_pipeline", {"tenant_id": tenant_id, "id": good["id"],
                                               "code": code, "name": "renamed"})
        same = await rpc.call("get_pipeline", {"tenant_id": tenant_id, "id": good["id"]})
        assert same["pipeline"] == good
    assert exc.value.code == -32602
    return exc.value.data["errors"]


@pytest.mark.parametrize("how", ["create", "update"])
@pytest.mark.parametrize("code,line,column,message", [c[1:] for c in REFUSED],
                         ids=[c[0] for c in REFUSED])
async def test_refused_when_saved(rpc, tenant, how, code, line, column, message):
    errors = await refused(rpc, tenant["id"], code, how)
    assert errors == [{"field": "code", "line": line, "column": column, "message": message}]


async def test_every_problem_in_source_order_with_restricted_pythons_own(rpc, tenant):
    code = ("import os\n"
            "from json import loads, decoder\n"
            "\n"
            "def run(input, db):\n"
            "    x = input.__class__\n"
            "    print(open, '{0.real}'.format(1))\n"
            "    return eval('1')\n")
    errors = await refused(rpc, tenant["id"], code, "create")
    assert [(e["line"], e["column"], e["message"]) for e in errors] == [
        (1, 8, import_refused("os")),
        (2, 25, not_provided("json", "decoder", JSON)),
        (5, 9, '"__class__" is an invalid attribute name because it starts with "_".'),
        (6, 11, unavailable("open")),
        (6, 28, format_field_refused("0.real")),
        (7, 12, "Eval calls are not allowed."),  # RestrictedPython's, not a second one
    ]


async def test_at_most_twenty_problems(rpc, tenant):
    code = "def run(input, db):\n" + "".join(f"    x{i:02} = open\n" for i in range(30)) + \
        "    return 1\n"
    errors = await refused(rpc, tenant["id"], code, "create")
    assert [(e["line"], e["column"]) for e in errors] == [(i, 11) for i in range(2, 22)]


BENIGN = '''\
import collections, datetime, decimal, fractions, functools, itertools, json, math
import random, re, statistics, string
import json as j
from math import sqrt, pi as PI
from collections import Counter as C

LIMIT = 3


def helper(values, *rest, scale=1, **options):
    return [v * scale for v in values]


class Point:
    """A record: plain assignments and def methods."""
    dims = 2

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return isinstance(other, Point) and [self.x, self.y] == [other.x, other.y]

    def moved(self, dx):
        return Point(self.x + dx, self.y)


class Tagged(Point):
    def tag(self):
        return "{}:{}".format(self.x, self.y)


class NotFound(KeyError):
    pass


class Empty(object):
    pass


def shadow():
    open = "mine"  # a name the code binds is its own, wherever it is used
    return open


def run(input, db):
    global LIMIT
    format = "%s-%s"  # a variable may be called format
    total = 0
    for i, v in enumerate(helper([1, 2, 3], scale=2)):
        total += v
    try:
        db.get_node("not-a-uuid")
    except DbError as e:
        kind = e.kind
    if (n := len(input)) > 0:
        LIMIT = n
    print("total", total)
    point = Tagged(1, 2)
    point.label = "p"
    try:
        raise NotFound("gone")
    except KeyError as e:
        gone = str(e)
    return {
        "record": [point.moved(2) == Point(3, 2), point.tag(), point.label, Point.dims, gone,
                   isinstance(Empty(), Empty)],
        "formatted": ["{0} {name:>4} {0!r}".format("a", name="b"),
                      "{n:{w}}|".format_map({"n": 7, "w": 3})],
        "total": total, "kind": kind, "squares": [k * k for k in range(LIMIT)],
        "json": j.dumps(json.loads("[1]")), "math": [sqrt(16), math.floor(PI)],
        "counter": C("aab")["a"], "format": format % ("a", "b"), "fstring": f"{total:>4}",
        "date": datetime.date(2024, 1, 2).isoformat(), "decimal": str(decimal.Decimal("1.5")),
        "fraction": str(fractions.Fraction(2, 6)),
        "reduce": functools.reduce(lambda a, b: a + b, [1, 2]),
        "chain": list(itertools.chain([1], [2])), "median": statistics.median([1, 3, 5]),
        "re": re.sub("a", "b", "aa"), "digits": string.digits, "random": random.randint(1, 1),
        "default": collections.defaultdict(int)["x"], "shadow": shadow(),
        "getattr": getattr(input, "format", "none"), "printed": printed,
    }
'''


async def test_benign_code_saves_and_runs(rpc, tenant):
    t = tenant["id"]
    pipeline = (await rpc.call("create_pipeline", {"tenant_id": t, "name": unique("ok"),
                                                   "code": BENIGN}))["pipeline"]
    updated = await rpc.call("update_pipeline", {"tenant_id": t, "id": pipeline["id"],
                                                 "code": BENIGN + "\n"})
    assert updated["pipeline"]["version"] == 2
    done = (await rpc.call("run_pipeline", {"tenant_id": t, "pipeline_id": pipeline["id"],
                                            "input": {"a": 1, "b": 2}}))["run"]
    assert done["status"] == "succeeded", done["error"]
    assert done["result"] == {
        "total": 12, "kind": "invalid_params", "squares": [0, 1], "json": "[1]",
        "math": [4.0, 3], "counter": 2, "format": "a-b", "fstring": "  12",
        "date": "2024-01-02", "decimal": "1.5", "fraction": "1/3", "reduce": 3,
        "chain": [1, 2], "median": 3, "re": "bb", "digits": "0123456789", "random": 1,
        "default": 0, "shadow": "mine", "getattr": "none", "printed": "total 12\n",
        "record": [True, "1:2", "p", 2, "'gone'", True], "formatted": ["a    b 'a'", "  7|"]}


def readme_pipeline() -> str:
    """The example in the README's "Pipelines" section, as it stands."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("\n## Pipelines\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


async def test_the_readmes_example_saves_and_runs(rpc, tenant, node_type):
    t = tenant["id"]
    for name, age in (("ann", 30), ("bob", 40), ("cat", 50)):
        await rpc.call("create_node", {"tenant_id": t, "node_type_id": node_type["id"],
                                       "data": {"name": name, "age": age, "kind": "staff"}})
    await rpc.call("create_node", {"tenant_id": t, "node_type_id": node_type["id"],
                                   "data": {"name": "dan", "kind": "guest"}})
    report = (await rpc.call("create_node_type", {"tenant_id": t, "name": "Report"}))
    code = readme_pipeline()
    assert "import statistics" in code and "def run(input, db):" in code
    pipeline = (await rpc.call("create_pipeline", {"tenant_id": t, "name": unique("readme"),
                                                   "code": code}))["pipeline"]
    done = (await rpc.call("run_pipeline", {
        "tenant_id": t, "pipeline_id": pipeline["id"],
        "input": {"kind": "staff", "report_type": report["node_type"]["id"]}}))["run"]
    assert done["status"] == "succeeded", done["error"]
    assert done["result"]["count"] == 3 and done["output"] == "summarised 3 nodes\n"
    summary = await rpc.call("get_node", {"tenant_id": t, "id": done["result"]["report"]})
    assert summary["node"]["data"] == {"kind": "staff", "mean_age": 40}
