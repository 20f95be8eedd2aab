"""The one reading of an `Authorization` header, for rpc_server and the REST facade alike:
`Bearer <credential>`, the scheme matched case-insensitively (RFC 7235: `bearer`, `BEARER`
and `Bearer` are one scheme), so every check and every per-caller limit sees one caller
whatever the spelling."""
from __future__ import annotations

SCHEME = "bearer"


def bearer_credential(authorization: str | None) -> str | None:
    """The credential of a Bearer header; None when the header names another scheme or
    carries no credential."""
    scheme, _, credential = (authorization or "").strip().partition(" ")
    credential = credential.strip()
    if not credential or not scheme.isascii() or scheme.lower() != SCHEME:
        return None
    return credential
