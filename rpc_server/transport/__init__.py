"""HTTP framing of JSON-RPC: reading bodies within limits, the JSON codec with its
depth and number checks, the dispatcher that validates and runs each batch member, the
client's address behind trusted proxies. May import security and everything below it."""
