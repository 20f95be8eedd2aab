"""Does a SQL statement pin every tenant-owned table in it to one tenant_id? (Used by
tests/test_citus_readiness.py; docs/SCALING.md says why it matters.)"""
from __future__ import annotations

import re

import asyncpg


async def tenant_tables(url: str) -> set[str]:
    """Every table of the flexdb schema with a tenant_id column, from the catalog."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT c.table_name FROM information_schema.columns c "
            "JOIN information_schema.tables t USING (table_schema, table_name) "
            "WHERE c.column_name = 'tenant_id' AND t.table_type = 'BASE TABLE' "
            "AND c.table_schema = 'public'")
        return {r["table_name"] for r in rows}
    finally:
        await conn.close()


_STATEMENT = re.compile(r"^(?:LOG:  statement: |LOG:  execute [^:]+: )(.*)\Z", re.S)


def logged_statements(log: str, prefix: str) -> list[str]:
    """The statements in a PostgreSQL log written with `log_statement = all` and
    log_line_prefix `prefix` (a continuation line of a statement starts with a tab)."""
    marker = re.escape(prefix).replace("%u", r"[^@]*")
    statements = []
    for entry in re.split(rf"\n(?={marker})", log):
        body = re.sub(rf"^{marker}", "", entry)
        match = _STATEMENT.match(body)
        if match:
            statements.append(match.group(1).replace("\n\t", "\n").strip())
    return statements


_TOKEN = re.compile(r"""
    (?P<space>\s+) | (?P<comment>--[^\n]*|/\*.*?\*/) | (?P<string>'(?:[^']|'')*')
    | (?P<param>\$\d+) | (?P<quoted>"(?:[^"]|"")*") | (?P<word>[A-Za-z_][A-Za-z_0-9$]*)
    | (?P<op>::|<=|>=|<>|!=|=>|[(),.=;]) | (?P<other>.)""", re.X | re.S)
_SCOPE_STARTS = {"select", "with", "insert", "update", "delete", "values"}
_SET_OPERATIONS = {"union", "intersect", "except"}
# Words after which a relation is named (COPY: the audit chainer's bulk write).
_RELATION_BEFORE = {"from", "join", "into", "update", "using", "copy"}
_NOT_AN_ALIAS = {"where", "on", "join", "left", "right", "inner", "full", "cross", "natural",
                 "using", "set", "order", "group", "limit", "returning", "values", "select",
                 "for", "union", "except", "intersect", "having", "window", "offset",
                 "lateral", "as", "default", "with", "fetch", "tablesample"}
PARAM = "a parameter"


def _tokens(sql: str) -> list[tuple[str, str]]:
    """(kind, text) of each token that matters: words lower-cased, quoted names unquoted,
    string literals and comments left out."""
    tokens = []
    for match in _TOKEN.finditer(sql):
        kind, text = match.lastgroup, match.group()
        if kind == "quoted":
            kind, text = "word", text[1:-1].replace('""', '"')
        elif kind == "word":
            text = text.lower()
        if kind not in ("space", "comment", "string"):
            tokens.append((kind, text))
    return tokens + [("end", "")] * 3


class _Statement:
    """The tenant-owned tables a statement names, and which of them equalities tie to a
    parameter (directly or through joins on tenant_id)."""

    def __init__(self, sql: str, tenant_tables: set[str]):
        self.tokens = _tokens(sql)
        self.tenant_tables = tenant_tables
        self.scope_of, self.parent = self._scopes()
        self.tables: dict[tuple[int, str], str] = {}  # (scope, alias) -> table
        self.tied: dict[object, object] = {}  # union-find over tables and PARAM
        self._find_tables()
        self._tie_equalities()

    def _scopes(self) -> tuple[list[int], dict[int, int | None]]:
        """Each token's query scope: a parenthesised (sub)query, or one branch of a UNION;
        an unqualified column belongs to the nearest scope with a table that has it."""
        parent: dict[int, int | None] = {0: None}
        stack, scope_of = [0], []
        for i, (_, text) in enumerate(self.tokens):
            scope_of.append(stack[-1])
            if text == "(":
                starts_query = self.tokens[i + 1][1] in _SCOPE_STARTS
                if starts_query:
                    parent[len(parent)] = stack[-1]
                stack.append(len(parent) - 1 if starts_query else stack[-1])
            elif text == ")" and len(stack) > 1:
                stack.pop()
            elif text in _SET_OPERATIONS:
                parent[len(parent)] = parent[stack[-1]]
                stack[-1] = len(parent) - 1
        return scope_of, parent

    def _word(self, i: int) -> str | None:
        kind, text = self.tokens[i]
        return text if kind == "word" else None

    def _find_tables(self) -> None:
        for i, (_, text) in enumerate(self.tokens):
            if text in _RELATION_BEFORE and self.tokens[i + 1][1] != "(":
                self._relations_from(i + 1, self.scope_of[i], inserting=text == "into")

    def _relations_from(self, i: int, scope: int, inserting: bool) -> None:
        """Read `[ONLY] [schema.]name [[AS] alias] [, ...]` from token i."""
        while True:
            if self.tokens[i][1] in ("only", "lateral"):
                i += 1
            name, schema = self._word(i), None
            if name is None:
                return
            if self.tokens[i + 1][1] == ".":
                schema, name, i = name, self._word(i + 2), i + 2
            i += 1
            if self.tokens[i][1] == "as":
                i += 1
            alias = self._word(i)
            if alias is None or alias in _NOT_AN_ALIAS:
                alias = name
            else:
                i += 1
            if name in self.tenant_tables and schema in (None, "public"):
                self.tables[(scope, alias)] = name
                self.tied.setdefault((scope, alias), (scope, alias))
                if inserting and self.tokens[i][1] == "(":
                    self._tie_inserted_tenant((scope, alias), i)
            if self.tokens[i][1] != ",":
                return
            i += 1

    def _tie_inserted_tenant(self, table, i: int) -> None:
        """INSERT INTO t (..., tenant_id, ...) VALUES (...) / SELECT ...: tie t to the
        value given for tenant_id."""
        columns, i = self._items(i + 1)
        names = [item[-1][1] if item else "" for item in columns]
        if "tenant_id" not in names:
            return
        position = names.index("tenant_id")
        if self.tokens[i][1] == "values" and self.tokens[i + 1][1] == "(":
            values, _ = self._items(i + 2)
        elif self.tokens[i][1] == "select":
            values, _ = self._items(i + 1, stop={"from", "where", "on", "returning"})
        else:
            return
        if position < len(values):
            self._union(table, self._operand(values[position], self.scope_of[i]))

    def _items(self, i: int, stop=frozenset()) -> tuple[list[list[tuple[str, str]]], int]:
        """The comma-separated items from token i up to a closing parenthesis (consumed) or
        a stop word at the same depth; returns them and the index after them."""
        items, current, depth = [], [], 0
        while self.tokens[i][0] != "end":
            text = self.tokens[i][1]
            if depth == 0 and (text == ")" or text in stop or text == ";"):
                return items + [current], i + (text == ")")
            if depth == 0 and text == ",":
                items.append(current)
                current = []
            else:
                depth += (text == "(") - (text == ")")
                current.append(self.tokens[i])
            i += 1
        return items + [current], i

    def _operand(self, item: list[tuple[str, str]], scope: int):
        """PARAM for `$n[::type]`, the table for `[alias.]tenant_id[::type]`, else None."""
        while len(item) >= 2 and item[-2][1] == "::":
            item = item[:-2]
        if len(item) == 1 and item[0][0] == "param":
            return PARAM
        if item and item[-1][1] == "tenant_id":
            qualifier = item[-3][1] if len(item) == 3 and item[1][1] == "." else None
            if len(item) == 1 or qualifier:
                return self._table_of(qualifier, scope)
        return None

    def _table_of(self, qualifier: str | None, scope: int | None):
        """The tenant table a `[qualifier.]tenant_id` in scope refers to, if any."""
        while scope is not None:
            in_scope = [key for key in self.tables if key[0] == scope]
            if qualifier is not None and (scope, qualifier) in self.tables:
                return (scope, qualifier)
            if qualifier is None and in_scope:
                return in_scope[0] if len(in_scope) == 1 else None
            scope = self.parent[scope]
        return None

    def _tie_equalities(self) -> None:
        for i, (_, text) in enumerate(self.tokens):
            if text == "=":
                left = self._operand(self._operand_before(i), self.scope_of[i])
                right = self._operand(self._operand_after(i), self.scope_of[i])
                if left is not None and right is not None:
                    self._union(left, right)

    def _operand_before(self, i: int) -> list[tuple[str, str]]:
        j = i - 1
        while self.tokens[j - 1][1] == "::":
            j -= 2
        while self.tokens[j - 1][1] == "." and j >= 2:
            j -= 2
        return self.tokens[j:i]

    def _operand_after(self, i: int) -> list[tuple[str, str]]:
        j = i + 2
        while self.tokens[j][1] == ".":
            j += 2
        while self.tokens[j][1] == "::":
            j += 2
        return self.tokens[i + 1:j]

    def _root(self, node):
        while self.tied.setdefault(node, node) != node:
            node = self.tied[node]
        return node

    def _union(self, a, b) -> None:
        if a is not None and b is not None:
            self.tied[self._root(a)] = self._root(b)

    def unpinned(self) -> list[str]:
        pinned = self._root(PARAM)
        return sorted({f"{table} {alias}" for (scope, alias), table in self.tables.items()
                       if self._root((scope, alias)) != pinned})


def unpinned_tables(sql: str, tenant_tables: set[str]) -> list[str]:
    """The tenant-owned tables (`table alias`) that the statement does not pin to one
    tenant_id: by `tenant_id = $n`, or by joining on tenant_id a table that is pinned."""
    return _Statement(sql, tenant_tables).unpinned()
