"""Counts of refused calls per interval, source, method and outcome (see audit/denied_calls.py)."""
from __future__ import annotations

from datetime import datetime

from rpc_server.storage.pagination import Page, PageRequest, fetch_page
from rpc_server.storage.repositories.base import Repository

ADD_LOCK_KEY = 0x64656E79  # "deny": serialises writers of counts, so the cap is exact

# $1..$6 the counts; $7 the prefix of capped sources, $8 their cap, $9 the source they fold into
ADD_CAPPED = """
WITH given (created_at, source, method, outcome, count, last_at) AS (
    SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[],
                         $5::bigint[], $6::timestamptz[])),
present AS (  -- capped sources each interval holds already
    SELECT created_at, count(DISTINCT source) AS sources FROM denied_calls
    WHERE created_at IN (SELECT created_at FROM given) AND starts_with(source, $7)
    GROUP BY created_at),
arriving AS (  -- capped sources new to their interval, numbered
    SELECT created_at, source,
           row_number() OVER (PARTITION BY created_at ORDER BY source) AS n
    FROM (SELECT DISTINCT created_at, source FROM given) g
    WHERE starts_with(source, $7) AND NOT EXISTS (
        SELECT 1 FROM denied_calls d WHERE d.created_at = g.created_at AND d.source = g.source))
INSERT INTO denied_calls (created_at, source, method, outcome, count, last_at)
SELECT g.created_at,
       CASE WHEN coalesce(p.sources, 0) + a.n > $8 THEN $9 ELSE g.source END,
       g.method, g.outcome, sum(g.count)::bigint, max(g.last_at)
FROM given g
LEFT JOIN arriving a USING (created_at, source)
LEFT JOIN present p USING (created_at)
GROUP BY 1, 2, 3, 4
ON CONFLICT (created_at, source, method, outcome) DO UPDATE
SET count = denied_calls.count + EXCLUDED.count,
    last_at = greatest(denied_calls.last_at, EXCLUDED.last_at)
"""


class DeniedCallRepository(Repository):
    table = "denied_calls"
    kind = "denied_call"
    key_columns = ("id",)
    columns = "id, created_at AS interval_start, source, method, outcome, count, last_at, " \
              "created_at"

    async def add(self, counts: list[tuple[datetime, str, str, str, int, datetime]], *,
                  capped_prefix: str, max_sources: int, others: str) -> None:
        """Add counts (interval start, source, method, outcome, count, last attempt) in one
        statement. Sources starting with `capped_prefix` past the first `max_sources` of an
        interval are added to `others` instead: counted here, under a lock every server
        takes, so the cap holds across processes and servers."""
        columns = list(zip(*counts))
        async with self.conn.transaction():
            await self.conn.execute("SELECT pg_advisory_xact_lock($1::bigint)", ADD_LOCK_KEY)
            await self.conn.execute(ADD_CAPPED, *columns, capped_prefix, max_sources, others)

    async def prune(self, before: datetime, limit: int) -> int:
        """Delete at most `limit` counts of intervals that started before `before`; rows
        another server is deleting are skipped, not waited for."""
        status = await self.conn.execute(
            "DELETE FROM denied_calls WHERE (created_at, source, method, outcome) IN ("
            "SELECT created_at, source, method, outcome FROM denied_calls "
            "WHERE created_at < $1 ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
            before, limit)
        return int(status.split()[-1])

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
