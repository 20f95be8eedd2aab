"""The first layer in front of execute_query: a text check with sqlparse.

It accepts exactly one read-only statement (SELECT, WITH ... SELECT, VALUES, TABLE) and
refuses data-modifying CTEs, locking clauses, SELECT INTO and calls to server functions that
reach files, large objects, other databases, settings, other backends, locks or sleep. Tenant
SQL names only the three views, ordinary functions and operators: any name of the server's own
(its catalogs, statistics views, settings, roles, schemas and introspection functions) is
refused wherever it stands, quoted or not (sql/0011_query_catalog.sql removes the same from the
query role in the database, and sql/0014_query_function_allowlist.sql every function of
pg_catalog not reviewed as harmless).

It is not the security boundary (the database is: see sql/0004_query.sql and
storage/repositories/tenant_sql.py); it exists to give a clear early answer and to stop what the
database would allow but a tenant should not do. Where sqlparse could read the text
differently from PostgreSQL (a backslash before a quote in a standard string, nested block
comments, Unicode-escape identifiers) the statement is refused rather than guessed at."""
from __future__ import annotations

import re
from dataclasses import dataclass

import sqlparse
from sqlparse import tokens as T

# sqlparse takes ~0.2 s for 20,000 characters of dense SQL: longer texts should pass values as
# params ($1 = ANY($2) instead of a literal list).
MAX_SQL_LENGTH = 20_000

# Statements that may stand at the top level (or first inside parentheses).
READ_STARTS = {"select", "with", "values", "table"}
# Words that start a statement that changes something: never first inside parentheses
# (a data-modifying CTE or a subquery that is not a query).
WRITE_STARTS = {
    "insert", "update", "delete", "merge", "create", "drop", "alter", "truncate", "grant",
    "revoke", "copy", "call", "do", "set", "reset", "notify", "listen", "unlisten", "lock",
    "prepare", "execute", "deallocate", "discard", "vacuum", "analyze", "cluster", "reindex",
    "refresh", "comment", "security", "import", "load", "checkpoint", "begin", "commit",
    "rollback", "savepoint", "release", "explain",
}
LOCK_WORDS = {"update", "share", "no", "key"}
# Every name starting with pg_ is the server's: its catalogs (pg_class, pg_stats, pg_settings,
# pg_stat_activity ...), the pg_catalog and pg_toast schemas and its functions (files, backends,
# locks, sleep, statistics, object definitions, sizes, notifications). Allowed are only these,
# which describe nothing but the value they are given (COLLATION FOR (x) calls
# pg_collation_for).
SYSTEM_PREFIX = "pg_"
ALLOWED_SYSTEM_FUNCTIONS = {"pg_typeof", "pg_column_size", "pg_size_pretty", "pg_size_bytes",
                            "pg_collation_for"}
# Schemas of the server's catalog and tables (a table's row type names its columns).
SERVER_SCHEMAS = {"information_schema", "public", "flexdb_private"}
# Keywords that name the server's roles and database (session_user: the server's login).
SERVER_KEYWORDS = {"user", "current_user", "session_user", "current_role", "system_user",
                   "current_catalog", "current_schema"}
# Types whose input or output looks a name up in the catalog: '{10}'::regrole[] prints role
# names, 'api_keys'::regclass answers whether a table exists. PostgreSQL does not check
# privileges on a type's input and output, so this rests on the gate alone. Refused with their
# array forms (_regrole): the OID alias types (regconfig and regdictionary, for text search,
# stay), aclitem (role names) and xid/xid8 (age(xid) reads the transaction counter; the gate
# cannot tell age's overloads apart). oid, cid, tid and pg_lsn stay: they are numbers, and the
# functions that would interpret them are revoked (sql/0014_query_function_allowlist.sql).
NAME_LOOKUP_TYPES = {"regclass", "regtype", "regproc", "regprocedure", "regoper",
                     "regoperator", "regnamespace", "regrole", "regcollation", "aclitem",
                     "xid", "xid8"}
ARRAY_TYPE_PREFIX = "_"
# pg_typeof returns a regtype, which takes any oid from a literal beside it
# (COALESCE(pg_typeof(1), '1259') names a table): it is let through only cast to text.
TYPE_OF_FUNCTION = "pg_typeof"
# Functions refused when called, besides the pg_ ones.
DENIED_FUNCTIONS = {
    "set_config", "loread", "lowrite",
    "ts_stat", "ts_rewrite",  # they run SQL given as a string
    # introspection: settings, the server's version and database, comments on objects,
    # type names by oid, row security
    "current_setting", "version", "current_database", "current_schemas", "current_query",
    "obj_description", "col_description", "shobj_description", "format_type",
    "row_security_active",
    # roles, schemas and the database, called as functions ("session_user"())
    "user", "current_user", "session_user", "current_role", "system_user", "current_catalog",
    "current_schema", "getpgusername",
    # access control lists name roles: acldefault('r', 10) -> {postgres=arwdDxt/postgres}
    "acldefault", "makeaclitem", "aclexplode", "aclinsert", "aclremove", "aclcontains",
    # the transaction and multixact counters
    "mxid_age",
    # sequences: writes, and their errors name any relation by oid
    "nextval", "currval", "setval", "lastval",
}
DENIED_PREFIXES = (
    "lo_",                                  # large objects
    "dblink", "postgres_fdw",               # other databases
    "query_to_xml", "table_to_xml", "cursor_to_xml", "schema_to_xml", "database_to_xml",
    "has_",                                 # has_*_privilege: which objects and roles exist
    "to_reg",                               # to_regclass and friends: name lookups
    "txid_",                                # transaction ids: other sessions' activity
    "inet_server_", "inet_client_",         # the server's network addresses
)


# Parameters ($1) and identifiers with a $ after their first character (a$b).
DOLLAR_OK = re.compile(r"^(\$\d+|[A-Za-z_\u0080-\uffff][\w\u0080-\uffff]*\$[\w$\u0080-\uffff]*)$")


class GateRejection(ValueError):
    """The statement is refused; the message says why."""


@dataclass(frozen=True)
class CheckedStatement:
    sql: str  # the caller's single statement, without trailing semicolons


def _meaningful(tokens):
    return [t for t in tokens if not t.is_whitespace and t.ttype not in T.Comment]


def _is_punct(token, value: str) -> bool:
    return token.ttype in T.Punctuation and token.value == value


def _name(token) -> str:
    """A token as an identifier: quoted ones unquoted, all lower-cased (stricter than
    PostgreSQL, which keeps the case of quoted names)."""
    value = token.value
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1].replace('""', '"')
    return value.lower()


def _closing_quote(text: str, quote: str, backslash_escapes: bool) -> int:
    """Where PostgreSQL ends a quoted literal or identifier that starts at text[0]."""
    i = 1
    while i < len(text):
        char = text[i]
        if backslash_escapes and char == "\\":
            i += 2
        elif char == quote:
            if text[i + 1:i + 2] == quote:
                i += 2
            else:
                return i
        else:
            i += 1
    return -1


def _ambiguous(token, prev: str, next_token) -> str | None:
    """Why sqlparse and PostgreSQL may read this token differently, or None."""
    value, ttype = token.value, token.ttype
    if ttype in T.Error:
        return f"{value[:10]!r} cannot be read unambiguously outside a literal or quoted name"
    if ttype in T.Comment.Multiline and "/*" in value[2:]:
        return "nested block comments are not accepted"
    if ttype in T.Comment.Single and not value.startswith("--"):
        return "'#' is an operator in PostgreSQL, not a comment"
    if ttype in T.String.Single:
        if _closing_quote(value, "'", prev.lower() == "e") != len(value) - 1:
            return ("a backslash before a quote is ambiguous in a string literal: write '' "
                    "for a quote, or use E'...' escapes consistently")
    if ttype in T.String.Symbol and _closing_quote(value, '"', False) != len(value) - 1:
        return "a quoted identifier must escape a double quote as \"\""
    if ttype in T.Name and value[:1] in ("`", "´", "["):
        return "`, ´ and [ ] are not identifier quotes in PostgreSQL"
    if "$" in value and ttype not in T.Literal and ttype not in T.Comment \
            and not DOLLAR_OK.match(value):
        return "a '$' that is neither a parameter ($1) nor a dollar quote ($tag$ ... $tag$)"
    if value.lower() in ("u", "u&") and next_token is not None \
            and next_token.value.startswith(("&", "'", '"')):
        return "Unicode-escape (U&) strings and identifiers are not accepted"
    return None


def _check_lexing(raw_tokens) -> None:
    """Refuse text where sqlparse and PostgreSQL may not agree on what is code."""
    for i, token in enumerate(raw_tokens):
        prev = raw_tokens[i - 1].value if i else ""
        following = raw_tokens[i + 1] if i + 1 < len(raw_tokens) else None
        reason = _ambiguous(token, prev, following)
        if reason:
            raise GateRejection(reason)


def _is_name(token) -> bool:
    return token.ttype in T.Name or token.ttype in T.Keyword or token.ttype in T.String.Symbol


def _server_name(token) -> str | None:
    """Why this name is the server's and not the tenant's, or None."""
    name = _name(token)
    if name.startswith(SYSTEM_PREFIX) and name not in ALLOWED_SYSTEM_FUNCTIONS:
        return f"{name!r}: names starting with pg_ belong to the server's catalog"
    if name in SERVER_SCHEMAS:
        return f"schema {name!r} is not readable: queries see the views nodes, " \
               "node_types and relationships"
    if name in NAME_LOOKUP_TYPES or name.removeprefix(ARRAY_TYPE_PREFIX) in NAME_LOOKUP_TYPES:
        return f"type {name!r} reads the server's catalog or counters"
    if name in SERVER_KEYWORDS and token.ttype not in T.String.Symbol:
        return f"{name.upper()} names the server's roles or database"
    return None


def _check_names(tokens) -> None:
    """Refuse the server's names wherever they stand: a relation, a qualifier, a function, a
    cast's type. Quoted names count too ("pg_catalog"."pg_class")."""
    for token in tokens:
        reason = _server_name(token) if _is_name(token) else None
        if reason:
            raise GateRejection(reason)


def _closing_paren(tokens, open_index: int) -> int:
    depth = 0
    for i in range(open_index, len(tokens)):
        if _is_punct(tokens[i], "("):
            depth += 1
        elif _is_punct(tokens[i], ")"):
            depth -= 1
            if depth == 0:
                return i
    return len(tokens)


def _cast_to_text(tokens, close_index: int) -> bool:
    following = tokens[close_index + 1:close_index + 3]
    return (len(following) == 2 and _is_punct(following[0], "::")
            and following[1].value.lower() == "text")


def _check_functions(tokens) -> None:
    for i, token in enumerate(tokens):
        if not _is_punct(token, "(") or i == 0:
            continue
        prev = tokens[i - 1]
        if prev.ttype in T.Punctuation or prev.ttype in T.Operator:
            continue
        name = _name(prev)
        if name in DENIED_FUNCTIONS or name.startswith(DENIED_PREFIXES):
            raise GateRejection(f"function {name}() is not allowed in queries")
        if name == TYPE_OF_FUNCTION and not _cast_to_text(tokens, _closing_paren(tokens, i)):
            raise GateRejection(f"{name}() is allowed only cast to text: {name}(x)::text")


def _check_clauses(tokens) -> None:
    for i, token in enumerate(tokens):
        word = token.value.lower() if token.ttype in T.Keyword else None
        if word == "into":
            raise GateRejection("SELECT INTO is not allowed: queries cannot create tables")
        if word == "for" and i + 1 < len(tokens) and tokens[i + 1].value.lower() in LOCK_WORDS:
            raise GateRejection("locking clauses (FOR UPDATE/SHARE) are not allowed")
        if _is_punct(token, "(") and i + 1 < len(tokens):
            first = tokens[i + 1]
            if first.ttype in T.Keyword and first.value.lower() in WRITE_STARTS:
                raise GateRejection(f"{first.value.upper()} inside a query is not allowed "
                                    "(only reading statements)")


def _check_start(statement, tokens) -> None:
    index = 0
    while index < len(tokens) and _is_punct(tokens[index], "("):
        index += 1
    if index == len(tokens):
        raise GateRejection("the statement is empty")
    first = tokens[index].value.lower()
    if tokens[index].ttype not in T.Keyword or first not in READ_STARTS:
        raise GateRejection("only SELECT (or WITH ... SELECT, VALUES, TABLE) statements are "
                            f"allowed, not {tokens[index].value[:30].upper()!r}")
    if first == "with" and statement.get_type() != "SELECT":
        raise GateRejection("a WITH statement must end in a SELECT")


def check(sql: str) -> CheckedStatement:
    """Return the statement to run, or raise GateRejection."""
    if len(sql) > MAX_SQL_LENGTH:
        raise GateRejection(f"the statement is longer than {MAX_SQL_LENGTH} characters")
    if "\x00" in sql:
        raise GateRejection("the statement contains the character U+0000")
    try:
        statements = [s for s in sqlparse.parse(sql)
                      if any(not _is_punct(t, ";") for t in _meaningful(s.flatten()))]
    except Exception as exc:  # noqa: BLE001 - sqlparse limits (depth, size) or its bugs
        raise GateRejection(f"the statement could not be parsed ({type(exc).__name__})") \
            from None
    if not statements:
        raise GateRejection("the statement is empty")
    if len(statements) > 1:
        raise GateRejection("exactly one statement is allowed")
    statement = statements[0]
    raw = list(statement.flatten())
    _check_lexing(raw)
    tokens = _meaningful(raw)
    while tokens and _is_punct(tokens[-1], ";"):
        tokens.pop()
    _check_start(statement, tokens)
    _check_clauses(tokens)
    _check_names(tokens)
    _check_functions(tokens)
    text = str(statement).rstrip()
    while text.endswith(";"):
        text = text[:-1].rstrip()
    return CheckedStatement(text)


def server_names() -> dict:
    """What the gate refuses, for the start-up check that the query role can reach none of
    it at the database either (storage.repositories.tenant_sql.setup_problems)."""
    return {"schemas": SERVER_SCHEMAS, "functions": DENIED_FUNCTIONS,
            "prefixes": (SYSTEM_PREFIX, *DENIED_PREFIXES), "allowed": ALLOWED_SYSTEM_FUNCTIONS}
