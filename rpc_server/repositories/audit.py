from __future__ import annotations

from datetime import datetime
from uuid import UUID

from ..pagination import Page, fetch_page
from ..params import Pagination
from .base import Repository


class AuditRepository(Repository):
    table = "audit_events"
    kind = "audit_event"
    key_columns = ("tenant_id", "id")
    columns = ("id, tenant_id, seq, created_at, actor_user_id, actor_key_id, method, "
               "target_kind, target_id, outcome, request_id, summary, encode(hash, 'hex') AS hash")

    async def list(self, tenant_id: UUID, pagination: Pagination, *, actor: UUID | None,
                   method: str | None, target_id: str | None, since: datetime | None,
                   until: datetime | None) -> Page:
        where, args = ["tenant_id = $1"], [tenant_id]
        for condition, value in (("actor_user_id = ${}", actor), ("method = ${}", method),
                                 ("target_id = ${}", target_id), ("created_at >= ${}", since),
                                 ("created_at < ${}", until)):
            if value is not None:
                args.append(value)
                where.append(condition.format(len(args)))
        return await fetch_page(self.conn, scope="audit_events", select=self.columns,
                                table="audit_events", where=where, args=args,
                                pagination=pagination)
