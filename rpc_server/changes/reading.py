"""Reading a tenant's change events after a position, for list_changes and the streams: a
position retention has passed, or one past the last, is an error, never a silent gap."""
from __future__ import annotations

from uuid import UUID

from rpc_server.errors import PositionAhead, PositionExpired
from rpc_server.storage.db import Connection
from rpc_server.storage.repositories.changes import ChangeRepository, ChangeWindow, EventFilter

# Positions one read looks at, whatever its filter matches: a bounded read.
SCAN = 10_000


async def read_after(conn: Connection, tenant_id: UUID, after: int | None, limit: int,
                     only: EventFilter | None = None, max_bytes: int = 2**62) -> ChangeWindow:
    """Events after `after` (None: from the oldest kept), at most `limit` matching `only`,
    within `max_bytes` (see ChangeRepository.read)."""
    window = await ChangeRepository(conn).read(tenant_id, after, limit, SCAN, only, max_bytes)
    if after is not None:
        if after < window.trimmed_through:
            raise PositionExpired(after, window.trimmed_through, window.head)
        if after > window.head:
            raise PositionAhead(after, window.head)
    return window
