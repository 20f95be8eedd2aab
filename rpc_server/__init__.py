"""flexdb's JSON-RPC server, grouped by layer (docs/ARCHITECTURE.md has the map).

Wiring sits at the top: app (the aiohttp app), cli, workers, stack (the quick start) and
client (the public async client). Below it the layers, each a package whose docstring says
what it owns; a module imports only from its own layer, the layers after it in LAYERS, and
the foundation (settings and error types, which every layer uses and which import nothing
of flexdb's but each other). tests/test_layers.py checks it."""
from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

# From the top down: a layer may import the layers after it, never those before it.
LAYERS = ("methods", "api", "transport", "security", "audit", "query", "validation",
          "pipelines", "changes", "caching", "storage", "ops")
FOUNDATION = ("config", "config_secrets", "errors")

if TYPE_CHECKING:
    from rpc_server.app import create_app
    from rpc_server.client import FlexDBClient
    from rpc_server.config import Settings

__all__ = ["create_app", "Settings", "FlexDBClient"]
# Imported when first used, so that `import rpc_server.client` (the facade, the sandbox
# worker) does not load the whole server.
_PUBLIC = {"create_app": "rpc_server.app", "Settings": "rpc_server.config",
           "FlexDBClient": "rpc_server.client"}


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'rpc_server' has no attribute {name!r}")
