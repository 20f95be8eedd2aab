"""What a change event looks like to a reader (list_changes, the SSE stream) and which events
a reader's filter lets through. An event's JSON is built once per process, whatever the number
of streams that send it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

import asyncpg
import orjson

from rpc_server.storage.repositories.changes import EventFilter

# What changed (the trigger names in sql/0015_change_feed.sql), and how.
Kind = Literal["node", "relationship", "node_type", "pipeline", "membership"]
Operation = Literal["create", "update", "delete"]
KINDS: tuple[str, ...] = get_args(Kind)
OPERATIONS: tuple[str, ...] = get_args(Operation)


def text(value: Any) -> str | None:
    """An id as text (asyncpg's UUIDs are not orjson's)."""
    return None if value is None else str(value)


def event_of(row: asyncpg.Record) -> dict[str, Any]:
    """One event in the API's shape. `object` is the object after the change (None after a
    delete); `object_omitted` says it was left out for its size (see FLEXDB_FEED_MAX_OBJECT_BYTES
    and `object_bytes`)."""
    obj = row["object"]
    return {
        "position": row["position"], "time": row["occurred_at"], "operation": row["operation"],
        "kind": row["kind"], "id": row["object_id"], "version": row["version"],
        "actor": {"user_id": text(row["actor_user_id"]), "key_id": text(row["actor_key_id"]),
                  "run_id": text(row["actor_run_id"])},
        "node_type_id": text(row["node_type_id"]), "relationship_type": row["relationship_type"],
        "object": None if obj is None else orjson.Fragment(obj),
        "object_omitted": obj is None and row["operation"] != "delete",
        "object_bytes": row["object_bytes"]}


@dataclass(frozen=True)
class FeedEvent:
    """An event as the hub keeps it: what filters look at, and its JSON, encoded once."""
    position: int
    kind: str
    operation: str
    node_type_id: Any
    relationship_type: str | None
    payload: bytes
    sse: bytes  # the event as a Server-Sent Events message

    @classmethod
    def of(cls, row: asyncpg.Record) -> FeedEvent:
        payload = orjson.dumps(event_of(row))
        return cls(row["position"], row["kind"], row["operation"], row["node_type_id"],
                   row["relationship_type"], payload,
                   b"id: %d\nevent: change\ndata: %s\n\n" % (row["position"], payload))


def filters_nothing(only: EventFilter) -> bool:
    return (only.kinds is None and only.operations is None and only.node_type_id is None
            and only.relationship_type is None)


def matches(only: EventFilter, event: FeedEvent) -> bool:
    """The SQL filter of ChangeRepository.read, for events already in memory."""
    return ((only.kinds is None or event.kind in only.kinds)
            and (only.operations is None or event.operation in only.operations)
            and (only.node_type_id is None or event.node_type_id == only.node_type_id)
            and (only.relationship_type is None
                 or event.relationship_type == only.relationship_type))
