"""docs/LIMITS.md: every bound a caller's input or load meets, with its setting (when it has
one), its default and the answer past it. The values are read from where the code keeps
them (a setting's default, a module's constant), never written here a second time.
`python scripts/limits_table.py` prints the page; `--write` updates docs/LIMITS.md (a test
checks that it is current)."""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a file, the repository root is not on sys.path: the imports after this line need
# it first (hence their noqa: E402).
sys.path.insert(0, str(ROOT))

from rest_facade.callers import MAX_AUTHORIZATION  # noqa: E402
from rpc_server.api import params, vector_params  # noqa: E402
from rpc_server.audit import denied_calls  # noqa: E402
from rpc_server.audit import events as audit  # noqa: E402
from rpc_server.changes import address_guard, webhooks  # noqa: E402
from rpc_server.config import Settings, env_var, shown_default  # noqa: E402
from rpc_server.methods import audit_events, graph, node_types, pipelines, query  # noqa: E402
from rpc_server.pipelines import jobs  # noqa: E402
from rpc_server.query import guard as query_guard  # noqa: E402
from rpc_server.storage import node_filter, node_search, response_budget, vectors  # noqa: E402
from rpc_server.validation.schema_cost import MAX_PATTERN_LENGTH  # noqa: E402
from sandbox_worker.app import MAX_OUTPUT, MAX_RESULT  # noqa: E402
from sandbox_worker.policy import MAX_CODE_LENGTH  # noqa: E402
from sandbox_worker.pool import MAX_DB_CALLS  # noqa: E402

PAGE = ROOT / "docs" / "LIMITS.md"


@dataclass(frozen=True)
class Limit:
    bounds: str
    answer: str
    setting: str | None = None  # a Settings field
    value: object = None        # else a constant of the code


def n(value: int) -> str:
    return f"{value:,}"


def size(value: int) -> str:
    for unit, factor in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= factor and value % factor == 0:
            return f"{value // factor} {unit}"
    return f"{n(value)} bytes"


INVALID, REQUEST, BUSY, STOPPED = ("-32602 invalid params", "-32600 invalid request",
                                   "-32005 busy (REST 429)", "-32006 (REST 400)")
SECTIONS: dict[str, list[Limit]] = {
    "Requests (both surfaces)": [
        Limit("request body, after decompression", f"{REQUEST} `max_bytes`", "max_body_bytes"),
        Limit("request body through the REST facade", "413", "facade_max_body_bytes"),
        Limit("members of one batch", REQUEST, "max_batch"),
        Limit("nesting of a document (`data`, `schema`, `input`, a filter, a query param)",
              f"{INVALID} naming the field", "max_json_depth"),
        Limit("a document as stored (as PostgreSQL returns it: a space after each comma "
              "and colon, numbers in plain notation, `1e-300` is 302 bytes)",
              f"{INVALID} naming the field", "max_body_bytes"),
        Limit("JSON nesting the parser reads at all", f"{REQUEST} (REST 400)", value="~1,000"),
        Limit("integers / other numbers", INVALID, value="64-bit / double"),
        Limit("names (tenant, node type, pipeline, key, user's display name)", INVALID,
              value=n(params.MAX_NAME)),
        Limit("descriptions", INVALID, value=n(params.MAX_DESCRIPTION)),
        Limit("page size", INVALID, value=n(params.MAX_PAGE_SIZE)),
        Limit("page token", INVALID, value=size(params.MAX_PAGE_TOKEN)),
        Limit("items of one bulk create (`create_nodes`, `create_relationships`)", INVALID,
              value=n(params.MAX_BULK)),
        Limit("`Authorization` header at the REST facade", "401", value=size(MAX_AUTHORIZATION)),
        Limit("requests one set of credentials has in flight through the facade", "429",
              "facade_max_in_flight_per_caller"),
        Limit("calls per second one API key makes (off by default)",
              "-32005 `rate_limited` with `retry_after`", "rate_limit_key_per_s"),
        Limit("calls a key makes at once above its rate", "-32005 `rate_limited`",
              "rate_limit_key_burst"),
        Limit("calls per second into one tenant, all callers (off by default)",
              "-32005 `rate_limited` with `retry_after`", "rate_limit_tenant_per_s"),
        Limit("calls into a tenant at once above its rate", "-32005 `rate_limited`",
              "rate_limit_tenant_burst"),
    ],
    "Responses": [
        Limit("one response: a call, or a whole batch", f"{STOPPED} `response_too_large` "
              "for the call (a batch's other members answer)", "max_response_bytes"),
        Limit("documents one list page or walk reads (its first row whatever its size)",
              "the page stops early, with a `next_page_token` (a walk: `truncated`)",
              "max_page_bytes"),
        Limit("documents read for responses not yet written, per worker (a tenant: half; "
              "counted once a response's pass 64 KiB)",
              f"waits up to `FLEXDB_DB_CONNECT_TIMEOUT_S`, then {BUSY}",
              "response_memory_bytes"),
        Limit("large responses (documents read past "
              f"{size(response_budget.LARGE_RESPONSE_BYTES)}) one tenant has in flight, per "
              "worker, until written", "its further reads that may be large wait up to "
              f"`FLEXDB_DB_CONNECT_TIMEOUT_S`, then {BUSY}", "tenant_large_responses"),
    ],
    "Node type schemas (checked when saved)": [
        Limit("the schema as JSON", INVALID, "max_schema_bytes"),
        Limit("subschemas reachable with every `$ref` followed", INVALID,
              "max_schema_subschemas"),
        Limit("distinct patterns (`pattern`, `patternProperties` keys)", INVALID,
              "max_schema_patterns"),
        Limit("characters of one pattern (RE2, linear time)", INVALID,
              value=n(MAX_PATTERN_LENGTH)),
        Limit("`enum` and `const` values", INVALID, "max_schema_values_bytes"),
        Limit("CPU to validate one call's documents (or check a schema)",
              f"{STOPPED} `too_costly`", "validation_cpu_ms"),
        Limit("compiled validators kept, per worker", "least recently used dropped",
              "validator_cache_bytes"),
        Limit("compiled patterns kept, per worker", "least recently used dropped",
              "pattern_cache_bytes"),
        Limit("node types (their schemas, as parsed) kept, per worker",
              "least recently used dropped", "node_type_cache_bytes"),
    ],
    "Schema changes": [
        Limit("`check_node_type_schema` / `update_node_type` with a schema: `timeout_ms` (the "
              "check of every existing node; one of the tenant's heavy calls)",
              f"{STOPPED} `timeout`, nothing changed",
              value=f"{n(node_types.SCHEMA_CHECK_TIMEOUT_MS)} default, "
                    f"{n(node_types.MAX_SCHEMA_CHECK_TIMEOUT_MS)} most"),
        Limit("errors listed in a check's report (`max_failures`)", INVALID,
              value=f"20 default, {node_types.MAX_REPORTED_FAILURES} most"),
        Limit("schema versions kept per node type", "the oldest dropped",
              "schema_versions_kept"),
    ],
    "Database work": [
        Limit("pooled connections one tenant's calls hold, per worker",
              f"waits up to `FLEXDB_DB_CONNECT_TIMEOUT_S`, then {BUSY}", "tenant_pool_max"),
        Limit("pooled connections `get_node` reads hold, per worker (reads are coalesced: one "
              "query answers the asks of every tenant made meanwhile, so they take no one "
              "tenant's share; a batch's read-ahead of its `get_node` members takes its first "
              "tenant's)", "the asks wait for a read to end and go into the next",
              value="a quarter of `FLEXDB_DB_POOL_MAX`, at least 1"),
        Limit("documents one read of `get_node` calls made at once reads (it reads one more "
              "past it; tenants' calls take turns in it)",
              "the calls left out go first into the next read",
              value="a quarter of `FLEXDB_RESPONSE_MEMORY_BYTES`"),
        Limit("heavy calls one tenant runs at once, per worker (`execute_query`, "
              "`query_nodes`, walks, bulk creates, lists whose filters scan)",
              f"waits, then {BUSY}", "query_tenant_concurrency"),
        Limit("heavy calls on the main pool at once, per worker", f"waits, then {BUSY}",
              value="half of `FLEXDB_DB_POOL_MAX`"),
        Limit("any statement", "-32603 `timeout`", "statement_timeout_ms"),
        Limit("`execute_query` / `query_nodes` / `traverse` / `shortest_path` `timeout_ms`",
              f"{STOPPED} `timeout`", value=f"5,000 default, {n(30_000)} most"),
        Limit("a bulk create / a list page that scans", f"{STOPPED} `timeout`",
              value=f"{n(params.BULK_TIMEOUT_MS)} / {n(params.LIST_TIMEOUT_MS)} ms"),
        Limit("`verify_audit_chain` (one of the tenant's heavy calls)", f"{STOPPED} `timeout`",
              value=f"{n(audit_events.VERIFY_TIMEOUT_MS)} ms"),
        Limit("`execute_query` statement", STOPPED, value=f"{n(query_guard.MAX_SQL_LENGTH)} "
              f"characters, {query.MAX_QUERY_PARAMS} params, 10,000 rows"),
        Limit("`execute_query` result, as JSON", f"{STOPPED} `too_many_rows`",
              "query_max_result_bytes"),
        Limit("`execute_query` connections, per worker", f"waits, then {BUSY}",
              "query_pool_max"),
        Limit("filter: nesting / conditions / `in` values", INVALID,
              value=f"{node_filter.MAX_DEPTH} / {node_filter.MAX_CLAUSES} / "
                    f"{node_filter.MAX_IN_VALUES}"),
        Limit("filter: path keys / key length", INVALID,
              value=f"{node_filter.MAX_PATH_SEGMENTS} / {node_filter.MAX_SEGMENT_LENGTH}"),
        Limit("filter: one value / all values, as JSON", INVALID,
              value=f"{size(node_filter.MAX_VALUE_BYTES)} / {size(node_filter.MAX_FILTER_BYTES)}"),
        Limit("full-text `search`: characters of the text / paths a node type indexes",
              INVALID, value=f"{n(node_search.MAX_SEARCH_TEXT)} / "
                             f"{node_search.MAX_SEARCH_FIELDS}"),
        Limit("walks: `max_depth` / `limit` / relationship types", INVALID,
              value=f"{graph.MAX_DEPTH} / {n(graph.MAX_LIMIT)} / {graph.MAX_TYPES}"),
        Limit("`near` (vector search): `k`", f"{INVALID} naming `near.k`",
              value=f"1–{n(vector_params.MAX_K)}"),
        Limit("embedding `dimensions` (and so `near.vector`'s length)",
              f"{INVALID} naming `embedding.dimensions` / `near.vector`",
              value=f"1–{n(vectors.MAX_DIMENSIONS)}"),
        Limit("embedding values (in node data and `near.vector`)",
              f"{INVALID} naming the field (`data.embedding`)",
              value="finite, within ±3.4e38"),
        Limit("candidates a `near` search keeps (`hnsw.ef_search`; at least `k`)",
              "more: slower, better recall", "vector_ef_search"),
        Limit("nodes a type has before its HNSW index is built (exact scans below)",
              "built in the background", "vector_index_min_nodes"),
        Limit("memory of one HNSW index build (`maintenance_work_mem`)",
              "a slower build past it", "vector_index_build_memory_mb"),
    ],
    "Pipelines": [
        Limit("code", INVALID, value=f"{n(MAX_CODE_LENGTH)} characters"),
        Limit("`timeout_ms` / `memory_mb`", INVALID,
              value=f"{n(pipelines.MAX_TIMEOUT_MS)} ms / {pipelines.MIN_MEMORY_MB}–"
                    f"{pipelines.MAX_MEMORY_MB} MB"),
        Limit("a run's output / result", "cut / the run fails",
              value=f"{size(MAX_OUTPUT)} / {size(MAX_RESULT)}"),
        Limit("db calls of one run", "-32005 `too_many_calls` to the code",
              value=n(MAX_DB_CALLS)),
        Limit("runs of one tenant running at once (all servers)",
              f"`wait: true`: {BUSY}; queued runs wait their turn", "pipeline_tenant_running"),
        Limit("runs one tenant has queued", BUSY, "pipeline_tenant_queued"),
        Limit("runs at once in one sandbox worker", BUSY, "sandbox_max_running"),
        Limit("queued runs one server executes at once", "they wait in the queue",
              "pipeline_queue_concurrency"),
    ],
    "Jobs (`migrate_nodes`)": [
        Limit("jobs of one tenant queued or running", BUSY, "jobs_tenant_active"),
        Limit("migrations of one node type queued or running", "-32004 conflict",
              value="1"),
        Limit("nodes in one batch (one pipeline run, one transaction, one audit event)",
              "the next batch takes the rest", "migration_batch_nodes"),
        Limit("node data in one batch", "the next batch takes the rest",
              value=size(jobs.BATCH_MAX_BYTES)),
        Limit("a batch's run (the pipeline's limits: `timeout_ms`, `memory_mb`, result "
              "size, for the whole batch)", "the batch's nodes fail (`batch_failed`)",
              value="the pipeline's"),
        Limit("failed nodes listed on a job (all are counted)", "the rest are counted only",
              value=n(jobs.MAX_FAILURES)),
        Limit("jobs one server process runs at once", "the others wait their turn",
              "job_concurrency"),
    ],
    "Change feed and webhooks": [
        Limit("an object carried by a change event (as stored JSON)",
              "the event has `object` null and `object_omitted` true", "feed_max_object_bytes"),
        Limit("change streams open on one server process", "HTTP 503 (-32005)",
              "feed_streams_max"),
        Limit("webhooks of one tenant", "-32005 `quota_exceeded`", "webhooks_max_per_tenant"),
        Limit("a webhook URL", f"{INVALID} naming `url`", value=n(address_guard.MAX_URL)),
        Limit("a webhook delivery's connection", "a failed attempt (retried)",
              "webhook_connect_timeout_s"),
        Limit("a webhook receiver's answer, once connected", "a failed attempt (retried)",
              "webhook_timeout_s"),
        Limit("a webhook receiver's answer read (the rest is not)", "ignored",
              value=size(webhooks.MAX_RESPONSE_BYTES)),
        Limit("the delay between two attempts at one webhook delivery", "—",
              "webhook_retry_max_s"),
        Limit("webhooks one server process delivers to at once", "the others wait their turn",
              "webhook_concurrency"),
        Limit("of those, one tenant's webhooks and triggers", "its others wait their turn",
              "webhook_tenant_concurrency"),
        Limit("failed attempts in a row at one event", "the webhook is paused (`failing`)",
              "webhook_pause_after_failures"),
    ],
    "Quotas": [
        Limit("tenants one user owns (platform admins: any number)",
              "-32005 `quota_exceeded` (REST 429)", "max_tenants_per_user"),
        Limit("nodes of one tenant (0 = no cap)", "-32005 `quota_exceeded`",
              "tenant_max_nodes"),
        Limit("bytes of one tenant's documents, as stored (0 = no cap)",
              "-32005 `quota_exceeded`", "tenant_max_bytes"),
        Limit("refused calls (unauthenticated, forbidden, not found): counted, not recorded "
              "one by one", "one count per interval, source (key or client address), method "
              "and outcome (`list_denied_calls`)", value=f"{audit.DENIED_WINDOW_S:g} s"),
        Limit("client addresses without valid credentials counted apart in one interval, "
              "all servers together", "further ones are counted as `others`",
              "denied_calls_max_sources"),
        Limit("days counts of refused calls are kept", "older counts are deleted, at most "
              f"{n(denied_calls.PRUNE_BATCH)} per server and pass",
              "denied_calls_retention_days"),
    ],
}


def render() -> str:
    lines = [
        "# Limits",
        "",
        "Every bound a caller's input or load meets: what it bounds, its setting (a "
        "`FLEXDB_*` environment variable, see the README's Configuration) or, where it is "
        "fixed, its value, and the answer past it. Made by `scripts/limits_table.py` from "
        "the values in the code; the per-worker ones hold in each of a server's "
        "`FLEXDB_WORKERS` processes. What they are for, and what one tenant can still do to "
        "another with all of them in place, is measured by `scripts/noisy_neighbour.py` "
        "(figures in [PERFORMANCE.md](PERFORMANCE.md)).",
    ]
    for title, limits in SECTIONS.items():
        lines += ["", f"## {title}", "", "| bounds | setting | default | past it |",
                  "|---|---|---|---|"]
        for limit in limits:
            if limit.setting is not None:
                assert limit.setting in Settings.model_fields, limit.setting
                setting, value = f"`{env_var(limit.setting)}`", shown_default(limit.setting)
            else:
                setting, value = "—", str(limit.value)
            lines.append(f"| {limit.bounds} | {setting} | {value} | {limit.answer} |")
    return "\n".join(lines) + "\n"


def settings_named() -> set[str]:
    return {limit.setting for limits in SECTIONS.values() for limit in limits if limit.setting}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="update docs/LIMITS.md")
    if parser.parse_args().write:
        PAGE.write_text(render())
    else:
        print(render(), end="")
