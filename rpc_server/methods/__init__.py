"""The JSON-RPC methods, one module per group (tenants, users, api keys, node types, nodes,
relationships, graph walks, queries, pipelines, audit, the change feed, webhooks, jobs): each
method's params model, its handler and its registration, which says who may call it. Importing this
package registers every method. Handlers are thin: they may import every layer below."""
from rpc_server.methods import (  # noqa: F401  (importing registers)
    api_keys,
    audit_events,
    changes,
    graph,
    jobs,
    node_types,
    nodes,
    pipelines,
    query,
    relationships,
    tenants,
    users,
    webhooks,
)
