"""Apply the numbered SQL files in sql/ in order, once each, under an advisory lock."""
from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from rpc_server.storage.db import Connection

log = logging.getLogger(__name__)

# Arbitrary constant shared by every flexdb process: serialises concurrent migrators.
MIGRATION_LOCK_KEY = 0x666C6578_6462  # "flexdb"
FILE_PATTERN = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "sql"


class MigrationError(Exception):
    pass


@dataclass(frozen=True)
class MigrationFile:
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(directory: Path) -> list[MigrationFile]:
    if not directory.is_dir():
        raise MigrationError(f"migrations directory not found: {directory}")
    files = sorted(p for p in directory.iterdir() if p.suffix == ".sql")
    seen_numbers: dict[str, str] = {}
    result = []
    for path in files:
        match = FILE_PATTERN.match(path.name)
        if not match:
            raise MigrationError(f"migration file name must look like 0001_name.sql: {path.name}")
        number = match.group(1)
        if number in seen_numbers:
            raise MigrationError(f"two migrations share number {number}: "
                                 f"{seen_numbers[number]} and {path.name}")
        seen_numbers[number] = path.name
        result.append(MigrationFile(path.name, path.read_text(encoding="utf-8")))
    return result


async def migrate(conn: Connection, directory: Path | None = None) -> list[str]:
    """Apply pending migrations; returns the names applied. Safe to run concurrently."""
    files = discover(directory or DEFAULT_DIR)
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   filename   text PRIMARY KEY,
                   checksum   text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())""")
        applied = {r["filename"]: r["checksum"]
                   for r in await conn.fetch("SELECT filename, checksum FROM schema_migrations")}
        known = {f.name for f in files}
        missing = sorted(set(applied) - known)
        if missing:
            raise MigrationError(f"applied migrations missing from {directory or DEFAULT_DIR}: "
                                 + ", ".join(missing))
        done = []
        for f in files:
            if f.name in applied:
                if applied[f.name] != f.checksum:
                    raise MigrationError(
                        f"migration {f.name} was changed after it was applied "
                        f"(recorded checksum {applied[f.name][:12]}…, "
                        f"file now {f.checksum[:12]}…); "
                        "applied migrations must never be edited: add a new numbered file instead")
                continue
            async with conn.transaction():
                await conn.execute(f.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (filename, checksum) VALUES ($1, $2)",
                    f.name, f.checksum)
            log.info("applied migration %s", f.name)
            done.append(f.name)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
