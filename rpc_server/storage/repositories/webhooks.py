"""Webhooks and their deliveries (sql/0016_webhooks.sql): what the methods manage, and the
claims, progress and outcomes of the delivery workers (changes/webhooks.py). Every write of a
worker names the worker in its WHERE (claimed_by = $n): one whose claim was taken over
changes nothing."""
from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from rpc_server.errors import QuotaExceeded
from rpc_server.storage.pagination import Page, PageRequest, fetch_page
from rpc_server.storage.repositories.base import Repository

WEBHOOK_COLUMNS = ("id, tenant_id, url, pipeline_id, description, filter, secret_hint, status, "
                   "paused_reason, paused_at, delivered_position, failures, next_attempt_at, "
                   "last_attempt_at, last_http_status, last_error, created_by_user_id, "
                   "created_by_key_id, run_id, created_at, updated_at, version")
DELIVERY_COLUMNS = ("id, webhook_id, position, redelivery, status, attempts, last_http_status, "
                    "last_error, run_id, next_attempt_at, created_at, updated_at")
# What a worker reads of a webhook it claimed.
CLAIMED_COLUMNS = ("tenant_id, id, url, filter, secret_sealed, delivered_position, failures, "
                   "pipeline_id, created_by_user_id, created_by_key_id, run_id, run_position")
LOCK_KEY = 0x77686B73  # "whks": advisory locks serialising one tenant's webhook creation
LEASE = "now() + $3 * interval '1 second'"
MAX_ERROR = 1000  # characters of an error kept


class WebhookRepository(Repository):
    table = "webhooks"
    kind = "webhook"
    key_columns = ("tenant_id", "id")
    columns = WEBHOOK_COLUMNS

    async def create(self, tenant_id: UUID, url: str | None, pipeline_id: UUID | None,
                     description: str, filter: Any, sealed: str | None, hint: str | None,
                     created_by: tuple[UUID | None, UUID | None], cap: int) -> asyncpg.Record:
        """A new webhook (a URL and its secret) or trigger (a pipeline), created by
        `created_by` (user, key), that starts after the tenant's last position;
        QuotaExceeded past `cap` webhooks in the tenant. In a transaction (the count and the
        insert take turns per tenant)."""
        await self.conn.execute("SELECT pg_advisory_xact_lock($1::bigint)",
                                LOCK_KEY ^ (tenant_id.int & 0x7FFFFFFFFFFFFFFF))
        count = await self.conn.fetchval("SELECT count(*) FROM webhooks WHERE tenant_id = $1",
                                         tenant_id)
        if count >= cap:
            raise QuotaExceeded(f"The tenant has {count} webhooks; delete one first",
                                limit=cap, usage=count, setting="FLEXDB_WEBHOOKS_MAX_PER_TENANT")
        return await self._fetch_one(
            "INSERT INTO webhooks (tenant_id, url, pipeline_id, description, filter, "
            "secret_sealed, secret_hint, created_by_user_id, created_by_key_id, "
            "delivered_position) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, "
            "coalesce((SELECT last_position FROM change_heads WHERE tenant_id = $1), 0)) "
            f"RETURNING {self.columns}", tenant_id, url, pipeline_id, description, filter,
            sealed, hint, *created_by)

    async def get(self, tenant_id: UUID, webhook_id: UUID) -> asyncpg.Record:
        return await self._require(tenant_id, webhook_id)

    async def update(self, tenant_id: UUID, webhook_id: UUID, changes: dict[str, Any],
                     expected_version: int | None) -> asyncpg.Record:
        return await self._update((tenant_id, webhook_id), changes, expected_version)

    async def delete(self, tenant_id: UUID, webhook_id: UUID) -> None:
        await self._delete(tenant_id, webhook_id)

    async def list(self, tenant_id: UUID, pagination: PageRequest) -> Page:
        return await fetch_page(self.conn, scope="webhooks", select=self.columns,
                                table="webhooks", where=["tenant_id = $1"], args=[tenant_id],
                                pagination=pagination)

    # ------------------------------------------------------------ deliveries (methods)

    async def deliveries(self, tenant_id: UUID, webhook_id: UUID,
                         pagination: PageRequest) -> Page:
        return await fetch_page(self.conn, scope="webhook_deliveries", select=DELIVERY_COLUMNS,
                                table="webhook_deliveries",
                                where=["tenant_id = $1", "webhook_id = $2"],
                                args=[tenant_id, webhook_id], pagination=pagination)

    async def request_redelivery(self, tenant_id: UUID, webhook_id: UUID,
                                 position: int) -> asyncpg.Record:
        return await self._fetch_one(
            "INSERT INTO webhook_deliveries (tenant_id, webhook_id, position, redelivery, "
            "status, next_attempt_at) VALUES ($1, $2, $3, true, 'pending', now()) "
            f"RETURNING {DELIVERY_COLUMNS}", tenant_id, webhook_id, position)

    async def delivery(self, tenant_id: UUID, webhook_id: UUID,
                       delivery_id: UUID) -> asyncpg.Record | None:
        return await self.conn.fetchrow(
            f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries "
            "WHERE tenant_id = $1 AND webhook_id = $2 AND id = $3",
            tenant_id, webhook_id, delivery_id)

    # ------------------------------------------------------------ the delivery workers

    async def subscribed_tenants(self) -> set[UUID]:
        """The tenants with an active webhook or trigger (a look over every tenant's webhooks:
        one of the statements not pinned to one tenant)."""
        rows = await self.conn.fetch(
            "SELECT DISTINCT tenant_id FROM webhooks WHERE status = 'active'")
        return {row["tenant_id"] for row in rows}

    async def claim(self, worker: str, lease_s: float, limit: int, per_tenant: int,
                    held: dict[UUID, int]) -> builtins.list[asyncpg.Record]:
        """Up to `limit` active webhooks that are due (an event after their position, or a
        redelivery waiting) and claimed by nobody (or by a worker whose lease ran out), now
        claimed by `worker` for `lease_s`; of one tenant's, at most `per_tenant` less those
        the worker already serves (`held`), the longest due first. SKIP LOCKED: two workers
        never take the same one. (A sweep over every tenant's webhooks: one of the
        statements not pinned to one tenant.)"""
        unclaimed = "(w.claimed_until IS NULL OR w.claimed_until < now())"
        return await self.conn.fetch(
            "WITH candidate AS ("
            "  SELECT w.tenant_id, w.id, w.next_attempt_at, row_number() OVER ("
            "    PARTITION BY w.tenant_id ORDER BY w.next_attempt_at, w.id) AS nth "
            "  FROM webhooks w "
            f"  WHERE w.status = 'active' AND w.next_attempt_at <= now() AND {unclaimed} "
            "  AND (w.delivered_position < coalesce((SELECT h.last_position FROM change_heads h "
            "         WHERE h.tenant_id = w.tenant_id), 0) "
            "    OR EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.tenant_id = w.tenant_id "
            "         AND d.webhook_id = w.id AND d.status = 'pending'))), "
            "due AS ("
            "  SELECT w.tenant_id, w.id FROM candidate c "
            "  JOIN webhooks w ON w.tenant_id = c.tenant_id AND w.id = c.id "
            "  LEFT JOIN unnest($5::uuid[], $6::int[]) AS held (tenant_id, n) "
            "    ON held.tenant_id = c.tenant_id "
            f"  WHERE c.nth <= $4 - coalesce(held.n, 0) AND w.status = 'active' AND {unclaimed} "
            "  ORDER BY c.next_attempt_at LIMIT $2 FOR UPDATE OF w SKIP LOCKED) "
            f"UPDATE webhooks w SET claimed_by = $1, claimed_until = {LEASE} "
            "FROM due WHERE w.tenant_id = due.tenant_id AND w.id = due.id "
            f"RETURNING {', '.join('w.' + c.strip() for c in CLAIMED_COLUMNS.split(','))}",
            worker, limit, lease_s, per_tenant, list(held), list(held.values()))

    async def delivered(self, tenant_id: UUID, webhook_id: UUID, worker: str, lease_s: float,
                        position: int, http_status: int | None) -> bool:
        """The event at `position` was delivered: the webhook is done with it (its delivery
        row says so). False when `worker` no longer holds the webhook."""
        return bool(await self.conn.fetchval(
            "WITH w AS ("
            "  UPDATE webhooks SET delivered_position = $4, failures = 0, "
            "  next_attempt_at = now(), last_attempt_at = now(), last_http_status = $5, "
            f"  last_error = NULL, run_id = NULL, run_position = NULL, claimed_until = {LEASE} "
            "  WHERE tenant_id = $1 AND id = $2 AND claimed_by = $6 AND status = 'active' "
            "  RETURNING tenant_id, id), "
            "d AS ("
            "  INSERT INTO webhook_deliveries (tenant_id, webhook_id, position, status, "
            "  attempts, last_http_status) SELECT tenant_id, id, $4, 'delivered', 1, $5 FROM w "
            "  ON CONFLICT (tenant_id, webhook_id, position) WHERE NOT redelivery DO UPDATE SET "
            "  status = 'delivered', attempts = webhook_deliveries.attempts + 1, "
            "  last_http_status = $5, last_error = NULL, next_attempt_at = NULL, "
            "  updated_at = now()) "
            "SELECT count(*) FROM w", tenant_id, webhook_id, lease_s, position, http_status,
            worker))

    async def failed(self, tenant_id: UUID, webhook_id: UUID, worker: str, lease_s: float,
                     position: int, http_status: int | None, error: str, retry_at: datetime,
                     pause_reason: str | None) -> bool:
        """An attempt at the event at `position` failed: counted, retried at `retry_at`, or
        the webhook paused (`pause_reason`). False when `worker` no longer holds it."""
        return bool(await self.conn.fetchval(
            "WITH w AS ("
            "  UPDATE webhooks SET failures = failures + 1, next_attempt_at = $7, "
            "  last_attempt_at = now(), last_http_status = $5, last_error = $6, "
            "  run_id = NULL, run_position = NULL, "
            "  status = CASE WHEN $8::text IS NULL THEN status ELSE 'paused' END, "
            "  paused_reason = $8, paused_at = CASE WHEN $8::text IS NULL THEN NULL "
            f"  ELSE now() END, claimed_until = {LEASE}, updated_at = now(), "
            "  version = version + CASE WHEN $8::text IS NULL THEN 0 ELSE 1 END "
            "  WHERE tenant_id = $1 AND id = $2 AND claimed_by = $9 AND status = 'active' "
            "  RETURNING tenant_id, id), "
            "d AS ("
            "  INSERT INTO webhook_deliveries (tenant_id, webhook_id, position, status, "
            "  attempts, last_http_status, last_error, next_attempt_at) "
            "  SELECT tenant_id, id, $4, CASE WHEN $8::text IS NULL THEN 'retrying' "
            "  ELSE 'failed' END, 1, $5, $6, CASE WHEN $8::text IS NULL THEN $7 END FROM w "
            "  ON CONFLICT (tenant_id, webhook_id, position) WHERE NOT redelivery DO UPDATE SET "
            "  status = EXCLUDED.status, attempts = webhook_deliveries.attempts + 1, "
            "  last_http_status = $5, last_error = $6, "
            "  next_attempt_at = EXCLUDED.next_attempt_at, updated_at = now()) "
            "SELECT count(*) FROM w", tenant_id, webhook_id, lease_s, position, http_status,
            error[:MAX_ERROR], retry_at, pause_reason, worker))

    async def passed(self, tenant_id: UUID, webhook_id: UUID, worker: str, lease_s: float,
                     position: int) -> bool:
        """The webhook is done with the events through `position` its filter let pass."""
        return bool(await self.conn.fetchval(
            "UPDATE webhooks SET delivered_position = greatest(delivered_position, $4), "
            f"claimed_until = {LEASE} "
            "WHERE tenant_id = $1 AND id = $2 AND claimed_by = $5 AND status = 'active' "
            "RETURNING true", tenant_id, webhook_id, lease_s, position, worker))

    # ------------------------------------------------------------ triggers (their runs)

    async def hold(self, tenant_id: UUID, webhook_id: UUID, worker: str) -> bool:
        """In a transaction: lock the trigger while `worker` holds it and no run of it is in
        flight (it then queues one: see run_queued). False otherwise."""
        return bool(await self.conn.fetchval(
            "SELECT true FROM webhooks WHERE tenant_id = $1 AND id = $2 AND claimed_by = $3 "
            "AND status = 'active' AND run_id IS NULL FOR UPDATE", tenant_id, webhook_id, worker))

    async def run_queued(self, tenant_id: UUID, webhook_id: UUID, worker: str, lease_s: float,
                         position: int, run_id: UUID) -> None:
        """In the transaction of hold() and of the run's creation: the trigger's run for the
        event at `position` is `run_id` (and its delivery record says so)."""
        # The run is a trigger's (its changes fire no trigger: ChangeRepository.read), for
        # good: the delivery record below names only the last attempt's run.
        await self.conn.execute(
            "UPDATE pipeline_runs SET started_by_trigger = $3 WHERE tenant_id = $1 AND id = $2",
            tenant_id, run_id, webhook_id)
        await self.conn.execute(
            "WITH w AS ("
            "  UPDATE webhooks SET run_id = $5, run_position = $4, last_attempt_at = now(), "
            f"  claimed_until = {LEASE} "
            "  WHERE tenant_id = $1 AND id = $2 AND claimed_by = $6 RETURNING tenant_id, id) "
            "INSERT INTO webhook_deliveries (tenant_id, webhook_id, position, status, run_id) "
            "SELECT tenant_id, id, $4, 'running', $5 FROM w "
            "ON CONFLICT (tenant_id, webhook_id, position) WHERE NOT redelivery DO UPDATE SET "
            "status = 'running', run_id = $5, next_attempt_at = NULL, updated_at = now()",
            tenant_id, webhook_id, lease_s, position, run_id, worker)

    async def creator_standing(self, tenant_id: UUID, user_id: UUID | None,
                               key_id: UUID | None) -> asyncpg.Record:
        """Whether a trigger's creator may still run it: their key is theirs, unrevoked and
        unexpired (key_ok), whether they are a platform admin (is_admin; null: no such user),
        and their active role in the tenant (role)."""
        return await self._fetch_one(
            "SELECT (SELECT k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > "
            "  now()) AND k.user_id = $2 FROM api_keys k WHERE k.id = $3) AS key_ok, "
            "  (SELECT u.is_platform_admin FROM users u WHERE u.id = $2) AS is_admin, "
            "  (SELECT m.role FROM tenant_users m WHERE m.tenant_id = $1 AND m.user_id = $2 "
            "   AND m.status = 'active') AS role", tenant_id, user_id, key_id)

    async def renew(self, tenant_id: UUID, webhook_id: UUID, worker: str,
                    lease_s: float) -> bool:
        return bool(await self.conn.fetchval(
            f"UPDATE webhooks SET claimed_until = {LEASE} "
            "WHERE tenant_id = $1 AND id = $2 AND claimed_by = $4 AND status = 'active' "
            "RETURNING true", tenant_id, webhook_id, lease_s, worker))

    async def pause(self, tenant_id: UUID, webhook_id: UUID, worker: str, reason: str,
                    error: str) -> None:
        await self.conn.execute(
            "UPDATE webhooks SET status = 'paused', paused_reason = $4, paused_at = now(), "
            "last_error = $5, updated_at = now(), version = version + 1 "
            "WHERE tenant_id = $1 AND id = $2 AND claimed_by = $3 AND status = 'active'",
            tenant_id, webhook_id, worker, reason, error[:MAX_ERROR])

    async def release(self, tenant_id: UUID, webhook_id: UUID, worker: str,
                      wait_s: float = 0.0) -> None:
        """`worker` lets go of the webhook; no worker takes it for `wait_s`."""
        await self.conn.execute(
            "UPDATE webhooks SET claimed_by = NULL, claimed_until = NULL, next_attempt_at = "
            "greatest(next_attempt_at, now() + $4 * interval '1 second') "
            "WHERE tenant_id = $1 AND id = $2 AND claimed_by = $3",
            tenant_id, webhook_id, worker, wait_s)

    async def release_all(self, worker: str) -> None:
        """A stopping worker lets go of what it holds (across tenants: its own claims)."""
        await self.conn.execute(
            "UPDATE webhooks SET claimed_by = NULL, claimed_until = NULL "
            "WHERE claimed_by = $1", worker)

    async def pending_redeliveries(self, tenant_id: UUID, webhook_id: UUID,
                                   limit: int) -> builtins.list[asyncpg.Record]:
        return await self.conn.fetch(
            "SELECT id, position FROM webhook_deliveries WHERE tenant_id = $1 "
            "AND webhook_id = $2 AND status = 'pending' ORDER BY created_at, id LIMIT $3",
            tenant_id, webhook_id, limit)

    async def redelivered(self, tenant_id: UUID, delivery_id: UUID, ok: bool,
                          http_status: int | None, error: str | None) -> None:
        """A redelivery's one attempt: delivered or failed (a caller may ask again)."""
        await self.conn.execute(
            "UPDATE webhook_deliveries SET status = $3, attempts = attempts + 1, "
            "last_http_status = $4, last_error = $5, next_attempt_at = NULL, "
            "updated_at = now() WHERE tenant_id = $1 AND id = $2",
            tenant_id, delivery_id, "delivered" if ok else "failed", http_status,
            None if error is None else error[:MAX_ERROR])

    async def trim_deliveries(self, before: datetime, batch: int) -> int:
        """Drop up to `batch` finished delivery records last changed before `before` (across
        tenants: the workers' retention pass)."""
        status = await self.conn.execute(
            "DELETE FROM webhook_deliveries WHERE (tenant_id, id) IN ("
            "  SELECT tenant_id, id FROM webhook_deliveries WHERE updated_at < $1 "
            "  AND status IN ('delivered', 'failed') LIMIT $2)", before, batch)
        return int(status.split()[-1])
