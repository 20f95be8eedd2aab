"""DESIGN.md's storage rules, read from the catalog of the migrated test database: every
table with a tenant_id column leads its primary key and every unique key with tenant_id,
and its foreign keys to other such tables include tenant_id. A new table that breaks a
rule fails here."""
from __future__ import annotations

import asyncpg

# Tables with a tenant_id column, with each unique index (primary keys included) and the
# column it leads with (NULL for an expression).
UNIQUE_KEYS = """
SELECT c.oid::regclass::text AS table_name, i.indexrelid::regclass::text AS key_name,
       i.indisprimary AS is_primary, first.attname AS first_column
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute tenant ON tenant.attrelid = c.oid AND tenant.attname = 'tenant_id'
                        AND NOT tenant.attisdropped
LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisunique
LEFT JOIN pg_attribute first ON first.attrelid = c.oid AND first.attnum = i.indkey[0]
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
"""
# Foreign keys between two tables that both have a tenant_id column, with whether the
# key's columns include it.
TENANT_FOREIGN_KEYS = """
SELECT k.conname, k.conrelid::regclass::text AS table_name,
       (SELECT attnum FROM pg_attribute WHERE attrelid = k.conrelid AND attname = 'tenant_id')
           = ANY (k.conkey) AS includes_tenant
FROM pg_constraint k
WHERE k.contype = 'f'
  AND EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = k.conrelid AND attname = 'tenant_id')
  AND EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = k.confrelid AND attname = 'tenant_id')
"""


async def catalog(database_url: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


async def test_tenant_tables_lead_every_key_with_tenant_id(server, database_url):
    rows = await catalog(database_url, UNIQUE_KEYS)  # (`server` has run the migrations)
    tables = {r["table_name"] for r in rows}
    assert {"nodes", "relationships", "audit_events", "audit_pending"} <= tables
    with_primary = {r["table_name"] for r in rows if r["is_primary"]}
    assert sorted(tables - with_primary) == [], "tenant tables without a primary key"
    breaking = sorted(f"{r['table_name']}: {r['key_name']} leads with {r['first_column']}"
                      for r in rows if r["key_name"] and r["first_column"] != "tenant_id")
    assert breaking == []


async def test_foreign_keys_between_tenant_tables_include_tenant_id(server, database_url):
    rows = await catalog(database_url, TENANT_FOREIGN_KEYS)
    assert {r["table_name"] for r in rows} >= {"nodes", "relationships", "pipeline_runs"}
    assert sorted(f"{r['table_name']}: {r['conname']}" for r in rows
                  if not r["includes_tenant"]) == []
