"""JSON-RPC method groups. Importing this package registers every method."""
from rpc_server.methods import (  # noqa: F401  (importing registers)
    api_keys,
    audit_events,
    graph,
    node_types,
    nodes,
    pipelines,
    query,
    relationships,
    tenants,
    users,
)
