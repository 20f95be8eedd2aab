"""The server secret that keys API key hashes: FLEXDB_SECRET_KEY, or a random one generated
once into the data dir (0600) for the quick start."""
from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from rpc_server.config import ConfigError, Settings

log = logging.getLogger(__name__)
SECRET_FILE = "secret_key"


def secret_path(settings: Settings) -> Path:
    return settings.data_dir.expanduser().resolve() / SECRET_FILE


def server_secret(settings: Settings, create: bool = True) -> bytes:
    """FLEXDB_SECRET_KEY, else the data dir's secret file (made when missing, unless
    `create` is False: a command that only uses an existing server must not invent a
    secret that server does not know)."""
    if settings.secret_key:
        return settings.secret_key.encode()
    path = secret_path(settings)
    if settings.database_url:
        log.warning("FLEXDB_SECRET_KEY is not set: using %s. Every instance sharing the "
                    "database needs the same secret; set FLEXDB_SECRET_KEY in production.", path)
    if not create and not path.exists():
        raise ConfigError(f"no server secret: FLEXDB_SECRET_KEY is not set and {path} does not "
                          "exist. Set FLEXDB_SECRET_KEY to the server's value, or point "
                          "FLEXDB_DATA_DIR (--data-dir) at the server's data dir")
    return _read_or_create(path)


def _read_or_create(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            raise ConfigError(f"{path} must be readable by its owner only (chmod 600)")
        secret = path.read_text().strip()
        if len(secret) < 32:
            raise ConfigError(f"{path} holds no usable secret; delete it to generate a new one")
        return secret.encode()
    with os.fdopen(fd, "w") as f:
        secret = secrets.token_urlsafe(48)
        f.write(secret + "\n")
    log.info("generated a server secret in %s", path)
    return secret.encode()
