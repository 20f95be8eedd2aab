"""Checking a node type's existing nodes against a schema: the dry run
(check_node_type_schema) and the check of a schema change (update_node_type).

The type's nodes are read in batches through its keyset index, so memory stays bounded
whatever its size; each batch is validated in a thread (ValidatorCache.failures). A schema
change also stamps every node found valid with the new schema version, batch by batch, on
the condition that the node still has the version it was read at. A node written meanwhile
is read and checked again; an update that began before the change commits waits for the
stamp's row lock and is then refused by its own guard (NodeRepository.UPDATE_CHECKED), so
it validates against the new schema. Inserts wait for the node type's row lock."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from rpc_server.storage.db import Connection
from rpc_server.storage.repositories import NodeRepository
from rpc_server.validation.schemas import ValidatorCache

BATCH = 1000  # nodes read and validated at a time, at most ...
BATCH_BYTES = 8 * 1_048_576  # ... starting within this many bytes of documents
# Rounds of reading again the nodes written while they were checked (each round only those).
RECHECK_ROUNDS = 5


class KeptChanging(Exception):
    """Nodes kept being written while the schema change checked them."""


@dataclass
class SchemaReport:
    """What a check found: nodes checked, nodes failing, and the first failures (one entry
    per error: the node, the path in its data, the message)."""
    max_failures: int
    checked: int = 0
    failing: int = 0
    errors: int = 0
    failures: list[dict] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def add(self, node_id: UUID, errors: list[dict]) -> None:
        self.failing += 1
        self.errors += len(errors)
        for error in errors[:self.max_failures - len(self.failures)]:
            self.failures.append({"node_id": str(node_id), "path": error["field"],
                                  "message": error["message"]})

    def as_result(self, schema_version: int | None) -> dict:
        return {"schema_version": schema_version, "nodes_checked": self.checked,
                "nodes_failing": self.failing, "failures": self.failures,
                "failures_truncated": len(self.failures) < self.errors,
                "elapsed_ms": round((time.monotonic() - self.started) * 1000, 1)}


async def check_nodes(conn: Connection, validators: ValidatorCache, tenant_id: UUID,
                      node_type_id: UUID, schema: Any, report: SchemaReport, timeout_ms: int,
                      stamp_version: int | None = None,
                      stamp_after_failures: bool = True) -> SchemaReport:
    """Validate every node of the type against `schema` into `report`, within `timeout_ms`
    from the report's start (TimeoutError past it; the statements' own deadline is the
    connection's, see api/context.TimedConnection). With
    `stamp_version` (in the schema change's transaction, the node type locked), every node
    found valid records that schema version; without `stamp_after_failures`, only until a
    node fails (the change will be refused: the rest is only counted)."""
    compiled = None if schema is None or schema is True else validators.compile(schema)
    deadline = report.started + timeout_ms / 1000
    nodes = NodeRepository(conn)
    after = None
    while True:
        rows = await nodes.scan_of_type(tenant_id, node_type_id, after, BATCH,
                                        with_data=compiled is not None, max_bytes=BATCH_BYTES)
        if not rows:
            return report
        after = (rows[-1]["created_at"], rows[-1]["id"])
        if report.failing and not stamp_after_failures:
            stamp_version = None
        await _check_batch(nodes, validators, tenant_id, compiled, rows, report, stamp_version,
                           deadline)


async def _check_batch(nodes: NodeRepository, validators: ValidatorCache, tenant_id: UUID,
                       compiled: tuple | None, rows: list, report: SchemaReport,
                       stamp_version: int | None, deadline: float) -> None:
    for _ in range(RECHECK_ROUNDS):
        failed: dict[int, list[dict]] = {}
        if compiled is not None:
            failed = dict(await validators.failures(tenant_id, compiled,
                                                    [r["data"] for r in rows], deadline))
        for index, errors in failed.items():
            report.add(rows[index]["id"], errors)
        report.checked += len(failed)
        valid = [r for i, r in enumerate(rows) if i not in failed]
        if stamp_version is None or not valid:
            report.checked += len(valid)
            return
        stamped = await nodes.stamp_schema_version(
            tenant_id, [r["id"] for r in valid], [r["version"] for r in valid], stamp_version)
        report.checked += len(stamped)
        if len(stamped) == len(valid):
            return
        # Written (or deleted) since they were read: read them again and check them anew.
        # (A failing node written meanwhile keeps its recorded version: not stamped, it
        # stays what it was, whatever its data now.)
        rows = await nodes.current_of(tenant_id, [r["id"] for r in valid
                                                  if r["id"] not in stamped],
                                      with_data=compiled is not None)
        if not rows:
            return
    raise KeptChanging()
