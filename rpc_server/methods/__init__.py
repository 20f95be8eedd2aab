"""JSON-RPC method groups. Importing this package registers every method."""
from . import (api_keys, audit_events, graph, node_types, nodes, pipelines, query,  # noqa: F401
               relationships, tenants, users)

