"""Counts of refused calls per interval, source, method and outcome (see audit/denied_calls.py)."""
from __future__ import annotations

from datetime import datetime

from rpc_server.storage.pagination import Page, PageRequest, fetch_page
from rpc_server.storage.repositories.base import Repository


class DeniedCallRepository(Repository):
    table = "denied_calls"
    kind = "denied_call"
    key_columns = ("id",)
    columns = "id, created_at AS interval_start, source, method, outcome, count, last_at, " \
              "created_at"

    async def add(self, counts: list[tuple[datetime, str, str, str, int, datetime]]) -> None:
        """Add counts (interval start, source, method, outcome, count, last attempt) in one
        statement."""
        columns = list(zip(*counts))
        await self.conn.execute(
            "INSERT INTO denied_calls (created_at, source, method, outcome, count, last_at) "
            "SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], "
            "$5::bigint[], $6::timestamptz[]) "
            "ON CONFLICT (created_at, source, method, outcome) DO UPDATE "
            "SET count = denied_calls.count + EXCLUDED.count, "
            "last_at = greatest(denied_calls.last_at, EXCLUDED.last_at)", *columns)

    async def list(self, pagination: PageRequest, *, source: str | None, method: str | None,
                   since: datetime | None, until: datetime | None) -> Page:
        """Counts oldest interval first, filtered; keyset pagination on (interval, id)."""
        where, args = [], []
        for condition, value in (("source = ${}", source), ("method = ${}", method),
                                 ("created_at >= ${}", since), ("created_at < ${}", until)):
            if value is not None:
                args.append(value)
                where.append(condition.format(len(args)))
        return await fetch_page(self.conn, scope="denied_calls", select=self.columns,
                                table=self.table, where=where, args=args,
                                pagination=pagination)
