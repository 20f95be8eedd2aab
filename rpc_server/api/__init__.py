"""The JSON-RPC layer itself: method registration and permissions (registry), what a
handler gets (context: the call, its connection policy, its audit event), params and result
models, OpenRPC, result shaping. May import transport and everything below it."""
