"""Settings from FLEXDB_* environment variables, validated once at start."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Mapping

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from .secrets import SecretError, decrypt_setting, is_encrypted, master_key

ENV_PREFIX = "FLEXDB_"


class ConfigError(Exception):
    """A setting is missing or invalid; the message names the variable, never its value."""


class Settings(BaseModel):
    model_config = {"extra": "forbid", "frozen": True}

    database_url: str | None = Field(
        None, description="PostgreSQL URL; unset = embedded PostgreSQL in the data dir")
    host: str = Field("127.0.0.1", description="Address the JSON-RPC server binds to")
    port: int = Field(5000, ge=1, le=65535, description="Port of the JSON-RPC server")
    workers: int = Field(1, ge=1, le=64, description="Server processes sharing the port "
                         "(SO_REUSEPORT); each has its own pools and caches")
    data_dir: Path = Field(Path("./.flexdb"), description="Local state (embedded PostgreSQL)")
    db_pool_min: int = Field(2, ge=0, le=1000, description="Minimum pooled connections")
    db_pool_max: int = Field(10, ge=1, le=1000, description="Maximum pooled connections")
    db_connect_timeout_s: float = Field(5.0, gt=0, le=300,
                                        description="Seconds to wait for a database connection")
    statement_timeout_ms: int = Field(30000, ge=0, le=3_600_000,
                                      description="Server-side statement timeout (0 = none)")
    max_body_bytes: int = Field(1_048_576, ge=1024, le=64 * 1_048_576,
                                description="Largest accepted request body")
    max_batch: int = Field(100, ge=1, le=10_000, description="Most members in a batch")
    # At most 100: jsonschema checks a schema ~8 frames a level deep, within Python's 1000.
    max_json_depth: int = Field(100, ge=2, le=100, description="Deepest nesting of a "
                                "document (data, schema, input, filter...), on both the "
                                "JSON-RPC server and the REST facade")
    json_fields: Literal["object", "string"] = Field(
        "object", description="Return data/schema as JSON objects or JSON strings")
    secret_key: str | None = Field(
        None, min_length=32, description="Server secret for API key hashes; unset = generated "
        "once into the data dir")
    anonymous_role: Literal["none", "platform_admin"] = Field(
        "none", description="Role of callers that send no credentials (trusted networks only)")
    auth_cache_ttl_s: float = Field(5.0, ge=0, le=300, description="Seconds a verified key or "
                                    "a membership is trusted before it is read again")
    query_pool_max: int = Field(8, ge=1, le=100, description="Connections for execute_query "
                                "(separate from the main pool, so analytics cannot starve it)")
    query_tenant_concurrency: int = Field(2, ge=1, le=100, description="execute_query calls "
                                          "and graph walks one tenant may run at once on one "
                                          "server (more wait; past the connect timeout: busy)")
    query_max_result_bytes: int = Field(8 * 1_048_576, ge=1024, le=256 * 1_048_576,
                                        description="Largest execute_query result (JSON bytes)")
    sandbox_url: str = Field("http://127.0.0.1:5001", description="Where rpc_server reaches "
                             "the sandbox worker")
    sandbox_secret: str | None = Field(None, min_length=32, description="Shared secret that "
                                       "signs rpc_server's requests to the sandbox worker; "
                                       "unset = pipelines cannot run")
    sandbox_host: str = Field("127.0.0.1", description="Address the sandbox worker binds to")
    sandbox_port: int = Field(5001, ge=1, le=65535, description="Port of the sandbox worker")
    rpc_url: str = Field("http://127.0.0.1:5000/jsonrpc", description="JSON-RPC endpoint the "
                         "sandbox worker calls for pipelines' db calls")
    sandbox_pool_size: int = Field(2, ge=0, le=64, description="Warm child processes kept "
                                   "ready by the sandbox worker")
    sandbox_max_running: int = Field(4, ge=1, le=256, description="Most runs at once in one "
                                     "sandbox worker (beyond: busy)")
    pipeline_queue_concurrency: int = Field(2, ge=0, le=64, description="Queued runs (wait: "
                                            "false) one rpc_server executes at once (0 = none)")
    facade_host: str = Field("127.0.0.1", description="Address the REST facade binds to")
    facade_port: int = Field(8000, ge=1, le=65535, description="Port of the REST facade")
    facade_rpc_timeout_s: float = Field(
        70.0, gt=0, le=3600, description="Seconds the REST facade waits for rpc_server (past "
        "it: 504); above the longest pipeline run a caller can wait for")
    facade_max_body_bytes: int = Field(1_048_576, ge=1024, le=64 * 1_048_576,
                                       description="Largest request body the REST facade accepts")
    facade_max_connections: int = Field(100, ge=1, le=10_000, description="Pooled connections "
                                        "from the REST facade to rpc_server")
    facade_http: Literal["h11", "httptools"] = Field(
        "h11", description="HTTP parser of the REST facade: h11 bounds request headers (64 KiB);"
        " httptools is ~20% faster but reads headers of any size (use it behind a proxy that "
        "bounds them)")
    facade_max_in_flight_per_caller: int = Field(
        32, ge=1, le=10_000, description="Requests one set of credentials may have in flight "
        "through the REST facade (beyond: 429 at once)")
    cors_origins: str = Field("", description="Comma-separated origins the REST facade allows "
                              "cross-origin requests from ('*' = any; empty = none)")
    redis_url: str | None = Field(None, description="Redis for limits and cache invalidation "
                                  "shared by every instance; unset = in-process only")
    shared_cache_ttl_s: float = Field(60.0, gt=0, le=3600, description="Seconds an API key "
                                      "lookup, a role or a node type stays in the Redis cache "
                                      "shared by every instance, and a node type in each "
                                      "instance's own cache (invalidated at once on changes)")
    rate_limit_key_per_s: float = Field(0, ge=0, le=1_000_000, description="Calls per second "
                                        "one API key may make (0 = no limit)")
    rate_limit_key_burst: int = Field(100, ge=1, le=1_000_000, description="Calls a key may "
                                      "make at once above its rate")
    rate_limit_tenant_per_s: float = Field(0, ge=0, le=1_000_000, description="Calls per "
                                           "second into one tenant, all callers (0 = no limit)")
    rate_limit_tenant_burst: int = Field(200, ge=1, le=1_000_000, description="Calls into a "
                                         "tenant at once above its rate")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO")
    log_format: Literal["json", "text"] = Field(
        "json", description="JSON lines (one access line per request), or text for terminals")
    migrations_dir: Path | None = Field(None, description="Override for the sql/ directory")

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

    @field_validator("database_url")
    @classmethod
    def _url_scheme(cls, v):
        if v is not None and not v.startswith(("postgresql://", "postgres://")):
            raise ValueError("must start with postgresql:// or postgres://")
        return v or None

    @model_validator(mode="after")
    def _pool_bounds(self):
        if self.db_pool_min > self.db_pool_max:
            raise ValueError("FLEXDB_DB_POOL_MIN must not exceed FLEXDB_DB_POOL_MAX")
        return self


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    raw = {}
    fernet = None
    for name in Settings.model_fields:
        var = ENV_PREFIX + name.upper()
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
    try:
        return Settings(**raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            var = ENV_PREFIX + field.upper() if field else "settings"
            lines.append(f"  {var}: {err['msg']}")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None
