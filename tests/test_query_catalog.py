"""execute_query sees only the tenant's own data and nothing about the server: no settings,
roles, other sessions, catalog, statistics, definitions or introspection functions.

Each layer is tested alone: the gate through the API (refused with layer "gate" and the
reason), the database by running the same statements as the query role without the gate
(refused with SQLSTATE 42501, permission denied, and what was denied)."""
from __future__ import annotations

import asyncpg
import pytest

from rpc_server.query import guard as query_guard
from rpc_server.storage.migrations import migrate
from rpc_server.storage.repositories.tenant_sql import setup_problems

from .conftest import migrated_database
from .query_helpers import make_world, query, rejected, run_direct

# attack -> what the gate's reason names
GATE_REFUSES = {
    # server settings, custom settings among them
    "SELECT name, setting FROM pg_settings": "pg_settings",
    "SELECT current_setting('server_version')": "current_setting()",
    "SELECT current_setting('flexdb.query_ticket')": "current_setting()",
    "SELECT CURRENT_SETTING ('work_mem')": "current_setting()",
    "SELECT \"current_setting\"('work_mem')": "current_setting()",
    "SELECT setconfig::text FROM pg_db_role_setting": "pg_db_role_setting",
    "SELECT * FROM pg_show_all_settings()": "pg_show_all_settings",
    # roles
    "SELECT rolname FROM pg_roles": "pg_roles",
    "SELECT usename FROM pg_catalog.pg_user": "pg_catalog",
    "SELECT session_user": "SESSION_USER",
    "SELECT current_user": "CURRENT_USER",
    "SELECT user": "USER",
    "SELECT has_table_privilege('nodes', 'SELECT')": "has_table_privilege()",
    "SELECT pg_has_role('postgres', 'MEMBER')": "pg_has_role",
    "SELECT role_name FROM information_schema.enabled_roles": "information_schema",
    # other sessions' activity
    "SELECT pid, query FROM pg_stat_activity": "pg_stat_activity",
    "SELECT * FROM pg_stat_get_activity(NULL)": "pg_stat_get_activity",
    "SELECT * FROM pg_locks": "pg_locks",
    "SELECT pg_backend_pid()": "pg_backend_pid",
    "SELECT pg_postmaster_start_time()": "pg_postmaster_start_time",
    "SELECT txid_current_snapshot()": "txid_current_snapshot()",
    "SELECT inet_server_addr()": "inet_server_addr()",
    # the catalog, however it is spelled
    "SELECT relname FROM pg_class": "pg_class",
    "SELECT relname FROM \"pg_catalog\" . \"pg_class\"": "pg_catalog",
    "SELECT relname FROM PG_CATALOG.PG_CLASS": "pg_catalog",
    "SELECT relname FROM pg_catalog /* c */ . pg_class": "pg_catalog",
    "TABLE pg_namespace": "pg_namespace",
    "SELECT datname FROM pg_database": "pg_database",
    "SELECT table_name FROM information_schema.tables": "information_schema",
    "SELECT table_name FROM \"INFORMATION_SCHEMA\".\"tables\"": "information_schema",
    "SELECT (NULL::public.api_keys).*": "public",
    "SELECT * FROM flexdb_private.query_ticket_key": "flexdb_private",
    "SELECT 'public.api_keys'::regclass": "regclass",
    "SELECT CAST('pg_authid' AS regtype)": "regtype",
    "SELECT to_regclass('public.api_keys')": "to_regclass()",
    "SELECT version()": "version()",
    "SELECT current_database()": "current_database()",
    "SELECT current_catalog": "CURRENT_CATALOG",
    "SELECT format_type(16, NULL)": "format_type()",
    "SELECT obj_description(1, 'pg_class')": "obj_description()",
    "SELECT * FROM pg_toast.pg_toast_2619": "pg_toast",
    # table statistics
    "SELECT most_common_vals::text FROM pg_stats": "pg_stats",
    "SELECT n_live_tup FROM pg_stat_user_tables": "pg_stat_user_tables",
    "SELECT heap_blks_read FROM pg_statio_user_tables": "pg_statio_user_tables",
    "SELECT pg_stat_get_live_tuples(1259)": "pg_stat_get_live_tuples",
    "SELECT pg_table_size(1259)": "pg_table_size",
    "SELECT pg_database_size(1)": "pg_database_size",
    # view and function definitions
    "SELECT definition FROM pg_views": "pg_views",
    "SELECT pg_get_viewdef('nodes')": "pg_get_viewdef",
    "SELECT prosrc FROM pg_proc": "pg_proc",
    "SELECT view_definition FROM information_schema.views": "information_schema",
    "SELECT definition FROM pg_rules": "pg_rules",
    # issue 19 review, F1: array forms and spellings of the name-lookup types
    "SELECT '{10}'::_regrole::text": "'_regrole'",
    "SELECT '{10}'::regrole[]::text": "'regrole'",
    "SELECT string_agg(x::text, ',') FROM unnest((SELECT array_agg(o)::text::_regclass "
    "FROM generate_series(1, 20000) o)) x WHERE x::text !~ '^[0-9]+$'": "'_regclass'",
    "SELECT '{1}'::_regprocedure::text": "'_regprocedure'",
    "SELECT '{11}'::_regnamespace::text, '{16}'::_regtype::text": "'_regnamespace'",
    "SELECT CAST('{10}' AS \"_regrole\")::text": "'_regrole'",
    "SELECT '10'::\"RegRole\"": "'regrole'",
    "SELECT '10'::/* c */regrole": "'regrole'",
    "SELECT regrole '10'": "'regrole'",
    "SELECT to_json('{1259}'::_regclass)": "'_regclass'",
    # pg_typeof's regtype takes any oid from a literal beside it
    "SELECT COALESCE(pg_typeof(1), '1259')::text": "pg_typeof() is allowed only cast to text",
    "SELECT array_append(ARRAY[pg_typeof(1)], '1259')::text":
        "pg_typeof() is allowed only cast to text",
    "SELECT format('%s', pg_typeof(1))": "pg_typeof() is allowed only cast to text",
    # F2: access control lists name roles
    "SELECT acldefault('r', 10)::text": "acldefault()",
    "SELECT makeaclitem(10, 10, 'SELECT', false)::text": "makeaclitem()",
    "SELECT * FROM aclexplode('{}')": "aclexplode()",
    "SELECT 'postgres=r/postgres'::aclitem": "'aclitem'",
    "SELECT '{}'::_aclitem": "'_aclitem'",
    # F3: the role keywords called as quoted functions
    "SELECT \"session_user\"()::text": "session_user()",
    "SELECT \"current_user\"()::text": "current_user()",
    "SELECT \"current_schema\"()::text": "current_schema()",
    "SELECT \"current_schemas\"(true)::text": "current_schemas()",
    "SELECT \"system_user\"()": "system_user()",
    "SELECT getpgusername()": "getpgusername()",
    # F4: the transaction and multixact counters
    "SELECT age('3'::xid)": "'xid'",
    "SELECT age(CAST('3' AS xid8))": "'xid8'",
    "SELECT mxid_age('1')": "mxid_age()",
    # sequences name any relation by oid in their errors
    "SELECT nextval('1259')": "nextval()",
    "SELECT currval('1259')": "currval()",
}


@pytest.mark.parametrize("sql", GATE_REFUSES)
async def test_the_gate_refuses_the_servers_names(rpc, sql):
    w = await make_world(rpc)
    exc = await rejected(rpc, w["a"]["tenant"], sql)
    assert exc.code == -32006 and exc.data["type"] == "rejected"
    assert exc.data.get("layer") == "gate", exc.message
    assert GATE_REFUSES[sql] in exc.message


# attack -> what PostgreSQL refuses (SQLSTATE 42501: "permission denied for <this>")
DATABASE_REFUSES = {
    "SELECT name, setting FROM pg_settings": "view pg_settings",
    "SELECT current_setting('server_version')": "function current_setting",
    "SELECT current_setting('flexdb.query_ticket')": "function current_setting",
    "SELECT setconfig::text FROM pg_db_role_setting": "table pg_db_role_setting",
    "SELECT * FROM pg_show_all_settings()": "function pg_show_all_settings",
    "SELECT rolname FROM pg_roles": "view pg_roles",
    "SELECT usename FROM pg_user": "view pg_user",
    "SELECT * FROM pg_auth_members": "table pg_auth_members",
    "SELECT pg_get_userbyid(10)": "function pg_get_userbyid",
    "SELECT has_table_privilege('flexdb_query.nodes', 'SELECT')": "function has_table_privilege",
    "SELECT role_name FROM information_schema.enabled_roles": "schema information_schema",
    "SELECT pid, query FROM pg_stat_activity": "view pg_stat_activity",
    "SELECT * FROM pg_stat_get_activity(NULL)": "function pg_stat_get_activity",
    "SELECT * FROM pg_locks": "view pg_locks",
    "SELECT pg_backend_pid()": "function pg_backend_pid",
    "SELECT pg_postmaster_start_time()": "function pg_postmaster_start_time",
    "SELECT pg_conf_load_time()": "function pg_conf_load_time",
    "SELECT txid_current_snapshot()": "function txid_current_snapshot",
    "SELECT pg_current_snapshot()": "function pg_current_snapshot",
    "SELECT inet_server_addr()": "function inet_server_addr",
    "SELECT pg_is_in_recovery()": "function pg_is_in_recovery",
    "SELECT relname FROM pg_class": "table pg_class",
    "SELECT reltuples FROM pg_catalog.pg_class": "table pg_class",
    "SELECT nspname FROM pg_namespace": "table pg_namespace",
    "SELECT typname FROM pg_type": "table pg_type",
    "SELECT datname FROM pg_database": "table pg_database",
    "SELECT attname FROM pg_attribute": "table pg_attribute",
    "SELECT table_name FROM information_schema.tables": "schema information_schema",
    "SELECT 1::information_schema.cardinal_number": "schema information_schema",
    "SELECT (NULL::public.api_keys).*": "schema public",
    "SELECT 'public.api_keys'::regclass": "schema public",
    "SELECT to_regclass('public.api_keys')": "function to_regclass",
    "SELECT version()": "function version",
    "SELECT current_database()": "function current_database",
    "SELECT format_type(16, NULL)": "function format_type",
    "SELECT obj_description(1, 'pg_class')": "function obj_description",
    "SELECT pg_describe_object(1259, 1259, 0)": "function pg_describe_object",
    "SELECT most_common_vals::text FROM pg_stats": "view pg_stats",
    "SELECT n_live_tup FROM pg_stat_user_tables": "view pg_stat_user_tables",
    "SELECT heap_blks_read FROM pg_statio_user_tables": "view pg_statio_user_tables",
    "SELECT pg_stat_get_live_tuples(1259)": "function pg_stat_get_live_tuples",
    "SELECT pg_table_size(1259)": "function pg_table_size",
    "SELECT pg_relation_size(1259)": "function pg_relation_size",
    "SELECT pg_database_size(1)": "function pg_database_size",
    "SELECT definition FROM pg_views": "view pg_views",
    "SELECT pg_get_viewdef('flexdb_query.nodes'::regclass)": "function pg_get_viewdef",
    "SELECT prosrc FROM pg_proc": "table pg_proc",
    "SELECT pg_get_functiondef(1)": "function pg_get_functiondef",
    "SELECT view_definition FROM information_schema.views": "schema information_schema",
    "SELECT definition FROM pg_rules": "view pg_rules",
    # issue 19 review: functions nobody had listed (migration 0014's allowlist revokes them)
    "SELECT acldefault('r', 10)::text": "function acldefault",
    "SELECT makeaclitem(10, 10, 'SELECT', false)::text": "function makeaclitem",
    "SELECT * FROM aclexplode(acldefault('r', 10))": "function acldefault",
    "SELECT \"session_user\"()::text": "function session_user",
    "SELECT \"current_user\"()::text": "function current_user",
    "SELECT \"current_schema\"()::text": "function current_schema",
    "SELECT getpgusername()": "function getpgusername",
    "SELECT age('3'::xid)": "function age",
    "SELECT mxid_age('1'::xid)": "function mxid_age",
    "SELECT nextval('1259')": "function nextval",
    "SELECT lastval()": "function lastval",
    "SELECT getdatabaseencoding()": "function getdatabaseencoding",
    "SELECT setseed(0.5)": "function setseed",
}


@pytest.mark.parametrize("sql", DATABASE_REFUSES)
async def test_the_database_hides_the_server_without_the_gate(rpc, query_pool, sql):
    w = await make_world(rpc)
    with pytest.raises(asyncpg.InsufficientPrivilegeError) as exc:
        await run_direct(query_pool, w["a"]["tenant"], sql)
    assert exc.value.sqlstate == "42501"
    assert f"permission denied for {DATABASE_REFUSES[sql]}" in exc.value.message
    result = await run_direct(query_pool, w["a"]["tenant"], "SELECT count(*) FROM nodes")
    assert result.rows == [[5]]


async def test_statistics_hold_other_tenants_values_the_query_role_cannot_read(
        rpc, query_pool, database_url):
    """pg_stats keeps sampled values of every tenant's rows; the query role reads none."""
    w = await make_world(rpc)
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute("ANALYZE nodes")
        assert await admin.fetchval("SELECT count(*) FROM pg_stats WHERE "
                                    "most_common_vals::text LIKE '%SECRET%'") > 0
    finally:
        await admin.close()
    for sql in ("SELECT most_common_vals::text FROM pg_stats",
                "SELECT stavalues1::text FROM pg_statistic"):
        exc = await rejected(rpc, w["a"]["tenant"], sql)
        assert exc.data["layer"] == "gate"
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await run_direct(query_pool, w["a"]["tenant"], sql)


async def test_role_keywords_are_the_gates_alone(rpc, query_pool):
    """SESSION_USER and friends are syntax, not functions: PostgreSQL cannot revoke them, so
    only the gate stands in front of them (session_user names the server's login role)."""
    w = await make_world(rpc)
    result = await run_direct(query_pool, w["a"]["tenant"], "SELECT current_user")
    assert result.rows == [["flexdb_query"]]  # the statement ran as the query role
    for keyword in ("session_user", "current_user", "current_role", "user", "current_catalog",
                    "current_schema"):
        exc = await rejected(rpc, w["a"]["tenant"], f"SELECT {keyword}")
        assert exc.data["layer"] == "gate" and keyword.upper() in exc.message


async def test_name_lookup_types_are_the_gates_alone(rpc, query_pool):
    """PostgreSQL checks no privilege on a type's input and output, so '{10}'::_regrole
    prints role names even for the query role: only the gate stands in front of these (if
    this ever fails, PostgreSQL started refusing them: move them to DATABASE_REFUSES)."""
    w = await make_world(rpc)
    for sql, leaked in (("SELECT '{10}'::_regrole::text", "postgres"),
                        ("SELECT '{1259}'::_regclass::text", "pg_class"),
                        ("SELECT array_append(ARRAY[pg_typeof(1)], '83')::text", "pg_class")):
        result = await run_direct(query_pool, w["a"]["tenant"], sql)
        assert leaked in result.rows[0][0]
        exc = await rejected(rpc, w["a"]["tenant"], sql)
        assert exc.data["layer"] == "gate", exc.message


# The types PostgreSQL itself treats as oids (binary casts from oid) look their value up in the
# catalog; regconfig and regdictionary (text search configurations) are harmless.
OID_ALIAS_TYPES = """
    SELECT t.typname, a.typname FROM pg_cast c
    JOIN pg_type t ON t.oid = c.castsource JOIN pg_type a ON a.oid = t.typarray
    WHERE c.casttarget = 'oid'::regtype AND c.castmethod = 'b'
      AND t.typname NOT IN ('int4', 'regconfig', 'regdictionary')"""


async def test_the_gate_refuses_every_type_that_looks_names_up(rpc, database_url):
    """Every OID alias type this PostgreSQL has, and its array, is refused by the gate: a new
    one in a newer PostgreSQL fails here until the gate lists it."""
    conn = await asyncpg.connect(database_url)
    try:
        types = await conn.fetch(OID_ALIAS_TYPES)
    finally:
        await conn.close()
    assert {"regrole", "regclass", "regtype", "regprocedure"} <= {t[0] for t in types}
    w = await make_world(rpc)
    for type_name in sorted({name for row in types for name in row} | {"aclitem", "_aclitem"}):
        exc = await rejected(rpc, w["a"]["tenant"], f"SELECT NULL::{type_name}")
        assert exc.data["layer"] == "gate" and f"type '{type_name}'" in exc.message


# Functions of pg_catalog the query role can execute that are not on the reviewed allowlist.
UNREVIEWED_FUNCTIONS = """
    SELECT p.oid::regprocedure::text FROM pg_proc p
    WHERE p.pronamespace = 'pg_catalog'::regnamespace
      AND has_function_privilege('flexdb_query', p.oid, 'EXECUTE')
      AND NOT EXISTS (SELECT 1 FROM flexdb_private.query_functions a
                      WHERE a.entry IN (p.proname, p.oid::regprocedure::text))"""


async def test_the_query_role_executes_only_reviewed_functions(rpc, database_url):
    """Not a list of what to refuse: every function of pg_catalog the query role can execute
    must be on the allowlist of migration 0014 (a new or forgotten one fails here), and that
    list holds nothing the gate refuses by name."""
    await make_world(rpc)  # the server has migrated the database
    conn = await asyncpg.connect(database_url)
    try:
        assert [r[0] for r in await conn.fetch(UNREVIEWED_FUNCTIONS)] == []
        allowed = {r[0] for r in await conn.fetch(
            "SELECT entry FROM flexdb_private.query_functions")}
        executable = await conn.fetchval(
            "SELECT count(*) FROM pg_proc p WHERE has_function_privilege('flexdb_query', "
            "p.oid, 'EXECUTE') AND p.pronamespace = 'pg_catalog'::regnamespace")
    finally:
        await conn.close()
    assert executable > 1000  # the test looks at something: operators, casts, aggregates
    refused_by_gate = {name for name in allowed
                       if name in query_guard.DENIED_FUNCTIONS
                       or name.startswith(query_guard.DENIED_PREFIXES)
                       or (name.startswith(query_guard.SYSTEM_PREFIX)
                           and name not in query_guard.ALLOWED_SYSTEM_FUNCTIONS)}
    assert refused_by_gate == set()


# statement -> its rows: what a tenant writes over its views must keep working
BENIGN = {
    "SELECT version, pg_typeof(version)::text FROM nodes WHERE (data->>'n')::int = 0":
        [[1, "integer"]],
    "SELECT pg_column_size(1::int8), pg_size_pretty(2048::bigint), pg_size_bytes('1 kB')":
        [[8, "2048 bytes", 1024]],
    "SELECT COLLATION FOR ('x'::text)": [['"default"']],
    "SELECT to_tsvector('english', 'cats')::text, to_tsquery('english'::regconfig, 'cat')"
    "::text": [["'cat':1", "'cat'"]],
    "SELECT data->>'pg_class' AS \"user\", 'pg_catalog.pg_settings' AS \"schema\" "
    "FROM nodes WHERE (data->>'n')::int = 0": [[None, "pg_catalog.pg_settings"]],
    "SELECT count(*) FROM nodes n JOIN node_types t ON t.id = n.node_type_id "
    "LEFT JOIN relationships r ON r.source_node_id = n.id": [[5]],
    # age of a timestamp (not of a transaction id), array casts of ordinary types, pg_typeof
    # cast to text, sequences of numbers, functions whose names start like refused ones
    "SELECT age(timestamp '2024-03-01', timestamp '2024-01-01')::text, "
    "age(now()) < interval '1 minute'": [["2 mons", True]],
    "SELECT '{1,2}'::_int4, '{a}'::text[], ARRAY['2024-01-01']::date[]::text":
        [[[1, 2], ["a"], "{2024-01-01}"]],
    "SELECT pg_typeof(data)::text, pg_typeof(ARRAY[id])::text, pg_typeof(1) :: TEXT "
    "FROM nodes WHERE (data->>'n')::int = 0": [["jsonb", "uuid[]", "integer"]],
    "SELECT count(*), max(x), string_agg(x::text, ',' ORDER BY x) "
    "FROM generate_series(1, 3) x": [[3, 3, "1,2,3"]],
    "SELECT regexp_replace('region', 'g', 'x') AS region, upper('user') AS \"user_name\", "
    "round(2.5), md5('a') = md5('a'), gen_random_uuid() IS NOT NULL":
        [["rexion", "USER", 3, True, True]],
}


async def test_benign_queries_over_the_views_keep_working(rpc):
    w = await make_world(rpc)
    for sql, rows in BENIGN.items():
        result = await query(rpc, w["a"]["tenant"], sql)
        assert result["rows"] == rows, sql


async def test_result_columns_of_many_types_are_read(rpc):
    """asyncpg looks up types it does not know (arrays, records, multiranges) in the catalog;
    it does so as the server's role, before the switch to the query role, which can no longer
    read pg_type."""
    w = await make_world(rpc)
    result = await query(rpc, w["a"]["tenant"], """
        SELECT data, data::json AS j, ARRAY[data] AS docs, 1.5::numeric AS num,
               ARRAY[1.5::numeric] AS nums, id, ARRAY[id] AS ids, int4range(1, 3) AS r,
               ARRAY[int4range(1, 3)] AS rs, tstzrange(created_at, updated_at, '[]') AS span,
               ROW(1, 'x') AS rec, ARRAY[ROW(1, 'x')] AS recs, '1 day'::interval AS i,
               'a b'::tsvector AS tv, B'101' AS bits, '{"a": [1]}'::jsonb #> '{a}' AS path,
               ARRAY['a', NULL]::text[] AS texts, int4multirange(int4range(1, 3)) AS mr,
               ARRAY['$.a'::jsonpath] AS paths, '1 2'::int2vector AS vec
        FROM nodes WHERE (data->>'n')::int = 0""")
    types = {c["name"]: c["type"] for c in result["columns"]}
    assert types["docs"] == "jsonb[]" and types["nums"] == "numeric[]"
    assert types["ids"] == "uuid[]" and types["rs"] == "int4range[]"
    row = dict(zip(types, result["rows"][0]))
    assert row["data"]["n"] == 0 and row["j"]["n"] == 0 and row["docs"][0]["n"] == 0
    assert row["nums"] == [1.5] and row["recs"] == [[1, "x"]] and row["texts"] == ["a", None]


@pytest.fixture
def migrated_scratch_database(pg_server_url):
    with migrated_database(pg_server_url) as url:
        yield url


@pytest.mark.parametrize("grant", [
    "GRANT SELECT ON pg_catalog.pg_settings TO flexdb_query",
    "GRANT SELECT (reltuples) ON pg_catalog.pg_class TO PUBLIC",
    "GRANT EXECUTE ON FUNCTION pg_catalog.version() TO PUBLIC",
    "GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_get_live_tuples(oid) TO flexdb_query",
    "GRANT USAGE ON SCHEMA information_schema TO PUBLIC",
    # not on any list of the gate's: found by the allowlist of migration 0014
    "GRANT EXECUTE ON FUNCTION pg_catalog.age(xid) TO flexdb_query",
    "GRANT EXECUTE ON FUNCTION pg_catalog.getdatabaseencoding() TO PUBLIC",
    "GRANT EXECUTE ON FUNCTION pg_catalog.array_in(cstring, oid, integer) TO PUBLIC",
])
async def test_tenant_sql_is_disabled_while_the_query_role_can_read_the_server(
        migrated_scratch_database, grant):
    """The server checks the database against the gate's own lists at start: what the gate
    refuses must be out of the query role's reach, or execute_query is not served."""
    conn = await asyncpg.connect(migrated_scratch_database)
    try:
        await migrate(conn)
        assert await setup_problems(conn, **query_guard.server_names()) == []
        await conn.execute(grant)
        problems = await setup_problems(conn, **query_guard.server_names())
        assert len(problems) == 1 and "flexdb_query can still reach" in problems[0]
    finally:
        await conn.close()
