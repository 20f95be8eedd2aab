"""Ids: time-ordered ones (UUID version 7, RFC 9562) for bulk inserts, and the text of the
ids asyncpg reads.

Rows of one bulk insert share created_at, so lists order them by id: ids that increase
in input order keep lists in insertion order (and append to the index's right edge)."""
from __future__ import annotations

import os
import time
import uuid

from asyncpg.pgproto.pgproto import UUID as PG_UUID

MAX_SEQUENCE = 1 << 12  # the 12-bit rand_a field holds a per-call counter

# orjson's `default` for the ids read from the database: asyncpg returns its own UUID
# class, which orjson does not know (it writes uuid.UUID itself). Its C __str__, a slot
# wrapper, writes one without a Python function call (a page of 50 nodes holds 150 ids),
# and raises TypeError for any other type, as `default` must.
uuid_text = PG_UUID.__str__


def uuid7_sequence(count: int) -> list[uuid.UUID]:
    """`count` (<= 4096) increasing UUIDv7 values sharing one millisecond timestamp."""
    if count > MAX_SEQUENCE:
        raise ValueError(f"at most {MAX_SEQUENCE} ids per call")
    millis = time.time_ns() // 1_000_000
    tail = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)  # rand_b
    ids = []
    for seq in range(count):
        value = (millis & ((1 << 48) - 1)) << 80
        value |= 0x7 << 76 | seq << 64      # version 7, counter in rand_a
        value |= 0b10 << 62 | tail          # RFC 4122 variant, random tail
        ids.append(uuid.UUID(int=value))
    return ids
