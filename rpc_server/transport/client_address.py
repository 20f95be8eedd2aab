"""The client's address: the peer's, or, when the peer is a proxy the operator trusts
(FLEXDB_TRUSTED_PROXIES), the address that proxy forwarded in X-Forwarded-For. Anyone else's
X-Forwarded-For is ignored: a caller cannot choose the address it is counted under."""
from __future__ import annotations

import ipaddress
from typing import Iterable

from rpc_server.config import Network


def is_trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    if not trusted:  # no proxies (the default): nothing to parse, on every request
        return False
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(parsed in network for network in trusted)


def client_address(peer: str | None, forwarded_for: Iterable[str],
                   trusted: tuple[Network, ...]) -> str | None:
    """The peer, unless it is trusted: then the nearest forwarded hop that is not trusted
    (hops are appended, so those left of the first untrusted one can be forged)."""
    if peer is None or not is_trusted(peer, trusted):
        return peer
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",")]
    hops = [hop for hop in hops if hop]
    for hop in reversed(hops):
        if not is_trusted(hop, trusted):
            return hop
    return hops[0] if hops else peer
