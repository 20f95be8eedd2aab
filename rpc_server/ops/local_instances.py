"""Quick-start servers running on this machine, so that a command run from another
directory (`flexdb create-key --admin`) finds the one the user means instead of starting a
new, empty database where it happens to be.

A server that runs an embedded PostgreSQL writes a small file naming its data dir and
endpoint under the user's state directory (`$XDG_STATE_HOME/flexdb/instances`, by default
`~/.local/state/flexdb/instances`) and removes it when it stops; a file whose process is
gone is stale and ignored."""
from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator


@dataclass(frozen=True)
class LocalInstance:
    data_dir: Path
    pid: int
    rpc_url: str


def registry_dir() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "flexdb" / "instances"


def _entry(data_dir: Path) -> Path:
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
    return registry_dir() / f"{digest}.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive, but not ours to use
        return True
    return True


@contextmanager
def registered(data_dir: Path, rpc_url: str) -> Iterator[None]:
    """Announce a running server for the duration of the block (best effort: a registry
    that cannot be written only means other directories cannot find this server)."""
    data_dir = data_dir.expanduser().resolve()
    path = _entry(data_dir)
    entry: Path | None = path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"data_dir": str(data_dir), "pid": os.getpid(),
                                    "rpc_url": rpc_url}))
    except OSError:
        entry = None
    try:
        yield
    finally:
        if entry is not None:
            try:
                if json.loads(entry.read_text()).get("pid") == os.getpid():
                    entry.unlink()
            except (OSError, ValueError):
                pass


def running_instances() -> list[LocalInstance]:
    found = []
    try:
        entries = sorted(registry_dir().glob("*.json"))
    except OSError:
        return []
    for entry in entries:
        try:
            raw = json.loads(entry.read_text())
            instance = LocalInstance(Path(raw["data_dir"]), int(raw["pid"]), str(raw["rpc_url"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if _alive(instance.pid) and instance.data_dir.is_dir():
            found.append(instance)
    return found


def holds_cluster(data_dir: Path) -> bool:
    """Whether a data dir holds an embedded PostgreSQL cluster already."""
    return (data_dir.expanduser() / "pg" / "PG_VERSION").is_file()
