"""Settings from FLEXDB_* environment variables (and a few command-line flags that override
them), validated once at start. Each setting is declared once, here: its type, default,
bounds, meaning and the commands that read it; `flexdb <command> --help` and the README's
settings table are made from these declarations."""
from __future__ import annotations

import ipaddress
import os
import socket
import sys
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, Field, JsonValue, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

from rpc_server.config_secrets import SecretError, decrypt_setting, is_encrypted, master_key

ENV_PREFIX = "FLEXDB_"

# The commands that read settings (`flexdb up` runs the first three and reads them all).
SERVE, FACADE, SANDBOX, MIGRATE, CREATE_KEY = "serve", "facade", "sandbox", "migrate", "create-key"
# What the REST facade's JSON-RPC envelope (method, id, path params) may add to a body.
ENVELOPE_ROOM = 4096
DATABASE = (SERVE, MIGRATE, CREATE_KEY)
EVERY = (SERVE, FACADE, SANDBOX, MIGRATE, CREATE_KEY)
# Most worker processes the default starts: each has its own pools, and the embedded
# PostgreSQL allows 100 connections.
MAX_DEFAULT_WORKERS = 4


class ConfigError(Exception):
    """A setting is missing or invalid; the message names the variable, never its value."""


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_workers() -> int:
    """One process per usable core (capped) where the kernel can spread one port's
    connections over several processes (SO_REUSEPORT on Linux); elsewhere one."""
    if not sys.platform.startswith("linux") or not hasattr(socket, "SO_REUSEPORT"):
        return 1
    return max(1, min(usable_cores(), MAX_DEFAULT_WORKERS))


def setting(default: Any = None, description: str = "", *, read_by: tuple[str, ...],
            shown_default: str | None = None, **constraints: Any) -> Any:
    """A Settings field: its meaning, the commands that read it, and (for defaults that
    are computed) how the default reads in the docs."""
    extra: dict[str, JsonValue] = {"read_by": list(read_by)}
    if shown_default is not None:
        extra["shown_default"] = shown_default
    if callable(default):
        return Field(default_factory=default, description=description,
                     json_schema_extra=extra, **constraints)
    return Field(default, description=description, json_schema_extra=extra, **constraints)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(spec: str) -> tuple[Network, ...]:
    """Comma-separated addresses or networks (`10.0.0.5, 192.0.2.0/24, fd00::/8`);
    ValueError names the entry that is neither."""
    networks = []
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry[:60]!r} is not an IP address or network") from None
    return tuple(networks)


class Settings(BaseModel):
    model_config = {"extra": "forbid", "frozen": True}

    database_url: str | None = setting(
        None, "PostgreSQL URL; unset = embedded PostgreSQL in the data dir (see "
        "FLEXDB_DATA_DIR)", read_by=DATABASE)
    host: str = setting("127.0.0.1", "address the JSON-RPC server binds to (`0.0.0.0` in "
                        "containers)", read_by=(SERVE,))
    port: int = setting(5000, "port of the JSON-RPC server", read_by=(SERVE,), ge=1, le=65535)
    workers: int = setting(
        default_workers, "server processes on the one port (SO_REUSEPORT: the kernel spreads "
        "connections over them). Each is a whole server with its own pools "
        "(`FLEXDB_DB_POOL_MAX` each), caches and `/metrics` counters; the parent passes "
        "SIGTERM on and stops all when one exits", read_by=(SERVE,),
        shown_default=f"usable cores, at most {MAX_DEFAULT_WORKERS} (1 off Linux)",
        ge=1, le=64)
    data_dir: Path = setting(Path("./.flexdb"), "local state: the embedded PostgreSQL "
                             "(`pg/`) and the generated server secret", read_by=DATABASE,
                             shown_default="`./.flexdb`")
    db_pool_min: int = setting(2, "minimum pooled database connections (per worker)",
                               read_by=(SERVE,), ge=0, le=1000)
    db_pool_max: int = setting(10, "maximum pooled database connections (per worker)",
                               read_by=(SERVE,), ge=1, le=1000)
    db_connect_timeout_s: float = setting(5.0, "seconds to wait for a database connection",
                                          read_by=DATABASE, gt=0, le=300)
    tenant_pool_max: int = setting(
        0, "pooled connections one tenant's calls may hold at once (per worker); its further "
        "calls wait behind each other, not in front of other tenants' (past "
        "`FLEXDB_DB_CONNECT_TIMEOUT_S`: -32005 busy)", read_by=(SERVE,),
        shown_default="0 = three quarters of `FLEXDB_DB_POOL_MAX`", ge=0, le=1000)
    statement_timeout_ms: int = setting(30000, "server-side statement timeout (0 = none)",
                                        read_by=(SERVE,), ge=0, le=3_600_000)
    max_body_bytes: int = setting(1_048_576, "largest accepted request body, and largest "
                                  "document as stored (as PostgreSQL writes it back: a space "
                                  "after each comma and colon, numbers in plain notation)",
                                  read_by=(SERVE, FACADE), ge=1024, le=64 * 1_048_576)
    max_batch: int = setting(100, "most members in one batch", read_by=(SERVE,),
                             ge=1, le=10_000)
    max_response_bytes: int = setting(
        8 * 1_048_576, "largest response (a single call, or a whole batch), enforced while it "
        "is built: a list page stops early (with a `next_page_token` for the rest), a call "
        "past it answers -32006 `response_too_large` and the batch's other members still "
        "answer; at least `FLEXDB_MAX_BODY_BYTES` (any stored document fits)",
        read_by=(SERVE,), ge=65_536, le=1_073_741_824)
    max_page_bytes: int = setting(
        2 * 1_048_576, "documents one list page (or traversal) reads at most; the page stops "
        "early past it, with a `next_page_token` for the rest (a walk says `truncated`); its "
        "first row comes whatever its size",
        read_by=(SERVE,), ge=65_536, le=1_073_741_824)
    response_memory_bytes: int = setting(
        64 * 1_048_576, "documents read for responses not yet written, per worker (one tenant "
        "at most half; a response counts once its documents pass 64 KiB, what the transport "
        "takes without waiting for the client); reads past it wait up to "
        "`FLEXDB_DB_CONNECT_TIMEOUT_S`, then -32005 busy", read_by=(SERVE,), ge=1_048_576,
        le=64 * 1_073_741_824)
    tenant_large_responses: int = setting(
        1, "large responses (documents read past 1 MiB) one tenant may have in flight at "
        "once, per worker, from the first read past that size until the response is written; "
        "while they are all in flight, the tenant's further reads that may be large (a list "
        "page, a walk, a batch) wait for one, up to `FLEXDB_DB_CONNECT_TIMEOUT_S`, then -32005 "
        "busy. Other tenants are not held up", read_by=(SERVE,), ge=1, le=1000)
    # At most 100: jsonschema checks a schema ~8 frames a level deep, within Python's 1000.
    max_json_depth: int = setting(
        100, "deepest nesting of a document (`data`, `schema`, a pipeline's `input`, a filter, "
        "a query param), 2–100, counted from the document itself, whether sent as an object "
        "or as a JSON string; the server and the facade read the same setting (see "
        "[Limits](#limits))", read_by=(SERVE, FACADE), ge=2, le=100)
    max_schema_bytes: int = setting(
        262_144, "largest node type schema, as JSON text (-32602 beyond)", read_by=(SERVE,),
        ge=1024, le=16 * 1_048_576)
    max_schema_subschemas: int = setting(
        5_000, "most subschemas a node type schema may reach once every `$ref` is followed "
        "(a subschema reached from two places counts twice; a reference back into itself, "
        "once): what validating a document costs grows with it (-32602 beyond)",
        read_by=(SERVE,), ge=10, le=1_000_000)
    max_schema_patterns: int = setting(
        64, "most distinct `pattern`s and `patternProperties` keys in a node type schema, "
        "each at most 1,000 characters (-32602 beyond)", read_by=(SERVE,), ge=0, le=10_000)
    max_schema_values_bytes: int = setting(
        65_536, "most bytes of `enum` and `const` values in a node type schema, as JSON "
        "(-32602 beyond)", read_by=(SERVE,), ge=0, le=16 * 1_048_576)
    schema_versions_kept: int = setting(
        100, "schema versions kept per node type (list_node_type_versions); a schema change "
        "past it drops the oldest", read_by=(SERVE,), ge=1, le=10_000)
    validation_cpu_ms: float = setting(
        500, "CPU one call may use to validate its documents against their schemas (and to "
        "check a schema when it is saved); past it the call is stopped: -32006 `too_costly`",
        read_by=(SERVE,), ge=10, le=60_000)
    validator_cache_bytes: int = setting(
        64 * 1_048_576, "memory for compiled schema validators (per worker, estimated from "
        "the schemas' sizes); the least recently used go first", read_by=(SERVE,),
        ge=1_048_576, le=64 * 1_073_741_824)
    node_type_cache_bytes: int = setting(
        32 * 1_048_576, "memory for cached node types (their schemas as parsed, per worker, "
        "estimated); the least recently used go first", read_by=(SERVE,), ge=1_048_576,
        le=64 * 1_073_741_824)
    pattern_cache_bytes: int = setting(
        32 * 1_048_576, "memory for compiled schema patterns (RE2 programs, per worker, "
        "estimated); the least recently used go first", read_by=(SERVE,), ge=1_048_576,
        le=64 * 1_073_741_824)
    json_fields: Literal["object", "string"] = setting(
        "object", "`string` returns `data`/`schema` as JSON strings (unset schema = `\"\"`) "
        "for clients whose models require strings", read_by=(SERVE,))
    secret_key: str | None = setting(
        None, "server secret (≥ 32 chars) keying API key hashes; unset = generated once into "
        "`FLEXDB_DATA_DIR/secret_key` (0600). Set the same value on every instance",
        read_by=(SERVE, CREATE_KEY), shown_default="generated", min_length=32)
    anonymous_role: Literal["none", "platform_admin"] = setting(
        "none", "`platform_admin` lets callers without credentials act as platform admin "
        "(trusted networks only; both the server and the facade warn at start)",
        read_by=(SERVE, FACADE))
    auth_cache_ttl_s: float = setting(
        5.0, "seconds a verified key or a membership is trusted before it is read again, by "
        "each instance and in Redis: the longest another instance may still accept a revoked "
        "key or a removed member, whatever Redis does", read_by=(SERVE,), ge=0, le=300)
    query_pool_max: int = setting(
        8, "connections for `execute_query` (a pool of their own): at most this many run at "
        "once (graph walks use at most half of `FLEXDB_DB_POOL_MAX`)", read_by=(SERVE,),
        ge=1, le=100)
    query_tenant_concurrency: int = setting(
        2, "of those, how many one tenant may run at once on one server; its further calls "
        "wait (other tenants are not held up), up to `FLEXDB_DB_CONNECT_TIMEOUT_S`, then get "
        "-32005 busy", read_by=(SERVE,), ge=1, le=100)
    query_max_result_bytes: int = setting(8 * 1_048_576, "largest `execute_query` result, as "
                                          "JSON", read_by=(SERVE,), ge=1024,
                                          le=256 * 1_048_576)
    sandbox_url: str = setting("http://127.0.0.1:5001", "where the server reaches the sandbox "
                               "worker", read_by=(SERVE,))
    sandbox_secret: str | None = setting(
        None, "shared secret (≥ 32 chars) signing the server's requests to the sandbox "
        "worker; unset on the server = pipelines cannot run", read_by=(SERVE, SANDBOX),
        shown_default="made up by `flexdb up`", min_length=32)
    sandbox_host: str = setting("127.0.0.1", "address the sandbox worker binds to",
                                read_by=(SANDBOX,))
    sandbox_port: int = setting(5001, "port of the sandbox worker", read_by=(SANDBOX,),
                                ge=1, le=65535)
    rpc_url: str = setting("http://127.0.0.1:5000/jsonrpc", "the JSON-RPC endpoint the REST "
                           "facade forwards to and the sandbox worker calls for pipelines' db "
                           "calls", read_by=(FACADE, SANDBOX))
    sandbox_pool_size: int = setting(2, "child processes the sandbox worker keeps forked "
                                     "ahead, ready for a run", read_by=(SANDBOX,), ge=0, le=64)
    sandbox_max_running: int = setting(4, "most runs at once in one sandbox worker (beyond: "
                                       "-32005 busy)", read_by=(SANDBOX,), ge=1, le=256)
    pipeline_queue_concurrency: int = setting(
        2, "queued runs (`wait: false`) one server executes at once (0 = this server runs "
        "none)", read_by=(SERVE,), ge=0, le=64)
    pipeline_tenant_running: int = setting(
        2, "runs of one tenant running at once, on every server together (waited for or "
        "queued); a run asked for with `wait: true` beyond it: -32005 busy; queued runs wait "
        "for the tenant's turn", read_by=(SERVE,), ge=1, le=1000)
    pipeline_tenant_queued: int = setting(
        100, "runs one tenant may have queued (`wait: false`) and not yet started; beyond: "
        "-32005 busy", read_by=(SERVE,), ge=1, le=1_000_000)
    max_tenants_per_user: int = setting(
        10, "tenants one user may own (platform admins: any number; 0 = no limit); "
        "create_tenant beyond: -32005 `quota_exceeded`", read_by=(SERVE,), ge=0,
        le=1_000_000)
    tenant_max_nodes: int = setting(
        0, "nodes one tenant may hold (0 = no cap); a create beyond: -32005 "
        "`quota_exceeded`", read_by=(SERVE,), ge=0, le=10**12)
    tenant_max_bytes: int = setting(
        0, "bytes of node and relationship documents one tenant may store, as stored "
        "(0 = no cap); a write that would pass it: -32005 `quota_exceeded`",
        read_by=(SERVE,), ge=0, le=10**15)
    facade_host: str = setting("127.0.0.1", "address the REST facade binds to",
                               read_by=(FACADE,))
    facade_port: int = setting(8000, "port of the REST facade", read_by=(FACADE,),
                               ge=1, le=65535)
    facade_rpc_timeout_s: float = setting(
        70.0, "seconds the facade waits for rpc_server before answering 504 (above the "
        "longest pipeline run a caller can wait for)", read_by=(FACADE,), gt=0, le=3600)
    facade_max_body_bytes: int = setting(
        0, "largest request body the facade accepts (413 beyond); at most "
        "`FLEXDB_MAX_BODY_BYTES` less the room of the JSON-RPC envelope the facade wraps it in, "
        "so a body it accepts is never refused by rpc_server", read_by=(FACADE,),
        shown_default=f"0 = `FLEXDB_MAX_BODY_BYTES` less {ENVELOPE_ROOM // 1024} KiB", ge=0,
        le=64 * 1_048_576)
    facade_max_connections: int = setting(100, "pooled connections from the facade to "
                                          "rpc_server", read_by=(FACADE,), ge=1, le=10_000)
    facade_http: Literal["h11", "httptools"] = setting(
        "h11", "the facade's HTTP parser: `h11` refuses request heads over 64 KiB; "
        "`httptools` is ~20% faster but reads headers of any size: use it only behind a "
        "proxy that bounds them", read_by=(FACADE,))
    facade_max_in_flight_per_caller: int = setting(
        32, "requests one set of credentials may have in flight through the facade; beyond, "
        "429 at once (so one caller cannot hold every connection to rpc_server)",
        read_by=(FACADE,), ge=1, le=10_000)
    cors_origins: str = setting("", "comma-separated origins browsers may call the facade "
                                "from (`*` = any, without credentials); empty = no "
                                "cross-origin access", read_by=(FACADE,))
    redis_url: str | None = setting(
        None, "Redis (`redis://`, `rediss://`, `unix://`) shared by every instance: rate "
        "limits count across instances, and a revoked key, a changed membership or a changed "
        "node type is forgotten by every instance at once. Unset, or while Redis fails: the "
        "same limits per instance, and other instances forget keys and roles within "
        "`FLEXDB_AUTH_CACHE_TTL_S` (also while Redis refuses writes)", read_by=(SERVE,))
    shared_cache_ttl_s: float = setting(
        60.0, "with Redis: seconds a node type's schema stays in the cache shared by every "
        "instance, behind each instance's own cache (keys and roles: "
        "`FLEXDB_AUTH_CACHE_TTL_S`). Any change makes "
        "the shared entries of its kind stale at once. A cached node type is never trusted "
        "for a write: each write checks its version in the database", read_by=(SERVE,),
        gt=0, le=3600)
    rate_limit_key_per_s: float = setting(
        0, "calls per second one API key may make (0 = no limit); beyond: -32005 "
        "`rate_limited` with `retry_after` (REST: 429)", read_by=(SERVE,), ge=0, le=1_000_000)
    rate_limit_key_burst: int = setting(100, "calls a key may make at once above its rate",
                                        read_by=(SERVE,), ge=1, le=1_000_000)
    rate_limit_tenant_per_s: float = setting(
        0, "calls per second into one tenant, all callers together (0 = no limit)",
        read_by=(SERVE,), ge=0, le=1_000_000)
    rate_limit_tenant_burst: int = setting(200, "calls into a tenant at once above its rate",
                                           read_by=(SERVE,), ge=1, le=1_000_000)
    trusted_proxies: str = setting(
        "", "comma-separated addresses or networks of proxies in front of the server: a "
        "request from one of them is taken to come from the address it forwards in "
        "`X-Forwarded-For` (the nearest hop not itself trusted); empty = the peer's address, "
        "and `X-Forwarded-For` is ignored", read_by=(SERVE,))
    change_feed: bool = setting(
        True, "record an event for every change to a node, relationship, node type, "
        "pipeline or membership (the change feed: `list_changes`, `GET /events`); false: "
        "nothing is recorded and the feed stays silent", read_by=(SERVE,))
    feed_max_object_bytes: int = setting(
        65_536, "the largest object (as JSON text) a change event carries; a larger one's "
        "event has its id and version, `object` null and `object_omitted` true",
        read_by=(SERVE,), ge=0, le=16 * 1024 * 1024)
    feed_retention_events: int = setting(
        1_000_000, "change events kept per tenant (older ones are dropped; reading after a "
        "dropped position: -32602 `position_expired`)", read_by=(SERVE,), ge=1,
        le=1_000_000_000)
    feed_retention_days: float = setting(
        7.0, "days change events are kept (older ones are dropped, as above)",
        read_by=(SERVE,), gt=0, le=36_500)
    feed_trim_interval_s: float = setting(
        60.0, "how often each server drops change events past retention", read_by=(SERVE,),
        ge=0.05, le=86_400)
    feed_heartbeat_s: float = setting(
        15.0, "seconds between heartbeats (`: keep-alive` comments) on an idle change stream",
        read_by=(SERVE,), ge=0.05, le=300)
    feed_streams_per_key: int = setting(
        20, "change streams (`GET /events`) one API key (or user) may have open on one server "
        "process; beyond: HTTP 429 (-32005)", read_by=(SERVE,), ge=1, le=100_000)
    feed_streams_per_tenant: int = setting(
        500, "change streams of one tenant open on one server process; beyond: HTTP 429 "
        "(-32005)", read_by=(SERVE,), ge=1, le=100_000)
    feed_streams_max: int = setting(
        5_000, "change streams one server process holds open; beyond: HTTP 503 (-32005)",
        read_by=(SERVE,), ge=1, le=1_000_000)
    webhooks_max_per_tenant: int = setting(
        20, "webhooks one tenant may have; beyond: -32005 `quota_exceeded`", read_by=(SERVE,),
        ge=0, le=10_000)
    webhook_allow_private: bool = setting(
        False, "let webhooks reach loopback, private, link-local (cloud metadata), shared, "
        "multicast and reserved addresses (refused by default when a webhook is saved and "
        "again at every delivery, after DNS resolution); for tests and trusted networks "
        "only", read_by=(SERVE,))
    webhook_connect_timeout_s: float = setting(
        5.0, "seconds a webhook delivery may take to connect (a failed attempt past it)",
        read_by=(SERVE,), gt=0, le=60)
    webhook_timeout_s: float = setting(
        15.0, "seconds a webhook's receiver may take to answer, once connected (a failed "
        "attempt past it)", read_by=(SERVE,), gt=0, le=300)
    webhook_retry_base_s: float = setting(
        1.0, "a failed webhook delivery is retried after a random delay (full jitter) of up "
        "to this, doubled with every further failure of the same event", read_by=(SERVE,),
        gt=0, le=3600)
    webhook_retry_max_s: float = setting(
        3600.0, "the longest delay between two attempts at one webhook delivery",
        read_by=(SERVE,), gt=0, le=86_400)
    webhook_pause_after_failures: int = setting(
        20, "consecutive failed attempts at one event after which a webhook is paused "
        "(`status: paused`, `paused_reason: failing`); `update_webhook` resumes it",
        read_by=(SERVE,), ge=1, le=1000)
    webhook_concurrency: int = setting(
        16, "webhooks one server process delivers to at once (each webhook has one delivery "
        "in flight, in order)", read_by=(SERVE,), ge=1, le=1000)
    webhook_tenant_concurrency: int = setting(
        0, "of those, how many one tenant's webhooks and triggers may hold at once (its further "
        "ones wait their turn; others' are not held up)", read_by=(SERVE,),
        shown_default="0 = a quarter of `FLEXDB_WEBHOOK_CONCURRENCY`, at least 1", ge=0,
        le=1000)
    webhook_lease_s: float = setting(
        60.0, "how long a server's claim on a webhook lasts without being renewed (each "
        "delivery renews it); a server that stops leaves its webhooks to others after it",
        read_by=(SERVE,), ge=1, le=3600)
    jobs_tenant_active: int = setting(
        2, "jobs (`migrate_nodes`) one tenant may have queued or running; beyond: -32005 "
        "busy", read_by=(SERVE,), ge=1, le=1000)
    job_concurrency: int = setting(
        4, "jobs one server process runs at once (0 = this server runs none); a job's "
        "batches go through the fair pipeline queue like other runs", read_by=(SERVE,),
        ge=0, le=256)
    job_lease_s: float = setting(
        30.0, "how long a server's claim on a job lasts without being renewed (renewed "
        "while the job runs); a server that stops leaves its jobs to others after it, and "
        "they resume from the last batch applied", read_by=(SERVE,), ge=1, le=3600)
    migration_batch_nodes: int = setting(
        200, "nodes per batch of a `migrate_nodes` job: one pipeline run, one transaction "
        "and one audit event each (a batch also stops at 256 KiB of node data)",
        read_by=(SERVE,), ge=1, le=1000)
    denied_calls_retention_days: int = setting(
        30, "days counts of refused calls (`list_denied_calls`) are kept; older ones are "
        "deleted by the servers, a bounded batch at a time", read_by=(SERVE,), ge=1, le=36_500)
    denied_calls_max_sources: int = setting(
        1000, "distinct sources without valid credentials (client addresses) whose refused "
        "calls are counted apart in one interval, across all servers; beyond, they are "
        "counted together as `others`", read_by=(SERVE,), ge=1, le=1_000_000)
    vector_index_min_nodes: int = setting(
        10_000, "nodes a node type with an embedding has before it gets an HNSW index "
        "(per tenant, type and declared metric, built in the background, CONCURRENTLY); "
        "below, `near` searches are exact scans of the type's embeddings",
        read_by=(SERVE,), ge=1, le=100_000_000)
    vector_index_interval_s: float = setting(
        30.0, "how often each server looks for node types that need an HNSW index built "
        "(or an old one dropped)", read_by=(SERVE,), ge=0.05, le=86_400)
    vector_index_build_memory_mb: int = setting(
        512, "`maintenance_work_mem` of an HNSW index build: builds whose graph fits are "
        "much faster", read_by=(SERVE,), ge=64, le=65_536)
    vector_ef_search: int = setting(
        100, "candidates an HNSW search keeps (`hnsw.ef_search`; at least `k`): more is "
        "better recall, slower", read_by=(SERVE,), ge=10, le=1000)
    vector_iterative_scan: Literal["relaxed_order", "strict_order", "off"] = setting(
        "relaxed_order", "`hnsw.iterative_scan` of a filtered `near` search: go on scanning "
        "the index past `ef_search` until k nodes pass the filter (up to "
        "`hnsw.max_scan_tuples`, 20,000 by default); `relaxed_order` results are re-sorted",
        read_by=(SERVE,))
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = setting(
        "INFO", "`DEBUG`, `INFO`, `WARNING`, `ERROR`", read_by=EVERY)
    log_format: Literal["auto", "json", "text"] = setting(
        "auto", "`json`: one JSON object per line; `text`: one readable line per record "
        "(`time level logger: message key=value …`), the same fields; `auto`: text when "
        "standard error is a terminal, else JSON. Each request has one access line (request "
        "id, methods, tenants, actor, duration, outcome); API keys and bearer tokens are "
        "masked in both", read_by=EVERY)
    migrations_dir: Path | None = setting(None, "where the numbered migration files are",
                                          read_by=DATABASE, shown_default="`sql/`")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v):
        return v.upper() if isinstance(v, str) else v

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, v):
        if v is not None and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return v or None

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, v):
        trusted_networks(v)
        return v

    @field_validator("database_url")
    @classmethod
    def _url_scheme(cls, v):
        if v is not None and not v.startswith(("postgresql://", "postgres://")):
            raise ValueError("must start with postgresql:// or postgres://")
        return v or None

    @property
    def facade_body_limit(self) -> int:
        """What the facade accepts: its setting, within what rpc_server takes once wrapped."""
        upstream = self.max_body_bytes - ENVELOPE_ROOM
        return min(self.facade_max_body_bytes or upstream, upstream)

    @model_validator(mode="after")
    def _bounds(self):
        if self.db_pool_min > self.db_pool_max:
            raise ValueError("FLEXDB_DB_POOL_MIN must not exceed FLEXDB_DB_POOL_MAX")
        if self.max_response_bytes < self.max_body_bytes:
            raise ValueError("FLEXDB_MAX_RESPONSE_BYTES must be at least FLEXDB_MAX_BODY_BYTES "
                             "(a stored document must fit in a response)")
        if self.webhook_lease_s <= self.webhook_connect_timeout_s + self.webhook_timeout_s:
            raise ValueError("FLEXDB_WEBHOOK_LEASE_S must exceed FLEXDB_WEBHOOK_CONNECT_TIMEOUT_S"
                             " + FLEXDB_WEBHOOK_TIMEOUT_S (a claim outlives one delivery)")
        return self


def env_var(name: str) -> str:
    return ENV_PREFIX + name.upper()


def settings_read_by(command: str) -> list[str]:
    """The names of the settings a command reads, in declaration order."""
    return [name for name, field in Settings.model_fields.items()
            if command in _extra(field).get("read_by", ())]


def _extra(field: FieldInfo) -> dict[str, Any]:
    """What setting() put in a field's json_schema_extra (a dict: setting() never passes
    the callable form)."""
    extra = field.json_schema_extra
    return extra if isinstance(extra, dict) else {}


def shown_default(name: str) -> str:
    """A setting's default as the docs show it."""
    field = Settings.model_fields[name]
    extra = _extra(field)
    if "shown_default" in extra:
        return extra["shown_default"]
    if field.default is None:
        return "unset"
    if field.default == "":
        return "empty"
    default = field.default
    if isinstance(default, float) and default.is_integer():
        default = int(default)
    return f"`{default}`"


def load_settings(environ: Mapping[str, str] | None = None,
                  overrides: Mapping[str, tuple[str, Any]] | None = None) -> Settings:
    """Settings from the environment; `overrides` ({name: (flag, value)}, from command-line
    flags) win over it. Errors name the variable or flag, never the value."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    source = {}
    fernet = None
    for name in Settings.model_fields:
        var = env_var(name)
        value = env.get(var)
        if value is None or value == "":
            continue
        if is_encrypted(value):
            try:
                fernet = fernet or master_key(env)
                value = decrypt_setting(var, value, fernet)
            except SecretError as exc:
                raise ConfigError(f"invalid configuration:\n  {exc}") from None
        raw[name] = value
    for name, (flag, value) in (overrides or {}).items():
        if value is not None:
            raw[name], source[name] = value, flag
    try:
        return Settings(**raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            where = source.get(field) or (env_var(field) if field else "settings")
            lines.append(f"  {where}: {err['msg']}")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None
