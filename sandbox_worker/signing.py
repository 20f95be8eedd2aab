"""Requests from rpc_server to the sandbox worker are signed with the shared secret
(FLEXDB_SANDBOX_SECRET): HMAC-SHA256 over method, path, a timestamp, a one-time nonce and the
body. The worker refuses a missing or wrong signature, a timestamp more than 30 s away, and
a nonce it has already seen (a replay)."""
from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections import OrderedDict

TIMESTAMP, NONCE, SIGNATURE = "X-Flexdb-Timestamp", "X-Flexdb-Nonce", "X-Flexdb-Signature"
MAX_SKEW_S = 30.0


class SignatureError(Exception):
    pass


def _mac(secret: bytes, method: str, path: str, timestamp: str, nonce: str,
         body: bytes) -> str:
    message = f"{method.upper()}\n{path}\n{timestamp}\n{nonce}\n".encode() + body
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def sign(secret: bytes, method: str, path: str, body: bytes) -> dict[str, str]:
    timestamp, nonce = f"{time.time():.3f}", secrets.token_hex(16)
    return {TIMESTAMP: timestamp, NONCE: nonce,
            SIGNATURE: _mac(secret, method, path, timestamp, nonce, body)}


class NonceCache:
    """Nonces seen within the allowed clock skew (older ones are refused by time anyway)."""

    def __init__(self, size: int = 100_000):
        self.size = size
        self._seen: OrderedDict[str, float] = OrderedDict()

    def first_use(self, nonce: str, now: float) -> bool:
        while self._seen and next(iter(self._seen.values())) < now - 2 * MAX_SKEW_S:
            self._seen.popitem(last=False)
        if nonce in self._seen:
            return False
        self._seen[nonce] = now
        if len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return True


def verify(secret: bytes, method: str, path: str, body: bytes, headers,
           nonces: NonceCache) -> None:
    timestamp, nonce = headers.get(TIMESTAMP, ""), headers.get(NONCE, "")
    given = headers.get(SIGNATURE, "")
    if not (timestamp and nonce and given) or len(nonce) > 64:
        raise SignatureError("unsigned request")
    try:
        sent = float(timestamp)
    except ValueError:
        raise SignatureError("bad timestamp") from None
    if not math.isfinite(sent):
        raise SignatureError("bad timestamp")
    now = time.time()
    if abs(now - sent) > MAX_SKEW_S:
        raise SignatureError("stale or future timestamp")
    if not hmac.compare_digest(given, _mac(secret, method, path, timestamp, nonce, body)):
        raise SignatureError("bad signature")
    if not nonces.first_use(nonce, now):
        raise SignatureError("replayed request")
