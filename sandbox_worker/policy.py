"""What pipeline code may do: RestrictedPython's compile-time policy plus the run-time guards
and the only names user code can reach.

User code never gets a real module object (json, re, datetime ... reach sys and builtins
through plain attributes): each allowed import is a fresh namespace of vetted functions and
classes. Attribute access goes through safer_getattr_raise (no `_` names, no frame/code/
generator internals, no str.format), items and iteration through guards, and writes only to
objects the code created itself. No open/eval/exec/compile/globals/vars/type/getattr of
private names, no class statements (no type creation), no printing to real files."""
from __future__ import annotations

import ast
import collections
import datetime
import decimal
import fractions
import functools
import itertools
import json
import keyword
import math
import operator
import random
import re
import statistics
import string
import sys
from dataclasses import dataclass
from types import SimpleNamespace

from RestrictedPython import compile_restricted_exec, safe_builtins
from RestrictedPython.Eval import default_guarded_getitem, default_guarded_getiter
from RestrictedPython.Guards import (full_write_guard, guarded_iter_unpack_sequence,
                                     guarded_unpack_sequence, safer_getattr_raise)
from RestrictedPython.transformer import RestrictingNodeTransformer

MAX_CODE_LENGTH = 100_000
ENTRY_POINT = "run"
LINE_COLUMN = re.compile(r"^Line (\d+)(?:, column (\d+))?: (.*)$", re.S)


@dataclass(frozen=True)
class CodeError:
    line: int | None
    column: int | None
    message: str


class PipelinePolicy(RestrictingNodeTransformer):
    """RestrictedPython's policy, reporting columns too, and without class statements."""

    def error(self, node, info):  # noqa: D401 - RestrictedPython's hook
        line = getattr(node, "lineno", None)
        column = getattr(node, "col_offset", None)
        where = f"Line {line}" + (f", column {column + 1}" if column is not None else "")
        self.errors.append(f"{where}: {info}")

    def visit_ClassDef(self, node):
        self.error(node, "class statements are not allowed (no new types)")
        return node

    def visit_AsyncFunctionDef(self, node):
        self.error(node, "async functions are not allowed")
        return node


def _parse_error(text: str) -> CodeError:
    match = LINE_COLUMN.match(text)
    if not match:
        return CodeError(None, None, text)
    line, column, message = match.groups()
    return CodeError(int(line), int(column) if column else None, message)


def compile_pipeline(source: str, saving: bool = False):
    """(code object, []) or (None, [CodeError ...]). The code must define run(input, db).
    Saving also refuses what a run would refuse for certain (save_time_problems, below);
    errors come in source order."""
    if len(source) > MAX_CODE_LENGTH:
        return None, [CodeError(None, None, f"code is longer than {MAX_CODE_LENGTH} characters")]
    if "\x00" in source:
        return None, [CodeError(None, None, "code contains the character U+0000")]
    try:
        compile(source, "<pipeline>", "exec", dont_inherit=True)
    except SyntaxError as exc:  # exact line and column for plain syntax errors
        return None, [CodeError(exc.lineno, exc.offset, exc.msg)]
    except (ValueError, RecursionError, MemoryError) as exc:
        return None, [CodeError(None, None, f"code cannot be compiled: {type(exc).__name__}")]
    try:
        result = compile_restricted_exec(source, filename="<pipeline>", policy=PipelinePolicy)
    except (RecursionError, MemoryError) as exc:
        return None, [CodeError(None, None, f"code cannot be compiled: {type(exc).__name__}")]
    errors = [_parse_error(e) for e in result.errors]
    if saving:  # one problem per place: where RestrictedPython refused, its message stands
        places = {(e.line, e.column) for e in errors}
        errors += [e for e in save_time_problems(source) if (e.line, e.column) not in places]
    if errors:
        return None, _in_source_order(source, errors)
    if not _defines_entry_point(source):
        return None, [CodeError(None, None, f"the code must define {ENTRY_POINT}(input, db) "
                                            "at the top level")]
    return result.code, []


def _defines_entry_point(source: str) -> bool:
    tree = ast.parse(source)
    return any(isinstance(node, ast.FunctionDef) and node.name == ENTRY_POINT
               for node in tree.body)


def _namespace(module, names) -> SimpleNamespace:
    return SimpleNamespace(**{n: getattr(module, n) for n in names})


def _public(module, exclude=()) -> list[str]:
    return [n for n in dir(module) if not n.startswith("_") and n not in exclude
            and not isinstance(getattr(module, n), type(math))]


def allowed_modules() -> dict[str, SimpleNamespace]:
    """Fresh namespaces, one per allowed import (made per run: nothing is shared)."""
    rng = random.Random()
    return {
        "json": _namespace(json, ["loads", "dumps", "JSONDecodeError"]),
        "math": _namespace(math, _public(math)),
        "statistics": _namespace(statistics, [
            "mean", "fmean", "geometric_mean", "harmonic_mean", "median", "median_low",
            "median_high", "median_grouped", "mode", "multimode", "quantiles", "pstdev",
            "pvariance", "stdev", "variance", "StatisticsError"]),
        "datetime": _namespace(datetime, ["date", "datetime", "time", "timedelta", "timezone",
                                          "MINYEAR", "MAXYEAR"]),
        "re": _namespace(re, ["compile", "search", "match", "fullmatch", "split", "findall",
                              "finditer", "sub", "subn", "escape", "error", "IGNORECASE", "I",
                              "MULTILINE", "M", "DOTALL", "S", "VERBOSE", "X", "ASCII", "A"]),
        "itertools": _namespace(itertools, _public(itertools)),
        "collections": _namespace(collections, ["Counter", "defaultdict", "OrderedDict",
                                                "deque", "ChainMap"]),
        "functools": _namespace(functools, ["reduce", "partial", "cmp_to_key", "lru_cache",
                                            "cache"]),
        "decimal": _namespace(decimal, ["Decimal", "InvalidOperation", "DivisionByZero",
                                        "ROUND_HALF_UP", "ROUND_HALF_EVEN", "ROUND_DOWN",
                                        "ROUND_UP", "ROUND_FLOOR", "ROUND_CEILING"]),
        "fractions": _namespace(fractions, ["Fraction"]),
        "random": SimpleNamespace(**{n: getattr(rng, n) for n in [
            "random", "randint", "randrange", "choice", "choices", "shuffle", "sample",
            "uniform", "gauss", "seed"]}),
        "string": _namespace(string, ["ascii_letters", "ascii_lowercase", "ascii_uppercase",
                                      "digits", "hexdigits", "octdigits", "punctuation",
                                      "printable", "whitespace", "capwords"]),
    }


class BoundedPrinter:
    """print() output, kept up to a size; the rest is counted and dropped."""

    def __init__(self, limit: int):
        self.limit, self.parts, self.size, self.dropped = limit, [], 0, 0

    def write(self, text: str) -> None:
        text = str(text)
        room = self.limit - self.size
        if room > 0:
            self.parts.append(text[:room])
            self.size += min(len(text), room)
        self.dropped += max(0, len(text) - max(room, 0))

    def text(self) -> str:
        suffix = f"\n[output truncated: {self.dropped} more characters]" if self.dropped else ""
        return "".join(self.parts) + suffix


def _print_factory(printer: BoundedPrinter):
    class _Collector:
        """What RestrictedPython's print() calls: writes go to the run's bounded output."""

        def __init__(self, _getattr_=None):
            pass

        def __call__(self):
            return printer.text()

        def _call_print(self, *objects, sep=" ", end="\n", **_ignored):
            printer.write(str(sep).join(str(o) for o in objects) + str(end))

    return _Collector


# Modules the standard library's C code imports lazily through the current builtins
# (datetime.strptime imports _strptime). Pipeline code cannot name them: RestrictedPython
# refuses every name that starts with "_".
INTERNAL_IMPORTS = ("_strptime",)


def _guarded_import(modules: dict):
    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
        if name in INTERNAL_IMPORTS and name in sys.modules:
            return sys.modules[name]
        if level != 0 or name not in modules:
            raise ImportError(f"import of {name!r} is not allowed; allowed: "
                              + ", ".join(sorted(modules)))
        return modules[name]
    return guarded_import


def _guarded_getattr(obj, name, *default):
    if isinstance(obj, SimpleNamespace) and name not in vars(obj):
        if default:
            return default[0]
        raise AttributeError(f"{name!r} is not available here")
    if default:
        try:
            return safer_getattr_raise(obj, name)
        except AttributeError:
            return default[0]
    return safer_getattr_raise(obj, name)


INPLACE = {"+=": operator.iadd, "-=": operator.isub, "*=": operator.imul,
           "/=": operator.itruediv, "//=": operator.ifloordiv, "%=": operator.imod,
           "**=": operator.ipow, "<<=": operator.ilshift, ">>=": operator.irshift,
           "&=": operator.iand, "|=": operator.ior, "^=": operator.ixor}


def _inplace(op: str, x, y):
    return INPLACE[op](x, y)


SAFE_EXTRA_BUILTINS = {
    "list": list, "dict": dict, "tuple": tuple, "set": set, "frozenset": frozenset,
    "min": min, "max": max, "sum": sum, "sorted": sorted, "reversed": reversed,
    "enumerate": enumerate, "zip": zip, "map": map, "filter": filter, "any": any, "all": all,
    "iter": iter, "next": next, "bytes": bytes, "bin": bin,
}


class DbError(Exception):
    """A db call the server refused; `code` and `kind` say why."""

    def __init__(self, message, code=None, kind=None):
        super().__init__(message)
        self.code, self.kind = code, kind


def make_globals(printer: BoundedPrinter) -> dict:
    """The globals a run executes in: safe builtins, guards, allowed imports, nothing else."""
    builtins = {k: v for k, v in safe_builtins.items()
                if k not in ("setattr", "delattr", "__build_class__", "_getattr_", "id")}
    builtins.update(SAFE_EXTRA_BUILTINS)
    modules = allowed_modules()
    builtins["__import__"] = _guarded_import(modules)
    builtins["getattr"] = _guarded_getattr
    builtins["hasattr"] = lambda obj, name: _guarded_getattr(obj, name, _MISSING) is not _MISSING
    return {
        "__builtins__": builtins,
        "__name__": "pipeline",
        "_getattr_": _guarded_getattr,
        "_getitem_": default_guarded_getitem,
        "_getiter_": default_guarded_getiter,
        "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
        "_unpack_sequence_": guarded_unpack_sequence,
        "_write_": full_write_guard,
        "_inplacevar_": _inplace,
        "_print_": _print_factory(printer),
        "_apply_": lambda f, *a, **kw: f(*a, **kw),
        "DbError": DbError,
    }


_MISSING = object()


# ---------------------------------------------------------------- checked when saved
# What a run would refuse, known from the code alone: refused when the code is saved, on top
# of RestrictedPython's compile. Runs do not repeat this check (the guards above are what
# holds at run time), so code saved before it existed runs as it did. Every set of names is
# read off the run time itself, never kept by hand.

MODULE_NAMES = {module: frozenset(vars(namespace))
                for module, namespace in allowed_modules().items()}
ALLOWED_IMPORTS = ", ".join(sorted(MODULE_NAMES))
_RUN_GLOBALS = make_globals(BoundedPrinter(0))
_RUN_NAMES = {**_RUN_GLOBALS["__builtins__"], **_RUN_GLOBALS}
# RestrictedPython turns these two into calls of the run's print collector (_print_).
PRINT_NAMES = ("print", "printed")
GLOBAL_NAMES = frozenset(_RUN_NAMES) | frozenset(PRINT_NAMES)
_EXCEPTIONS = {n for n, v in _RUN_NAMES.items()
               if isinstance(v, type) and issubclass(v, BaseException)}
_BUILTINS_SHOWN = ", ".join(sorted(
    (n for n in GLOBAL_NAMES if not n.startswith("_") and n not in _EXCEPTIONS
     and not keyword.iskeyword(n)), key=str.lower))


def _refused_on_str(name: str) -> bool:
    try:
        _guarded_getattr("", name)
    except (AttributeError, NotImplementedError):
        return True
    return False


# What the guard refuses on every str (format, format_map: they walk attributes). Nothing
# else the code can reach has attributes of these names, so `x.format` fails whatever x is.
# (Names starting with "_" and frame/generator internals RestrictedPython refuses itself.)
REFUSED_ATTRIBUTES = frozenset(n for n in dir(str) if not n.startswith("_")
                               and _refused_on_str(n))
# Nodes that bind the name in their `name` field (type parameters: Python 3.12+).
_NAMED_BINDINGS = tuple(getattr(ast, n) for n in (
    "FunctionDef", "AsyncFunctionDef", "ClassDef", "ExceptHandler", "MatchAs", "MatchStar",
    "TypeVar", "ParamSpec", "TypeVarTuple") if hasattr(ast, n))
_NEWLINE = re.compile(r"\r\n?|\n")
_FROM = re.compile(rb"from\s+")


def _import_refused(name: str) -> str:
    what = "relative import from" if name.startswith(".") else "import of"
    return f"{what} {name!r} is not allowed; allowed modules: {ALLOWED_IMPORTS}"


def _not_provided(module: str, name: str) -> str:
    return (f"{module}.{name} is not available; {module} provides: "
            + ", ".join(sorted(MODULE_NAMES[module], key=str.lower)))


def _undefined(name: str) -> str:
    return (f"name {name!r} is not available: pipelines have no such builtin and the code "
            f"does not define it; available builtins: {_BUILTINS_SHOWN} and the exception "
            "classes (Exception, ValueError, DbError ...)")


def _refused_attribute(name: str) -> str:
    return (f"attribute {name!r} is not allowed (str.format and str.format_map can reach any "
            "attribute); use an f-string or the % operator")


def _bindings(tree: ast.AST):
    """(name, module) for every name the code binds anywhere: module is the allowed module
    a plain `import module [as name]` binds it to, None for any other binding."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            yield node.id, None
        elif isinstance(node, ast.arg):
            yield node.arg, None
        elif isinstance(node, _NAMED_BINDINGS) and node.name:
            yield node.name, None
        elif isinstance(node, ast.MatchMapping) and node.rest:
            yield node.rest, None
        elif isinstance(node, ast.Import):
            for alias in node.names:
                module = alias.name if alias.name in MODULE_NAMES else None
                yield alias.asname or alias.name.split(".")[0], module
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                yield alias.asname or alias.name, None


def save_time_problems(source: str) -> list[CodeError]:
    """What a run would refuse for certain (columns in UTF-8 bytes, as ast gives them):
    imports that are not allowed, names the code neither defines nor gets, attributes the
    guard refuses, and names an allowed module does not provide."""
    tree = ast.parse(source)
    lines = _NEWLINE.split(source)
    bound: dict[str, set] = {}
    for name, module in _bindings(tree):
        bound.setdefault(name, set()).add(module)
    # Names bound only ever by `import m`: `name.x` is a lookup in m's namespace.
    module_of = {name: next(iter(modules)) for name, modules in bound.items()
                 if len(modules) == 1 and None not in modules}
    problems = []

    def at(node, message, line=None, column=None):
        line = node.lineno if line is None else line
        problems.append(CodeError(line, (node.col_offset if column is None else column) + 1,
                                  message))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name not in MODULE_NAMES:  # also json.decoder: no submodules
                    at(alias, _import_refused(alias.name))
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            if module not in MODULE_NAMES:  # at the module's name, right after `from`
                match = _FROM.match(lines[node.lineno - 1].encode(), node.col_offset)
                at(node, _import_refused(module), column=match.end() if match else None)
                continue
            for alias in node.names:
                if alias.name not in MODULE_NAMES[module] and alias.name != "*":
                    at(alias, _not_provided(module, alias.name))
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            if node.id not in bound and node.id not in GLOBAL_NAMES:
                at(node, _undefined(node.id))
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load) \
                and not node.attr.startswith("_"):  # RestrictedPython refuses those itself
            # at the attribute's name: what follows the last "." up to the node's end (not
            # len(attr): the parser folds fullwidth letters, the source keeps them)
            text = lines[node.end_lineno - 1].encode()[:node.end_col_offset]
            name = text[text.rfind(b".") + 1:].lstrip()
            where = {"line": node.end_lineno, "column": len(text) - len(name)}
            module = module_of.get(node.value.id) if isinstance(node.value, ast.Name) else None
            if node.attr in REFUSED_ATTRIBUTES:
                at(node, _refused_attribute(node.attr), **where)
            elif module and node.attr not in MODULE_NAMES[module]:
                at(node, _not_provided(module, node.attr), **where)
    return problems


def _in_source_order(source: str, errors: list[CodeError]) -> list[CodeError]:
    """Sorted by place, with columns in characters (ast counts UTF-8 bytes)."""
    lines = _NEWLINE.split(source)

    def characters(e: CodeError) -> CodeError:
        if e.line is None or e.column is None or not 0 < e.line <= len(lines):
            return e
        prefix = lines[e.line - 1].encode()[:e.column - 1]
        return CodeError(e.line, len(prefix.decode("utf-8", "replace")) + 1, e.message)

    return sorted(map(characters, errors), key=lambda e: (e.line or 0, e.column or 0))
