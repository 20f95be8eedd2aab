"""What pipeline code may do: RestrictedPython's compile-time policy plus the run-time guards
and the only names user code can reach.

User code never gets a real module object (json, re, datetime ... reach sys and builtins
through plain attributes): each allowed import is a fresh namespace of vetted functions and
classes. Attribute access goes through safer_getattr_raise (no `_` names, no frame/code/
generator internals; str.format only with plain fields), items and iteration through guards,
and writes only to objects the code created itself (dicts, lists, instances of its own
classes). No open/eval/exec/compile/globals/vars/type/getattr of private names, classes only
as plain records (no metaclasses, decorators or bases from outside the code but plain
exceptions), no printing to real files."""
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
from builtins import __build_class__ as python_build_class
from dataclasses import dataclass
from types import SimpleNamespace

from RestrictedPython import compile_restricted_exec, safe_builtins
from RestrictedPython.Eval import default_guarded_getitem, default_guarded_getiter
from RestrictedPython.Guards import (
    full_write_guard,
    guarded_iter_unpack_sequence,
    guarded_unpack_sequence,
    safer_getattr_raise,
)
from RestrictedPython.transformer import ALLOWED_FUNC_NAMES, RestrictingNodeTransformer

MAX_CODE_LENGTH = 100_000
ENTRY_POINT = "run"
LINE_COLUMN = re.compile(r"^Line (\d+)(?:, column (\d+))?: (.*)$", re.S)


@dataclass(frozen=True)
class CodeError:
    line: int | None
    column: int | None
    message: str


# The special methods a pipeline class may define: RestrictedPython's own list (comparisons,
# `in`, __init__). Every other dunder is a hook the interpreter calls behind the guards'
# backs (__getattr__, __setattr__, __format__, __index__, __hash__, __get__, __del__ ...).
SPECIAL_METHODS = ", ".join(sorted(ALLOWED_FUNC_NAMES))
# What a class body may hold: a docstring, `pass`, plain assignments and `def` methods.
CLASS_BODY = (ast.Assign, ast.FunctionDef, ast.Pass)


def _names_object(base) -> bool:
    return isinstance(base, ast.Name) and base.id == "object"


def _is_docstring(statement) -> bool:
    return isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant) \
        and isinstance(statement.value.value, str)


class PipelinePolicy(RestrictingNodeTransformer):
    """RestrictedPython's policy, reporting columns too, with classes only as plain records
    (their bases are checked when the class is made: see safe_build_class)."""

    def error(self, node, info):  # noqa: D401 - RestrictedPython's hook
        line = getattr(node, "lineno", None)
        column = getattr(node, "col_offset", None)
        where = f"Line {line}" + (f", column {column + 1}" if column is not None else "")
        self.errors.append(f"{where}: {info}")

    def check_name(self, node, name, allow_magic_methods=False):
        if allow_magic_methods and name.startswith("__") and name.endswith("__") \
                and name not in ALLOWED_FUNC_NAMES:
            self.error(node, f"special method {name!r} is not allowed: a pipeline class may "
                             f"define only {SPECIAL_METHODS} (the others are hooks the "
                             "interpreter calls around the sandbox's guards)")
            return
        super().check_name(node, name, allow_magic_methods)

    def visit_ClassDef(self, node):
        if node.keywords:
            self.error(node, "class keywords are not allowed (no metaclass=, no arguments "
                             "for a base class)")
        if node.decorator_list:
            self.error(node.decorator_list[0], "decorators on classes are not allowed")
        for statement in node.body:
            if not isinstance(statement, CLASS_BODY) and not _is_docstring(statement):
                self.error(statement, "a class body may hold only a docstring, assignments "
                                      "and def methods")
        # `class A(object)` is `class A`: `object` is no name pipelines have otherwise
        node.bases = [b for b in node.bases if not _names_object(b)]
        node.keywords = []  # refused above; RestrictedPython adds its own metaclass
        return super().visit_ClassDef(node)

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
        self.limit, self.size, self.dropped = limit, 0, 0
        self.parts: list[str] = []

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


# ---------------------------------------------------------------- str.format
# str.format and format_map resolve `{0.attr}` and `{0[key]}` inside C, past every guard
# (`'{0.__class__}'.format(x)`). Fields that only name a position or a keyword reach nothing
# an f-string does not: those are allowed, checked on each call (the text is rarely a literal).
FORMAT_METHODS = ("format", "format_map")


def format_field_problem(text: str) -> str | None:
    """Why str.format must refuse `text` (a field with attribute access or indexing, also in
    a nested format spec), or None."""
    pending = [text]
    while pending:
        for field, spec in _format_fields(pending.pop()):
            if "." in field or "[" in field:
                return (f"format field {{{field}}} is not allowed: str.format and format_map "
                        "take only plain fields ({}, {0}, {name}, with !r/!s/!a and a format "
                        "spec); attribute access and indexing in a field reach past the "
                        "sandbox's guards (use an f-string)")
            if spec:
                pending.append(spec)
    return None


def _format_fields(text: str):
    """(field, format spec) of each replacement field, in order, up to where the text is
    malformed: str.format formats the fields before that place, then stops with its error."""
    parts = iter(string.Formatter().parse(text))
    while True:
        try:
            _, field, spec, _ = next(parts)
        except (StopIteration, ValueError):
            return
        if field is not None:
            yield field, spec


def _checked_format(owner, name: str):
    """`owner.format` / `owner.format_map` (a str, or the str type for the unbound method),
    refusing the text's bad fields before anything is formatted."""
    method = getattr(str, name)

    def check(text):
        if isinstance(text, str):
            problem = format_field_problem(text)
            if problem:
                raise ValueError(problem)

    if owner is str:
        def unbound(text, *args, **kwargs):
            check(text)
            return method(text, *args, **kwargs)
        return unbound

    def bound(*args, **kwargs):
        check(owner)
        return method(owner, *args, **kwargs)
    return bound


def _guarded_getattr(obj, name, *default):
    if type(name) is str and name in FORMAT_METHODS and (type(obj) is str or obj is str):
        return _checked_format(obj, name)
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


# ---------------------------------------------------------------- classes
class PipelineClass(type):
    """The type of every class pipeline code defines (the metaclass RestrictedPython's
    class statement asks for, through __metaclass__): it marks the classes whose instances
    the code may write attributes on."""


def _plain_exception(cls) -> bool:
    """An exception class whose instances hold nothing past BaseException's fields: their
    subclasses' instances may take attributes (a UnicodeError's `object` or an OSError's
    `filename` are read by C code that trusts their type, so those are not bases)."""
    return issubclass(cls, Exception) and cls.__basicsize__ == Exception.__basicsize__


def safe_build_class(body, name, *bases, metaclass=None, **keywords):
    """`class` statements: a PipelineClass, derived only from the code's own classes and
    plain exceptions (never from builtins, from types got at run time, or with keywords)."""
    if metaclass is not PipelineClass or keywords:
        raise TypeError(f"class {name}: metaclasses and class keywords are not allowed")
    for base in bases:
        if type(base) is not PipelineClass and not any(base is e for e in EXCEPTION_BASES):
            raise TypeError(f"class {name}: a pipeline class may derive only from classes the "
                            "code defines and from Exception or a builtin exception like "
                            "ValueError, KeyError, RuntimeError (not from builtins or types "
                            "got at run time)")
    return python_build_class(body, name, *bases, metaclass=PipelineClass)


def _guarded_write(obj):
    """What `x.attr = v`, `x[k] = v` and `del` go through: items of dicts and lists, plain
    attributes (the compiler refuses `_` names) of instances of the code's own classes."""
    if type(type(obj)) is PipelineClass:
        return obj
    return full_write_guard(obj)


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
                if k not in ("setattr", "delattr", "_getattr_", "id")}
    builtins.update(SAFE_EXTRA_BUILTINS)
    builtins["__build_class__"] = safe_build_class
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
        "_write_": _guarded_write,
        "__metaclass__": PipelineClass,
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
# The classes a pipeline class may derive from besides its own (see _plain_exception).
EXCEPTION_BASES = tuple(_RUN_NAMES[n] for n in sorted(_EXCEPTIONS)
                        if _plain_exception(_RUN_NAMES[n]))
_BUILTINS_SHOWN = ", ".join(sorted(
    (n for n in GLOBAL_NAMES if not n.startswith("_") and n not in _EXCEPTIONS
     and not keyword.iskeyword(n)), key=str.lower))


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
    imports that are not allowed, names the code neither defines nor gets, str.format on a
    literal with fields the guard refuses, and names an allowed module does not provide."""
    tree = ast.parse(source)
    object_bases = {id(base) for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
                    for base in node.bases if _names_object(base)}  # dropped when compiled
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
            if node.id not in bound and node.id not in GLOBAL_NAMES \
                    and id(node) not in object_bases:
                at(node, _undefined(node.id))
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load) \
                and not node.attr.startswith("_"):  # RestrictedPython refuses those itself
            # at the attribute's name: what follows the last "." up to the node's end (not
            # len(attr): the parser folds fullwidth letters, the source keeps them)
            # (ast.parse sets end_lineno; it is optional only for nodes built by hand)
            text = lines[(node.end_lineno or node.lineno) - 1].encode()[:node.end_col_offset]
            name = text[text.rfind(b".") + 1:].lstrip()
            where = {"line": node.end_lineno, "column": len(text) - len(name)}
            module = module_of.get(node.value.id) if isinstance(node.value, ast.Name) else None
            problem = _literal_format_problem(node)
            if problem:
                at(node, problem, **where)
            elif module and node.attr not in MODULE_NAMES[module]:
                at(node, _not_provided(module, node.attr), **where)
    return problems


def _literal_format_problem(node: ast.Attribute) -> str | None:
    """`'...'.format` on a literal whose fields a run would refuse (see _checked_format)."""
    if node.attr in FORMAT_METHODS and isinstance(node.value, ast.Constant) \
            and isinstance(node.value.value, str):
        return format_field_problem(node.value.value)
    return None


def _in_source_order(source: str, errors: list[CodeError]) -> list[CodeError]:
    """Sorted by place, with columns in characters (ast counts UTF-8 bytes)."""
    lines = _NEWLINE.split(source)

    def characters(e: CodeError) -> CodeError:
        if e.line is None or e.column is None or not 0 < e.line <= len(lines):
            return e
        prefix = lines[e.line - 1].encode()[:e.column - 1]
        return CodeError(e.line, len(prefix.decode("utf-8", "replace")) + 1, e.message)

    return sorted(map(characters, errors), key=lambda e: (e.line or 0, e.column or 0))
