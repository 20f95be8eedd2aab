"""JSON-RPC method groups. Importing this package registers every method."""
from . import api_keys, audit_events, node_types, nodes, relationships, tenants, users  # noqa: F401

