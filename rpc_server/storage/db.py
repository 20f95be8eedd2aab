"""Connection pool with a jsonb codec, and the database a server runs against."""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from rpc_server.config import Settings

log = logging.getLogger(__name__)
EMBEDDED_DATABASE = "flexdb"

# What code that runs statements takes: a connection, or the pool's proxy of one (which
# forwards every call to its connection).
Connection = asyncpg.Connection | PoolConnectionProxy


def _dumps(value) -> str:
    return orjson.dumps(value).decode()


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typename in ("jsonb", "json"):
        await conn.set_type_codec(typename, encoder=_dumps, decoder=orjson.loads,
                                  schema="pg_catalog")


async def _reset_on_release(conn: asyncpg.Connection) -> None:
    """Replaces asyncpg's default release-time reset query (RESET ALL, UNLISTEN *, CLOSE ALL,
    advisory unlock), which costs a round trip per request. Pooled connections only ever
    run flexdb's own statements, which leave no session state behind; a connection left
    inside a transaction is rolled back. Code that runs caller-controlled SQL must clean
    up after itself explicitly (or use a pool with the default reset)."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def connect(url: str, settings: Settings) -> asyncpg.Connection:
    conn = await asyncpg.connect(url, timeout=settings.db_connect_timeout_s)
    await _init_connection(conn)
    return conn


async def create_pool(url: str, settings: Settings) -> asyncpg.Pool:
    server_settings = {"application_name": "flexdb",
                       # read by the change feed's triggers (sql/0015_change_feed.sql)
                       "flexdb.change_feed": "on" if settings.change_feed else "off",
                       "flexdb.feed_max_object_bytes": str(settings.feed_max_object_bytes)}
    if settings.statement_timeout_ms:
        server_settings["statement_timeout"] = str(settings.statement_timeout_ms)
    return await asyncpg.create_pool(
        url,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        timeout=settings.db_connect_timeout_s,
        init=_init_connection,
        reset=_reset_on_release,
        server_settings=server_settings,
    )


async def create_query_pool(url: str, settings: Settings) -> asyncpg.Pool:
    """Connections for tenants' own SQL (execute_query). Unlike the main pool they keep
    asyncpg's full reset on release (RESET ALL, advisory unlock, UNLISTEN, CLOSE ALL) and
    cache no statements, so nothing a caller's statement does outlives it."""
    return await asyncpg.create_pool(
        url,
        min_size=0,
        max_size=settings.query_pool_max,
        timeout=settings.db_connect_timeout_s,
        init=_init_connection,
        statement_cache_size=0,
        server_settings={"application_name": "flexdb-query"},
    )


async def transaction_lock(conn: Connection, key: int) -> None:
    """An advisory lock held until the transaction ends (one start's setup at a time)."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", key)


async def ping(pool: asyncpg.Pool, timeout: float) -> bool:
    """The database answers a trivial statement (GET /ready)."""
    async with pool.acquire(timeout=timeout) as conn:
        return await conn.fetchval("SELECT 1") == 1


def with_database(url: str, database: str) -> str:
    """The same server URL pointing at another database (keeps host/query, e.g. a socket dir)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


async def ensure_database(url: str, database: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()


@contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    """Yield the URL to use: the configured one, or an embedded server in the data dir,
    started (or reused) here and stopped when the block exits."""
    if settings.database_url:
        yield settings.database_url
        return
    from rpc_server.storage.embedded_db import embedded_server

    with embedded_server(settings.data_dir) as server_url:
        yield server_url
