"""Encrypted settings: any FLEXDB_* value may be written as ENC(<Fernet token>), decrypted at
start with the master key from FLEXDB_MASTER_KEY or the file named by FLEXDB_MASTER_KEY_FILE.
`flexdb encrypt-value` makes such values. Errors name the setting, never a value or key."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping

from cryptography.fernet import Fernet, InvalidToken

ENCRYPTED = re.compile(r"^ENC\((?P<token>[A-Za-z0-9_=-]+)\)$")
MASTER_KEY_VAR = "FLEXDB_MASTER_KEY"
MASTER_KEY_FILE_VAR = "FLEXDB_MASTER_KEY_FILE"


class SecretError(Exception):
    """Carries a message that is safe to print (names, never values)."""


def is_encrypted(value: str) -> bool:
    return value.startswith("ENC(")


def master_key(environ: Mapping[str, str] | None = None) -> Fernet:
    env = os.environ if environ is None else environ
    key = env.get(MASTER_KEY_VAR, "")
    source = MASTER_KEY_VAR
    if not key and env.get(MASTER_KEY_FILE_VAR):
        source = MASTER_KEY_FILE_VAR
        try:
            key = Path(env[MASTER_KEY_FILE_VAR]).read_text().strip()
        except OSError as exc:
            raise SecretError(f"{MASTER_KEY_FILE_VAR}: cannot read the file "
                              f"({exc.strerror or type(exc).__name__})") from None
    if not key:
        raise SecretError(f"an ENC(...) value needs the master key: set {MASTER_KEY_VAR} or "
                          f"{MASTER_KEY_FILE_VAR}")
    try:
        return Fernet(key.encode())
    except (ValueError, TypeError):
        raise SecretError(f"{source}: not a Fernet key (32 url-safe base64-encoded bytes; "
                          "`flexdb encrypt-value --new-key` makes one)") from None


def decrypt_setting(name: str, value: str, fernet: Fernet) -> str:
    match = ENCRYPTED.match(value)
    if not match:
        raise SecretError(f"{name}: malformed ENC(...) value")
    try:
        return fernet.decrypt(match.group("token").encode()).decode()
    except InvalidToken:
        raise SecretError(f"{name}: cannot decrypt the ENC(...) value (wrong master key or "
                          "damaged value)") from None
    except UnicodeDecodeError:
        raise SecretError(f"{name}: the decrypted value is not UTF-8 text") from None


def encrypt_value(value: str, fernet: Fernet) -> str:
    return f"ENC({fernet.encrypt(value.encode()).decode()})"


def new_master_key() -> str:
    return Fernet.generate_key().decode()
