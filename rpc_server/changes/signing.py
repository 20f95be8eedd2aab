"""Webhook secrets and signatures, the Standard Webhooks way: a secret is `whsec_` and the
base64 of 24 to 64 random bytes; a delivery carries `webhook-id`, `webhook-timestamp` (Unix
seconds) and `webhook-signature: v1,<base64 of HMAC-SHA256(secret bytes, "<id>.<timestamp>.
<body>")>`.

Secrets are kept sealed (Fernet) under a key derived from the server secret
(FLEXDB_SECRET_KEY, which every instance sharing the database already has): the database
alone does not give them away, and the server can still sign. Changing the server secret
makes the stored webhook secrets unreadable, as it makes the API keys unusable."""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

from cryptography.fernet import Fernet, InvalidToken

PREFIX = "whsec_"
SECRET_BYTES = 32  # generated secrets
MIN_SECRET_BYTES, MAX_SECRET_BYTES = 24, 64
HINT_CHARS = 4
SEALING_CONTEXT = b"flexdb webhook secrets v1"


class BadSecret(ValueError):
    pass


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_bytes(secret: str) -> bytes:
    """The key bytes of a `whsec_…` secret; BadSecret says what is wrong with one."""
    if not secret.startswith(PREFIX):
        raise BadSecret(f"must start with {PREFIX} (Standard Webhooks format)")
    try:
        key = base64.b64decode(secret[len(PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise BadSecret(f"must be {PREFIX} followed by standard base64") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise BadSecret(f"must hold {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes "
                        f"(it holds {len(key)})")
    return key


def hint(secret: str) -> str:
    """What get and list show of a secret: enough to tell two apart, not to sign."""
    return f"{PREFIX}…{secret[-HINT_CHARS:]}"


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header's value."""
    mac = hmac.new(key, b"%s.%d.%s" % (message_id.encode(), timestamp, body), hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


class SecretBox:
    """Seals and opens webhook secrets with a key derived from the server secret."""

    def __init__(self, server_secret: bytes):
        derived = hmac.new(server_secret, SEALING_CONTEXT, hashlib.sha256).digest()
        self.fernet = Fernet(base64.urlsafe_b64encode(derived))

    def seal(self, secret: str) -> str:
        return self.fernet.encrypt(secret.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self.fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise BadSecret("the stored secret cannot be opened (was FLEXDB_SECRET_KEY "
                            "changed?)") from None
