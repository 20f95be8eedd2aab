"""The package map holds: every module of rpc_server imports only down the layers
(rpc_server.LAYERS) and the foundation, the foundation imports only itself, every layer
package says in its docstring what it owns, and SQL is written only under storage/."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import rpc_server
from rpc_server import FOUNDATION, LAYERS

PACKAGE = Path(rpc_server.__file__).parent
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)
# A statement a module sends to PostgreSQL: the start of a query text in a string.
SQL_TEXT = re.compile(r"^\s*(SELECT\b.*\bFROM\b|INSERT INTO \w+|UPDATE \w+ SET\b|"
                      r"DELETE FROM \w+|WITH \w+ AS \()", re.DOTALL)


def place(module: str) -> str:
    """'top', 'foundation' or the layer of rpc_server.<module path>."""
    parts = module.split(".")
    if len(parts) < 2:
        return "top"
    if parts[1] in LAYERS:
        return parts[1]
    return "foundation" if parts[1] in FOUNDATION else "top"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of rpc_server's own modules, type-only ones too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}:{node.lineno}: relative import")
        if isinstance(node, ast.ImportFrom) and node.module and \
                node.module.split(".")[0] == "rpc_server":
            if node.module == "rpc_server":  # from rpc_server import methods
                found += [(node.lineno, f"rpc_server.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names
                      if a.name.split(".")[0] == "rpc_server"]
    return [(line, name) for line, name in found if name != "rpc_server"]


def allowed(importer: str, imported_module: str) -> bool:
    mine, theirs = place(importer), place(imported_module)
    if theirs == "foundation":
        return True
    if mine == "foundation":
        return False
    if mine == "top":
        return True
    if theirs == "top":
        return False
    return LAYERS.index(theirs) >= LAYERS.index(mine)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_down_the_layers(path):
    me = module_name(path)
    wrong = [f"{me}:{line} imports {name}" for line, name in imported(path)
             if not allowed(me, name)]
    assert not wrong, wrong


def test_the_rule_itself_refuses_an_upward_import():
    assert not allowed("rpc_server.storage.db", "rpc_server.api.params")
    assert not allowed("rpc_server.errors", "rpc_server.storage.db")
    assert not allowed("rpc_server.ops.metrics", "rpc_server.app")
    assert allowed("rpc_server.api.context", "rpc_server.storage.db")
    assert allowed("rpc_server.app", "rpc_server.methods")


@pytest.mark.parametrize("layer", [layer for layer in LAYERS if (PACKAGE / layer).is_dir()])
def test_every_layer_says_what_it_owns(layer):
    doc = ast.get_docstring(ast.parse((PACKAGE / layer / "__init__.py").read_text()))
    assert doc and len(doc.split()) >= 20, f"rpc_server/{layer} has no paragraph of its own"


def test_sql_is_written_only_under_storage():
    outside = []
    for path in MODULES:
        if module_name(path).startswith("rpc_server.storage"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                    SQL_TEXT.match(node.value) and not _is_docstring(node, path):
                outside.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not outside, outside


def _is_docstring(node: ast.Constant, path: Path) -> bool:
    return "\n" in node.value and len(node.value.split()) > 12  # prose, not a statement
