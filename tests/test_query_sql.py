"""execute_query: read-only SQL over a tenant's own data.

Each layer is tested on its own: the sqlparse gate through the API, and the database layer
(restricted role, ticketed security_barrier views, READ ONLY, revoked functions, the subquery
wrapper, timeouts, pool reset) by calling it directly with statements the gate refuses."""
from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import pytest

from rpc_server.client import InvalidParams, QueryRejected

from .query_helpers import SECRET, make_world, query, rejected, run_direct

# ---------------------------------------------------------------- results

async def test_result_shape_and_json_safe_values(rpc):
    w = await make_world(rpc)
    result = await query(rpc, w["a"]["tenant"], """
        SELECT id, created_at, data, 1.5::numeric AS half, 10::numeric AS ten,
               0.1234567890123456789::numeric AS precise, 'NaN'::float8 AS nan,
               '\\xdeadbeef'::bytea AS bytes, interval '1 hour 30 minutes' AS span,
               ARRAY[1, 2] AS ints, date '2024-02-29' AS day, true AS yes,
               '10.0.0.1'::inet AS addr, int4range(1, 5) AS range, NULL AS nothing,
               ROW(1, 'x') AS pair
        FROM nodes WHERE (data->>'n')::int = 0""")
    assert result["row_count"] == 1 and result["truncated"] is False
    assert isinstance(result["duration_ms"], (int, float)) and result["duration_ms"] >= 0
    columns = {c["name"]: c["type"] for c in result["columns"]}
    assert columns["id"] == "uuid" and columns["data"] == "jsonb"
    assert columns["ints"] == "int4[]" and columns["created_at"] == "timestamptz"
    row = dict(zip(columns, result["rows"][0]))
    assert row["id"] == w["a"]["nodes"][0]
    assert row["created_at"].endswith("+00:00") and "T" in row["created_at"]
    assert row["data"]["kind"] == "even" and row["data"]["n"] == 0
    assert row["half"] == 1.5 and row["ten"] == 10
    assert row["precise"] == "0.1234567890123456789"  # a float would lose digits
    assert row["nan"] == "NaN"
    assert row["bytes"] == "\\xdeadbeef"
    assert row["span"] == 5400.0
    assert row["ints"] == [1, 2] and row["day"] == "2024-02-29" and row["yes"] is True
    assert row["addr"] == "10.0.0.1" and row["nothing"] is None and row["pair"] == [1, "x"]
    assert row["range"] == {"lower": 1, "upper": 5, "lower_inc": True, "upper_inc": False,
                            "empty": False}


async def test_params_are_fitted_to_their_types(rpc):
    w = await make_world(rpc)
    t = w["a"]["tenant"]
    sql = ("SELECT count(*) FROM nodes WHERE (data->>'n')::int >= $1 AND data->>'kind' = $2 "
           "AND id <> $3 AND created_at < $4 AND data @> $5")
    result = await query(rpc, t, sql, 1, "even", str(uuid.uuid4()), "2999-01-01T00:00:00Z",
                         {"kind": "even"})
    assert result["rows"] == [[2]]  # n = 2 and n = 4
    assert (await query(rpc, t, "SELECT $1::numeric * 2", "1.25"))["rows"] == [[2.5]]
    assert (await query(rpc, t, "SELECT $1", 5))["rows"] == [["5"]]  # untyped: text
    with pytest.raises(InvalidParams, match="parameter"):
        await query(rpc, t, "SELECT $1::int, $2::int", 1)
    with pytest.raises(InvalidParams, match="params.0"):
        await query(rpc, t, "SELECT $1::int", "not a number")
    with pytest.raises(InvalidParams, match="params.0"):
        await query(rpc, t, "SELECT $1::uuid", "nope")


async def test_row_cap_and_limits_on_the_call(rpc):
    w = await make_world(rpc)
    t = w["a"]["tenant"]
    capped = await query(rpc, t, "SELECT * FROM generate_series(1, 50) AS n", max_rows=7)
    assert capped["row_count"] == 7 and capped["truncated"] is True
    assert [r[0] for r in capped["rows"]] == list(range(1, 8))
    exact = await query(rpc, t, "SELECT * FROM generate_series(1, 7) AS n", max_rows=7)
    assert exact["row_count"] == 7 and exact["truncated"] is False
    # A million rows are cut at the server by the wrapper's LIMIT: fast, not a timeout.
    big = await query(rpc, t, "SELECT n FROM generate_series(1, 1000000) AS n")
    assert big["row_count"] == 1000 and big["truncated"] is True
    for bad in ({"max_rows": 10_001}, {"max_rows": -1}, {"timeout_ms": 30_001},
                {"timeout_ms": "5"}, {"params": [1] * 101}, {"sql": ""},
                {"sql": "SELECT 1" + " " * 20_000}, {"params": ["a\x00b"]}):
        with pytest.raises(InvalidParams):
            await rpc.call("execute_query", {"tenant_id": t, "sql": "SELECT 1", **bad})


async def test_statements_that_must_work(rpc):
    """A keyword blacklist would refuse these; the gate must not."""
    w = await make_world(rpc)
    t = w["a"]["tenant"]
    ok = {
        "SELECT data->>'updated_at' AS updated_at, updated_at FROM nodes ORDER BY 1": 5,
        "SELECT data->'delete' FROM nodes WHERE (data->>'delete')::boolean": 1,
        "SELECT 'DROP TABLE nodes; DELETE FROM nodes' AS text": 1,
        "SELECT data->>'note' FROM nodes WHERE data->>'note' LIKE '%DROP TABLE%'": 5,
        "select id, rank() over (partition by data->>'kind' order by (data->>'n')::int) "
        "from nodes": 5,
        "WITH evens AS (SELECT * FROM nodes WHERE data->>'kind' = 'even') "
        "SELECT count(*) FROM evens": 1,
        "WITH RECURSIVE walk(id, depth) AS (SELECT source_node_id, 0 FROM relationships "
        "UNION SELECT r.target_node_id, w.depth + 1 FROM walk w JOIN relationships r "
        "ON r.source_node_id = w.id WHERE w.depth < 5) SELECT DISTINCT id FROM walk": 3,
        "SELECT n.id, t.name FROM nodes n JOIN node_types t ON t.id = n.node_type_id": 5,
        "SELECT data ? 'kind', data @> '{\"kind\": \"odd\"}', jsonb_path_query_first(data, "
        "'$.n') FROM nodes": 5,
        "SELECT kind, count(*) FROM (SELECT data->>'kind' AS kind FROM nodes) s "
        "GROUP BY kind HAVING count(*) > 0": 2,
        "SELECT $$dollar ; quoted$$, $tag$ DELETE $tag$": 1,
        "/* a comment: DELETE */ SELECT 1 -- trailing DROP\n": 1,
        "SELECT 1;": 1,
        "VALUES (1), (2)": 2,
        "TABLE node_types": 1,
        "(SELECT 1) UNION ALL (SELECT 2)": 2,
        "SELECT format('%s', 'x'), substring('abcdef' FROM 2 FOR 3), E'it\\'s'": 1,
        "SELECT \"delete\" FROM (SELECT 1 AS \"delete\") s": 1,
        "SELECT count(*) FILTER (WHERE relationship_type = 'next') FROM relationships": 1,
        "SELECT * FROM nodes n, LATERAL jsonb_each(n.data) e WHERE e.key = 'kind'": 5,
    }
    failures = []
    for sql, rows in ok.items():
        try:
            result = await query(rpc, t, sql)
            if result["row_count"] != rows:
                failures.append(f"{sql!r}: {result['row_count']} rows, expected {rows}")
        except Exception as exc:  # noqa: BLE001 - collect them all
            failures.append(f"{sql!r}: {exc}")
    assert not failures, "\n".join(failures)


# ---------------------------------------------------------------- the gate

GATE_REFUSES = [
    "DELETE FROM nodes",
    "UPDATE nodes SET data = '{}'",
    "INSERT INTO nodes (tenant_id) VALUES (gen_random_uuid())",
    "DROP TABLE nodes",
    "TRUNCATE nodes",
    "CREATE TABLE x (a int)",
    "ALTER TABLE nodes ADD COLUMN x int",
    "GRANT SELECT ON nodes TO PUBLIC",
    "SELECT 1; DELETE FROM nodes",
    "SELECT 1; SELECT 2",
    "WITH d AS (DELETE FROM nodes RETURNING *) SELECT * FROM d",
    "WITH u AS (UPDATE nodes SET data = '{}' RETURNING 1) SELECT count(*) FROM u",
    "WITH x AS (SELECT 1) DELETE FROM nodes",
    "SELECT * FROM nodes FOR UPDATE",
    "SELECT * FROM nodes FOR NO KEY UPDATE",
    "SELECT * FROM nodes FOR SHARE SKIP LOCKED",
    "SELECT * INTO stolen FROM nodes",
    "SET ROLE postgres",
    "SET flexdb.query_ticket = 'x'",
    "RESET ROLE",
    "SELECT set_config('role', 'postgres', false)",
    "SELECT pg_catalog.set_config('flexdb.query_ticket', 'x', true)",
    "SELECT \"set_config\"('search_path', 'public', true)",
    "SELECT SeT_CoNfIg('search_path', 'public', true)",
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT pg_ls_dir('.')",
    "SELECT lo_import('/etc/passwd')",
    "SELECT lo_from_bytea(0, 'x')",
    "SELECT dblink('dbname=postgres', 'select 1')",
    "SELECT pg_sleep(10)",
    "SELECT pg_catalog . pg_sleep /* x */ (10)",
    "SELECT pg_sleep_for('10 seconds')",
    "SELECT pg_advisory_lock(1)",
    "SELECT pg_try_advisory_xact_lock(1)",
    "SELECT pg_terminate_backend(pg_backend_pid())",
    "SELECT pg_cancel_backend(1)",
    "SELECT pg_reload_conf()",
    "SELECT pg_notify('chan', 'payload')",
    "SELECT query_to_xml('select 1', true, false, '')",
    "SELECT database_to_xml(true, false, '')",
    "COPY nodes TO STDOUT",
    "EXPLAIN ANALYZE SELECT 1",
    "LISTEN chan",
    "PREPARE p AS SELECT 1",
    "DO $$ BEGIN PERFORM 1; END $$",
    "CALL p()",
    "VACUUM nodes",
    "BEGIN",
    "LOCK TABLE nodes",
    "SELECT 'a\\' , pg_sleep(10) --'",               # backslash before a quote
    "/* /* */ ' */ SELECT pg_sleep(10) --'",          # nested comment
    "SELECT U&\"\\0070g_sleep\"(10)",                 # Unicode-escape identifier
    "SELECT 1 # 2, pg_sleep(10)",                     # '# ' is not a comment to PostgreSQL
    "SELECT ARRAY [1, pg_sleep(10)]",                 # [ ] are not identifier quotes
    "SELECT `a`, pg_sleep(10), `b`",
    "SELECT \"a\\\", pg_sleep(10), \"b\"",           # backslash in a quoted identifier
    "SELECT E'\\\\', pg_sleep(10) --'",                # escaped backslash, then a quote
    "SELECT $\u0436$ ' $\u0436$, pg_sleep(10) --'",     # a dollar tag sqlparse does not know
    "SELECT 1 AS \u20ac$x$, pg_sleep(10) AS b\u20ac$x$",  # non-ASCII before a dollar quote
    "SELECT * FROM ts_stat('select to_tsvector(pg_sleep(10)::text)')",  # SQL in a string
    "SELECT ts_rewrite('a'::tsquery, 'SELECT ''a''::tsquery, ''b''::tsquery')",
    "sElEcT 1 ; dElEtE fRoM nodes",
    "SELECT (DELETE FROM nodes)",
    "",
    "   ;  ",
    "-- only a comment",
]


@pytest.mark.parametrize("sql", GATE_REFUSES)
async def test_the_gate_refuses(rpc, sql):
    w = await make_world(rpc)
    t = w["a"]["tenant"]
    if not sql.strip():
        with pytest.raises((QueryRejected, InvalidParams)):
            await query(rpc, t, sql)
        return
    exc = await rejected(rpc, t, sql)
    assert exc.code == -32006 and exc.data["type"] == "rejected"
    assert exc.data.get("layer") == "gate", exc.message
    count = await query(rpc, t, "SELECT count(*) FROM nodes")
    assert count["rows"] == [[5]]  # nothing was changed


async def test_deep_nesting_and_huge_statements_are_rejections_not_crashes(rpc):
    w = await make_world(rpc)
    t = w["a"]["tenant"]
    deep = "SELECT " + "(" * 3000 + "1" + ")" * 3000
    exc = await rejected(rpc, t, deep)
    assert exc.code == -32006
    wide = "SELECT " + ", ".join(["1"] * 6_000)
    try:
        result = await query(rpc, t, wide)
        assert result["row_count"] == 1
    except QueryRejected as exc:
        assert exc.code == -32006
    assert (await query(rpc, t, "SELECT 1"))["rows"] == [[1]]


# ---------------------------------------------------------------- the database, alone

DATABASE_REFUSES = {
    # what the gate would refuse -> the SQLSTATE class the database answers with
    "DELETE FROM nodes": "42601",                                    # syntax (wrapper)
    "SELECT 1; DELETE FROM nodes": "42601",
    "SET ROLE postgres": "42601",
    "SET flexdb.query_ticket = 'x'": "42601",
    "WITH d AS (DELETE FROM nodes RETURNING *) SELECT * FROM d": "0A000",  # not top level
    "SELECT * FROM nodes FOR UPDATE": "42501",                      # no UPDATE right
    "SELECT * INTO stolen FROM nodes": "42601",
    "SELECT set_config('role', 'postgres', true)": "42501",          # revoked
    "SELECT set_config('flexdb.query_ticket', 'x', true)": "42501",
    "SELECT pg_notify('chan', 'payload')": "42501",
    "SELECT lo_from_bytea(0, 'x')": "42501",
    "SELECT lo_import('/etc/passwd')": "42501",
    "SELECT pg_read_file('/etc/passwd')": "42501",
    "SELECT query_to_xml('select set_config(''role'', ''postgres'', true)', true, false, '')":
        "42501",
    "SELECT * FROM public.nodes": "42501",                            # base tables
    "SELECT * FROM public.api_keys": "42501",
    "SELECT * FROM public.audit_events": "42501",
    "SELECT * FROM flexdb_private.query_ticket_key": "42501",
    "SELECT flexdb_private.query_ticket(gen_random_uuid())": "42501",
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity": "42501",
    "SELECT pg_sleep(30)": "42501",
    "SELECT pg_advisory_lock(4242)": "42501",
    "SELECT txid_current()": "42501",
    "SELECT * FROM ts_stat('select to_tsvector(txid_current()::text)')": "42501",
}


@pytest.mark.parametrize("sql", DATABASE_REFUSES)
async def test_the_database_refuses_without_the_gate(rpc, query_pool, sql):
    w = await make_world(rpc)
    with pytest.raises(asyncpg.PostgresError) as exc:
        await run_direct(query_pool, w["a"]["tenant"], sql)
    assert exc.value.sqlstate == DATABASE_REFUSES[sql], exc.value
    result = await run_direct(query_pool, w["a"]["tenant"], "SELECT count(*) FROM nodes")
    assert result.rows == [[5]]


async def test_the_database_stops_sleep_and_runaway_work_without_the_gate(rpc, query_pool):
    w = await make_world(rpc)
    started = time.monotonic()
    with pytest.raises(asyncpg.QueryCanceledError):
        await run_direct(query_pool, w["a"]["tenant"],
                         "SELECT count(*) FROM generate_series(1, 1e11)", timeout_ms=300)
    assert time.monotonic() - started < 5


async def test_nothing_outlives_a_statement_on_the_query_pool(rpc, query_pool, database_url):
    """Session state left on a query connection (here taken directly, as the query role can
    no longer take advisory locks or change settings) is gone once the connection is back
    in the pool: the pool's reset is a layer of its own."""
    w = await make_world(rpc)
    async with query_pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock(4242)")
        await conn.execute("SET work_mem = '77MB'")
    await run_direct(query_pool, w["a"]["tenant"], "SELECT 1")
    observer = await asyncpg.connect(database_url)
    try:
        held = await observer.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242")
        assert held == 0
    finally:
        await observer.close()
    async with query_pool.acquire() as conn:  # the same single connection, reused
        assert await conn.fetchval("SELECT current_user") != "flexdb_query"
        assert await conn.fetchval("SELECT current_setting('flexdb.query_ticket', true)") \
            in (None, "")
        assert await conn.fetchval("SELECT current_setting('work_mem')") != "77MB"


async def test_views_show_nothing_without_a_valid_ticket(rpc, database_url):
    """Even a statement that could set the ticket itself could not name another tenant:
    the views check it against a key only the server's role can read."""
    w = await make_world(rpc)
    a, b = w["a"]["tenant"], w["b"]["tenant"]
    conn = await asyncpg.connect(database_url)
    try:
        async def count_as_query_role(ticket_sql: str, *args) -> int:
            async with conn.transaction():
                await conn.execute(f"SELECT set_config('flexdb.query_ticket', {ticket_sql}, true)",
                                   *args)
                await conn.execute("SET LOCAL ROLE flexdb_query")
                return await conn.fetchval("SELECT count(*) FROM flexdb_query.nodes")

        assert await count_as_query_role("flexdb_private.query_ticket($1::uuid)", a) == 5
        forged = f"{b}:" + "0" * 64
        assert await count_as_query_role("$1::text", forged) == 0
        async with conn.transaction():  # a real ticket of B's, from another transaction
            stolen = await conn.fetchval("SELECT flexdb_private.query_ticket($1::uuid)", b)
        assert await count_as_query_role("$1::text", stolen) == 0
        assert await count_as_query_role("$1::text", "") == 0
        privileges = await conn.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname IN ('public', 'flexdb_private') AND c.relkind IN ('r', 'v', 'm') "
            "AND has_table_privilege('flexdb_query', c.oid, 'SELECT')")
        assert privileges == []
        role = await conn.fetchrow("SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, "
                                   "rolbypassrls FROM pg_roles WHERE rolname = 'flexdb_query'")
        assert not any(role.values())
    finally:
        await conn.close()


# ---------------------------------------------------------------- tenants and the catalog

async def test_other_tenants_are_invisible(rpc):
    w = await make_world(rpc)
    a, b = w["a"], w["b"]
    probes = [
        (f"SELECT * FROM nodes WHERE tenant_id = '{b['tenant']}'", 0),
        (f"SELECT * FROM nodes WHERE id = '{b['nodes'][0]}'", 0),
        (f"SELECT id FROM nodes INTERSECT SELECT '{b['nodes'][0]}'::uuid", 0),
        (f"SELECT id FROM nodes WHERE false UNION ALL SELECT id FROM nodes "
         f"WHERE id = '{b['nodes'][0]}'", 0),
        (f"SELECT id FROM relationships WHERE source_node_id = ANY(ARRAY["
         f"'{b['nodes'][0]}'::uuid, '{b['nodes'][1]}'::uuid])", 0),
        (f"SELECT * FROM relationships WHERE tenant_id = '{b['tenant']}'", 0),
        (f"SELECT * FROM node_types WHERE id = '{b['node_type']}'", 0),
        ("SELECT DISTINCT tenant_id FROM nodes", 1),
        ("SELECT * FROM nodes WHERE data::text LIKE '%SECRET%'", 0),
        # A function that fails on the other tenant's rows must not see them either.
        ("SELECT * FROM nodes WHERE (data->>'secret')::int > 0", 0),
    ]
    for sql, rows in probes:
        result = await query(rpc, a["tenant"], sql)
        assert result["row_count"] == rows, sql
        assert SECRET not in str(result)
    result = await query(rpc, a["tenant"], "SELECT DISTINCT tenant_id FROM nodes")
    assert result["rows"] == [[a["tenant"]]]


async def test_the_catalog_reveals_no_tenant_data(rpc, query_pool):
    """Large objects, passwords and column statistics: refused by the gate, and unreadable by
    the query role without it (more in test_query_catalog.py)."""
    w = await make_world(rpc)
    t = w["a"]["tenant"]
    for sql in ("SELECT * FROM pg_largeobject", "SELECT * FROM pg_authid",
                "SELECT starelid, stavalues1::text FROM pg_statistic", "SELECT * FROM pg_shadow"):
        exc = await rejected(rpc, t, sql)
        assert exc.data["layer"] == "gate"
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await run_direct(query_pool, t, sql)


# ---------------------------------------------------------------- resource abuse

ABUSE = [
    "SELECT count(*) FROM generate_series(1, 10000000000)",
    "SELECT count(*) FROM generate_series(1, 100000) a, generate_series(1, 100000) b",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
    "SELECT count(*) FROM nodes a, nodes b, nodes c, generate_series(1, 100000000) d",
    "SELECT md5(string_agg(g::text, '')) FROM generate_series(1, 100000000) g",
]


@pytest.mark.parametrize("sql", ABUSE)
async def test_runaway_statements_end_with_a_timeout_and_the_server_keeps_serving(rpc, sql):
    w = await make_world(rpc)
    t = w["a"]["tenant"]
    started = time.monotonic()
    exc = await rejected(rpc, t, sql, timeout_ms=500)
    assert exc.code == -32006 and exc.data["type"] == "timeout"
    assert time.monotonic() - started < 5
    assert (await rpc.call("get_tenant", {"id": t}))["tenant"]["id"] == t


async def test_oversized_results_are_refused(rpc):
    w = await make_world(rpc)
    t = w["a"]["tenant"]
    exc = await rejected(rpc, t, "SELECT repeat('x', 1000000) FROM generate_series(1, 20)")
    assert exc.data["type"] == "too_many_rows" and exc.data["max_bytes"] > 0
    # Rows of 100 MB are stopped inside PostgreSQL, before any is sent to the server.
    exc = await rejected(rpc, t, "SELECT repeat('x', 100000000) FROM generate_series(1, 3)")
    assert exc.data["type"] == "too_many_rows"
    assert (await query(rpc, t, "SELECT 1"))["rows"] == [[1]]


@pytest.mark.parametrize("sql", [
    "SELECT '4713-01-01 BC'::date",
    "SELECT '200000-01-01'::date",
    "SELECT '24:00:00'::time",
    "SELECT interval '1 day' * 1e9",
    "SELECT (repeat('[', 300) || repeat(']', 300))::jsonb",
])
async def test_values_json_cannot_hold_are_rejections_not_internal_errors(rpc, sql):
    w = await make_world(rpc)
    exc = await rejected(rpc, w["a"]["tenant"], sql)
    assert exc.code == -32006


async def test_parameters_out_of_range_are_invalid_params(rpc):
    w = await make_world(rpc)
    t = w["a"]["tenant"]
    for sql, value in (("SELECT $1::numeric = 0", "1e131072"),
                       ("SELECT $1::timestamp", "0001-01-01T00:00:00+14:00")):
        with pytest.raises(InvalidParams):
            await query(rpc, t, sql, value)


async def test_geometric_values_do_not_leak_addresses(rpc):
    w = await make_world(rpc)
    result = await query(rpc, w["a"]["tenant"],
                         "SELECT path '((0,0),(1,1))', polygon '((0,0),(1,1),(1,0))', B'101'")
    assert "0x" not in str(result["rows"])
    assert result["rows"][0][0] == {"points": [[0.0, 0.0], [1.0, 1.0]], "closed": True}
    assert result["rows"][0][2] == "101"


async def test_one_tenant_cannot_hold_up_another(rpc):
    w = await make_world(rpc)
    a, b = w["a"]["tenant"], w["b"]["tenant"]
    slow = [asyncio.create_task(query(rpc, a, "SELECT count(*) FROM generate_series(1, 1e10)",
                                      timeout_ms=3000)) for _ in range(8)]
    await asyncio.sleep(0.5)
    started = time.monotonic()
    assert (await query(rpc, b, "SELECT count(*) FROM nodes"))["rows"] == [[3]]
    assert time.monotonic() - started < 2.5  # B ran while A's statements were still running
    outcomes = await asyncio.gather(*slow, return_exceptions=True)
    for outcome in outcomes:  # timed out, or refused for A's share of connections
        assert getattr(outcome, "code", None) in (-32006, -32005), outcome


async def test_slow_queries_do_not_starve_other_calls(rpc):
    w = await make_world(rpc)
    t = w["a"]["tenant"]
    slow = [asyncio.create_task(query(rpc, t, "SELECT count(*) FROM generate_series(1, 1e10)",
                                      timeout_ms=2000)) for _ in range(6)]
    await asyncio.sleep(0.3)
    started = time.monotonic()
    for _ in range(10):
        await rpc.call("get_node", {"tenant_id": t, "id": w["a"]["nodes"][0]})
    assert time.monotonic() - started < 2  # the query pool is separate from the main one
    outcomes = await asyncio.gather(*slow, return_exceptions=True)
    for outcome in outcomes:
        assert getattr(outcome, "code", None) in (-32006, -32005), outcome


# ---------------------------------------------------------------- audit

async def test_queries_and_rejections_are_audited_without_param_values(rpc):
    w = await make_world(rpc)
    t = w["a"]["tenant"]
    await query(rpc, t, "SELECT count(*) FROM nodes WHERE data->>'kind' = $1", "hidden-value")
    await rejected(rpc, t, "DELETE FROM nodes")
    events = (await rpc.call("list_audit_events", {"tenant_id": t, "method": "execute_query",
                                                   "pagination": {"page_size": 100}}))
    events = events["audit_events"]
    assert [e["outcome"] for e in events] == ["ok", "rejected"]
    assert "hidden-value" not in str(events)
    assert events[0]["summary"]["sql"].startswith("SELECT count(*)")
    assert events[1]["summary"]["rejection"] == "rejected"
    assert (await rpc.call("verify_audit_chain", {"tenant_id": t}))["ok"] is True
