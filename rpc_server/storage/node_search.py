"""Full-text search in query_nodes: the `search` operator, ranking and snippets, as SQL.

Each node's search vector (nodes.search_vector, kept by a trigger: sql/0021_search.sql) is
made with its node type's text search configuration (its language) from the node type's
fields. A query is parsed with the same configuration as the vectors it is matched against:
the tenant's node types in scope are grouped by language, and each group is matched with
its own query (`websearch_to_tsquery`), restricted to its node types when there are several
groups. `search_vector @@ query` is what the GIN index (tenant_id, search_vector) answers; a
search on a path inside data also matches the path's own strings, row by row."""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from rpc_server.errors import InvalidParams

MAX_SEARCH_TEXT = 1000  # characters of one search's text
MAX_SEARCH_FIELDS = 32  # fields a node type may index
MAX_LANGUAGE = 63  # a text search configuration's name (a PostgreSQL identifier)
DEFAULT_LANGUAGE = "simple"
# ts_headline's options: up to two fragments, the matches between two private-use
# characters that html_snippet turns into <mark>…</mark> once the text is HTML-escaped.
MARK_START, MARK_END = "\ue000", "\ue001"
SNIPPET_SOURCE = 65_536  # characters of a node's text a snippet is looked for in
MAX_SNIPPET = 1_000  # characters of a snippet before escaping (at most 6 bytes each after)
SNIPPET_BYTES = 6 * MAX_SNIPPET + 64  # what a snippet may add to a row, for page budgets
SNIPPET_OPTIONS = (f"StartSel={MARK_START}, StopSel={MARK_END}, MaxFragments=2, "
                   "MaxWords=24, MinWords=8, FragmentDelimiter=\" … \"")
# The node type's search settings, for a row of nodes.
ROW_SEARCH_CONFIG = ("(SELECT t.search_config FROM node_types t "
                     "WHERE t.tenant_id = nodes.tenant_id AND t.id = nodes.node_type_id)")


@dataclass(frozen=True)
class TypeSearch:
    """A node type's search settings: fields (key lists after "data") or None for every
    string value."""
    node_type_id: UUID
    fields: tuple[tuple[str, ...], ...] | None

    def covers(self, path: list[str]) -> bool:
        """Whether the type's vectors hold the strings under `path` ([]: the document's, as
        far as they are indexed)."""
        return self.fields is None or not path or \
            any(tuple(path[:len(f)]) == f for f in self.fields)


@dataclass
class SearchScope:
    """The node types a query may return, by language; filled in by the compiler with the
    placeholders of each language and search text it used."""
    by_language: dict[str, list[TypeSearch]]
    language_args: dict[str, str] = field(default_factory=dict)
    text_args: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, rows: list) -> "SearchScope":
        """From rows of (id, search_config) of the node types in scope."""
        by_language: dict[str, list[TypeSearch]] = {}
        for row in rows:
            config = row["search_config"] or {}
            fields = config.get("fields")
            by_language.setdefault(config.get("language") or DEFAULT_LANGUAGE, []).append(
                TypeSearch(row["id"], None if fields is None else
                           tuple(tuple(f[1:]) for f in fields)))
        return cls(by_language)


def html_snippet(headline: str | None) -> str:
    """ts_headline's text as HTML: the document's text escaped (it is the tenant's data: a
    snippet shown as HTML must not run it), the matches in <mark>…</mark>. A mark the cut
    left open is closed."""
    text = html.escape(headline or "")
    if text.count(MARK_START) > text.count(MARK_END):
        text += MARK_END
    return text.replace(MARK_START, "<mark>").replace(MARK_END, "</mark>")


def uses_search(node: Any) -> bool:
    """Whether a filter (as sent, not yet checked) has a `search` condition."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item.get("op") == "search":
                return True
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


class SearchSql:
    """Builds the SQL of search conditions, the rank and the snippet over one statement's
    arguments (a node_filter.SqlArgs)."""

    def __init__(self, scope: SearchScope | None, args):
        self.scope, self.args = scope, args
        self.used = False  # a search condition was compiled

    def _language_text(self, language: str) -> str:
        assert self.scope is not None
        if language not in self.scope.language_args:
            self.scope.language_args[language] = self.args.add(language, "text")
        return self.scope.language_args[language]

    def _language(self, language: str) -> str:
        return f"{self._language_text(language)}::regconfig"

    def _query(self, language: str, text_args: list[str]) -> str:
        lang = self._language(language)
        return " || ".join(f"websearch_to_tsquery({lang}, {t})" for t in text_args)

    def _type_ids(self, types: list[TypeSearch]) -> str:
        return self.args.add([t.node_type_id for t in types], "uuid[]")

    def condition(self, path: list[str], text: Any, where: str) -> str:
        """The leaf {"field": "data[.path]", "op": "search", "value": text}."""
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_SEARCH_TEXT:
            raise InvalidParams.field(where, f"must be a search text of 1-{MAX_SEARCH_TEXT} "
                                             "characters (web search syntax: words, "
                                             "\"a phrase\", or, -word)")
        if "\x00" in text:
            raise InvalidParams.field(where, "must not contain the character U+0000")
        self.used = True
        if self.scope is None or not self.scope.by_language:
            return "FALSE"  # no node type: nothing to find
        text_arg = self.args.add(text, "text")
        self.scope.text_args.append(text_arg)
        several = len(self.scope.by_language) > 1
        path_arg = self.args.add(path, "text[]") if path else None
        groups = []
        for language, types in self.scope.by_language.items():
            query = self._query(language, [text_arg])
            parts = [f"node_type_id = ANY({self._type_ids(types)})"] if several else []
            if all(t.covers(path) for t in types):  # (the index's predicate, then its key)
                parts.append(f"search_vector <> ''::tsvector AND search_vector @@ {query}")
            # (else a path no vector holds: matched row by row, below)
            if path_arg is not None:  # (flexdb_search_vector: a huge value cannot fail it)
                parts.append(f"flexdb_search_vector(jsonb_build_object('language', "
                             f"{self._language_text(language)}), "
                             f"COALESCE(data #> {path_arg}, 'null'::jsonb)) @@ {query}")
            groups.append("(" + " AND ".join(parts) + ")")
        return "(" + " OR ".join(groups) + ")"

    def _per_language(self, sql_of, otherwise: str) -> str:
        """An expression computed with each row's language: sql_of(language); `otherwise`
        for a row of no node type in scope (one created after the scope was read)."""
        assert self.scope is not None
        groups = list(self.scope.by_language.items())
        if not groups or not self.scope.text_args:
            return otherwise
        if len(groups) == 1:
            return sql_of(groups[0][0])
        cases = " ".join(f"WHEN node_type_id = ANY({self._type_ids(types)}) "
                         f"THEN {sql_of(language)}" for language, types in groups)
        return f"(CASE {cases} ELSE {otherwise} END)"

    def _all_texts(self) -> list[str]:
        assert self.scope is not None
        return self.scope.text_args

    def rank(self) -> str:
        """How well a row matches all the filter's search texts (ts_rank, real)."""
        return self._per_language(lambda language: (
            f"ts_rank(search_vector, {self._query(language, self._all_texts())})"),
            "0::real")

    def snippet(self) -> str:
        """The row's searched strings (their first SNIPPET_SOURCE characters) with the
        matches marked, cut to MAX_SNIPPET characters (html_snippet escapes it)."""
        options = self.args.add(SNIPPET_OPTIONS, "text")
        return self._per_language(lambda language: (
            f"left(ts_headline({self._language(language)}, "
            f"left(flexdb_search_text({ROW_SEARCH_CONFIG}, data), {SNIPPET_SOURCE}), "
            f"{self._query(language, self._all_texts())}, {options}), {MAX_SNIPPET})"), "''")

    @property
    def searched(self) -> bool:
        return self.used
