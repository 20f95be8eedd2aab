"""The webhook delivery worker, one per server process: POSTs each active webhook's events
(its tenant's change events after its position that its filter matches) to its URL, in
position order, at least once, signed the Standard Webhooks way (changes/signing.py).

Claims: a worker delivers a webhook only while it holds its claim in the database (a lease,
storage/repositories/webhooks.py), so any number of server processes share the webhooks and
never deliver one concurrently; one delivery per webhook is in flight at a time, which keeps
its order. A worker that dies leaves its claims to run out (FLEXDB_WEBHOOK_LEASE_S); the
next one resumes after the last position recorded as delivered, so the event in flight at
the crash may come twice (at least once: receivers deduplicate by `webhook-id`).

Wake-up: the feed hub's listening connection (changes/hub.py, one per process) kicks it, and
it looks for due webhooks when a tenant's events are numbered, when one of its deliveries ends,
and every SWEEP_S in any case (retries that are due, notifications lost while reconnecting).

Failures (a status other than 2xx, a redirect, a timeout, a refused or failed connection) are
retried after a random delay of up to FLEXDB_WEBHOOK_RETRY_BASE_S doubled per failure, capped
at FLEXDB_WEBHOOK_RETRY_MAX_S (full jitter); after FLEXDB_WEBHOOK_PAUSE_AFTER_FAILURES in a
row the webhook is paused (`failing`). One whose position retention has passed is paused
(`position_expired`): never a silent gap.

Triggers (a webhook with a `pipeline_id` instead of a URL): each matching event becomes a
queued run of the pipeline with the event's JSON as input, through the fair pipeline queue and
the tenant's caps like any run_pipeline with wait: false. The run is queued and recorded on the
trigger in one transaction by the server holding the claim (WebhookRepository.hold and
run_queued), so a crash never queues an event's run twice: whoever claims the trigger next
waits for the recorded run. One run per trigger is in flight; the next event waits for it to
finish. A run that succeeds delivers the event; one that fails, times out, is cancelled or
interrupted is a failed attempt, retried (a new run) and paused like a failing URL. A tenant at
its queued cap is not a failure: the trigger waits and tries again. A run runs as the trigger's
creator, whose key and membership are checked again before each run (`creator_unauthorized`
pauses the trigger; the run's token is capped as for any run)."""
from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Coroutine

import aiohttp
import asyncpg
import orjson

from rpc_server.changes.address_guard import (
    GuardedResolver,
    RefusedAddress,
    check_url,
    literal_address,
    refusal,
)
from rpc_server.changes.claim_loop import SWEEP_S, ClaimLoop
from rpc_server.changes.events import event_of
from rpc_server.changes.signing import BadSecret, SecretBox, secret_bytes, sign
from rpc_server.config import Settings
from rpc_server.errors import Busy, NotFound
from rpc_server.storage.ids import uuid_text
from rpc_server.storage.repositories.audit import AuditRepository, PendingEvent
from rpc_server.storage.repositories.changes import ChangeRepository, EventFilter
from rpc_server.storage.repositories.pipelines import PipelineRepository, PipelineRunRepository
from rpc_server.storage.repositories.webhooks import WebhookRepository

log = logging.getLogger(__name__)
READ_BATCH = 100  # events read at once for one webhook
SCAN = 10_000  # positions one read looks at, whatever the filter matches
MAX_RESPONSE_BYTES = 65_536  # of a receiver's answer read (and ignored)
INLINE_RETRY_S = 5.0  # a retry due sooner waits in the worker, keeping the claim
REDELIVERIES = 10  # redeliveries sent per claim
ERROR_PAUSE_S = 5.0  # a webhook whose delivery failed unexpectedly waits this long
TRIM_EVERY_S = 600.0
TRIM_BATCH = 10_000
USER_AGENT = "flexdb-webhooks/1"
PAUSED_FAILING, PAUSED_EXPIRED, PAUSED_SECRET = "failing", "position_expired", "secret_unreadable"
PAUSED_CREATOR = "creator_unauthorized"
RUN_POLL_S = 0.25  # how often a trigger looks at its run in flight (and at once when it ends here)
RUN_WAIT_S = 30.0  # a run not finished by then: the trigger is let go, and claimed again later
RUN_RECHECK_S = 1.0  # ... and claimed again after this
RUN_ENDED = ("succeeded", "failed", "timed_out", "cancelled")


@dataclass(frozen=True)
class Outcome:
    ok: bool
    http_status: int | None = None
    error: str | None = None


def filter_of(stored: object) -> EventFilter | None:
    """A webhook's stored filter (ChangeFilter's JSON) as the feed's reader takes it."""
    if isinstance(stored, str):
        stored = orjson.loads(stored)
    if not isinstance(stored, dict):
        return None
    return EventFilter(kinds=stored.get("kinds"), operations=stored.get("operations"),
                       node_type_id=None if stored.get("node_type_id") is None
                       else uuid.UUID(str(stored["node_type_id"])),
                       relationship_type=stored.get("relationship_type"))


def event_body(row: asyncpg.Record) -> bytes:
    """The event as a delivery's body: the JSON list_changes has for it."""
    return orjson.dumps(event_of(row), default=uuid_text)


def backoff(failures: int, base_s: float, max_s: float) -> float:
    """Full jitter: a random delay up to base * 2^(failures - 1), at most max_s."""
    return random.uniform(0, min(max_s, base_s * 2 ** min(failures - 1, 40)))


def message_id(webhook_id: uuid.UUID, position: int) -> str:
    """`webhook-id`: one per webhook and event, the same on every retry and redelivery."""
    return f"{webhook_id}:{position}"


def creator_role(standing: asyncpg.Record, roles: frozenset[str],
                 doing: str) -> tuple[str | None, str]:
    """The role work started by someone (a trigger's runs, a job's batches) gets from its
    creator's standing now (WebhookRepository.creator_standing), or None and why they may no
    longer do it: `roles` are those allowed, `doing` what it is, for the message."""
    if standing["is_admin"] is None:
        return None, "its creator no longer exists"
    if standing["key_ok"] is not True:
        return None, "the API key that created it was revoked or has expired"
    if standing["is_admin"]:
        return "owner", ""  # (as for any call of a platform admin; the token caps it)
    role = standing["role"]
    if role is None:
        return None, "its creator is no longer a member of the tenant"
    if role not in roles:
        return None, f"its creator is now a {role}, who may not {doing}"
    return role, ""


class WebhookDeliverer(ClaimLoop):
    what = "webhooks"

    def __init__(self, pool: asyncpg.Pool, settings: Settings, box: SecretBox, *,
                 run_roles: frozenset[str] = frozenset({"member", "admin", "owner"}),
                 runs_queued: Callable[[], None] | None = None):
        """run_roles: the roles a trigger's creator must still hold one of for each run
        (those run_pipeline allows, from the registry); runs_queued: wakes the local pipeline
        queue (app.py wires both). New positions wake it through the process's one listening
        connection, the feed hub's (FeedHub.on_change = changed)."""
        super().__init__(settings.webhook_concurrency)
        self.per_tenant = settings.webhook_tenant_concurrency or max(
            1, settings.webhook_concurrency // 4)
        self.pool, self.settings, self.box = pool, settings, box
        self.run_roles, self.runs_queued = run_roles, runs_queued
        self.runs_started = 0  # trigger runs this process queued
        self._run_ended = asyncio.Event()
        self.wait_s = settings.db_connect_timeout_s
        self.delivered = 0  # attempts that succeeded (read by benchmarks and /metrics)
        self._next_trim = 0.0  # (the loop's clock) when old deliveries are trimmed next
        # The tenants with an active webhook or trigger, as of the last look (None: not
        # looked yet), and when to look again: new positions of other tenants wake nobody.
        self.subscribed: set[uuid.UUID] | None = None
        self._next_look = 0.0
        self._tasks: list[asyncio.Task] = []
        self._session: aiohttp.ClientSession | None = None

    # ------------------------------------------------------------ sending one event

    async def send(self, url: str, webhook_id: uuid.UUID, position: int, body: bytes,
                   key: bytes) -> Outcome:
        """One attempt: POST the event's JSON, signed; 2xx is success, anything else not."""
        assert self._session is not None
        try:  # the host the client connects to (not urlsplit's: see connection_host)
            _, host = check_url(url)
        except RefusedAddress as exc:
            return Outcome(False, error=f"refused: the URL {exc}")
        literal = literal_address(host)
        if literal is not None:  # (the resolver only sees names)
            why = refusal(str(literal), self.settings.webhook_allow_private)
            if why:
                return Outcome(False, error=f"refused: {host} is {why}")
        msg_id, timestamp = message_id(webhook_id, position), int(time.time())
        headers = {"content-type": "application/json", "user-agent": USER_AGENT,
                   "webhook-id": msg_id, "webhook-timestamp": str(timestamp),
                   "webhook-signature": sign(key, msg_id, timestamp, body)}
        connect_s, read_s = self.settings.webhook_connect_timeout_s, self.settings.webhook_timeout_s
        timeout = aiohttp.ClientTimeout(total=connect_s + read_s, sock_connect=connect_s,
                                        sock_read=read_s)
        try:
            async with self._session.post(url, data=body, headers=headers, timeout=timeout,
                                          allow_redirects=False) as response:
                await response.content.read(MAX_RESPONSE_BYTES)  # read, bounded, ignored
                if not response.content.at_eof():
                    response.close()  # the rest is not read: the connection goes
                status = response.status
        except asyncio.TimeoutError:
            return Outcome(False, error=f"timed out (connect {connect_s:g} s, answer "
                                        f"{read_s:g} s)")
        except aiohttp.ClientConnectorError as exc:
            cause = exc.os_error
            if isinstance(cause, RefusedAddress):
                return Outcome(False, error=f"refused: {cause}")
            return Outcome(False, error=f"could not connect: {cause or exc}")
        except RefusedAddress as exc:
            return Outcome(False, error=f"refused: {exc}")
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return Outcome(False, error=f"request failed: {type(exc).__name__}: {exc}")
        if 200 <= status < 300:
            return Outcome(True, status)
        if 300 <= status < 400:
            return Outcome(False, status, f"HTTP {status}: redirects are not followed")
        return Outcome(False, status, f"HTTP {status}")

    # ------------------------------------------------------------ one claimed webhook

    async def _db(self, work):
        async with self.pool.acquire(timeout=self.wait_s) as conn:
            return await work(WebhookRepository(conn), conn)

    async def _serve(self, hook: asyncpg.Record) -> None:
        """Deliver a claimed webhook's redeliveries, then its events until it has caught up,
        must wait for a retry, lost its claim or was paused; then let go of it."""
        tenant_id, webhook_id, worker = hook["tenant_id"], hook["id"], self.worker
        lease = self.settings.webhook_lease_s
        pause_s = 0.0
        try:
            if hook["pipeline_id"] is not None:
                pause_s = await self._trigger(hook, filter_of(hook["filter"]), lease)
                return
            try:
                key = secret_bytes(self.box.open(hook["secret_sealed"]))
            except BadSecret as exc:
                error = str(exc)
                await self._db(lambda r, _: r.pause(tenant_id, webhook_id, worker,
                                                    PAUSED_SECRET, error))
                return
            if not await self._redeliver(hook, key):
                return
            await self._stream(hook, key, filter_of(hook["filter"]), lease)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the claim runs out; retried then
            log.warning("webhook %s of %s: delivery interrupted (will retry): %r",
                        webhook_id, tenant_id, exc)
            pause_s = ERROR_PAUSE_S
        finally:
            try:
                await asyncio.shield(self._db(
                    lambda r, _: r.release(tenant_id, webhook_id, worker, pause_s)))
            except Exception:  # noqa: BLE001 - the lease runs out instead
                pass

    async def _event_body(self, tenant_id, position: int) -> bytes | None:
        async def read(_, conn):
            return await ChangeRepository(conn).read(tenant_id, position - 1, 1, 1)
        window = await self._db(read)
        rows = [r for r in window.rows if r["position"] == position]
        return event_body(rows[0]) if rows else None

    async def _redeliver(self, hook, key: bytes) -> bool:
        """Send the redeliveries asked for, once each; False when the claim is gone."""
        tenant_id, webhook_id = hook["tenant_id"], hook["id"]
        pending = await self._db(lambda r, _: r.pending_redeliveries(tenant_id, webhook_id,
                                                                     REDELIVERIES))
        for item in pending:
            body = await self._event_body(tenant_id, item["position"])
            if body is None:
                outcome = Outcome(False, error="position_expired: retention dropped the event")
            else:
                outcome = await self.send(hook["url"], webhook_id, item["position"], body, key)
                self.delivered += outcome.ok
            await self._db(lambda r, _: r.redelivered(tenant_id, item["id"], outcome.ok,
                                                      outcome.http_status, outcome.error))
            if not await self._db(lambda r, _: r.renew(tenant_id, webhook_id, self.worker,
                                                       self.settings.webhook_lease_s)):
                return False
        return True

    async def _stream(self, hook, key: bytes, only: EventFilter | None, lease: float) -> None:
        tenant_id, webhook_id, worker, url = hook["tenant_id"], hook["id"], self.worker, hook["url"]
        settings = self.settings
        position, failures = hook["delivered_position"], hook["failures"]
        max_bytes = READ_BATCH * (settings.feed_max_object_bytes + 1024)
        while True:
            window = await self._db(lambda _, conn: ChangeRepository(conn).read(
                tenant_id, position, READ_BATCH, SCAN, only, max_bytes))
            if position < window.trimmed_through:
                await self._db(lambda r, _: r.pause(
                    tenant_id, webhook_id, worker, PAUSED_EXPIRED,
                    f"position_expired: events after {position} were dropped by retention "
                    f"(through {window.trimmed_through}); update_webhook with a `position` "
                    "resumes it"))
                return
            for row in window.rows:
                body = event_body(row)
                while True:  # this event until it is delivered (order: nothing passes it)
                    outcome = await self.send(url, webhook_id, row["position"], body, key)
                    if outcome.ok:
                        self.delivered += 1
                        failures = 0
                        if not await self._db(lambda r, _: r.delivered(
                                tenant_id, webhook_id, worker, lease, row["position"],
                                outcome.http_status)):
                            return
                        position = row["position"]
                        break
                    failures += 1
                    delay = backoff(failures, settings.webhook_retry_base_s,
                                    settings.webhook_retry_max_s)
                    pause = (PAUSED_FAILING if failures >= settings.webhook_pause_after_failures
                             else None)
                    retry_at = datetime.now(timezone.utc) + timedelta(seconds=delay)
                    if not await self._db(lambda r, _: r.failed(
                            tenant_id, webhook_id, worker, lease, row["position"],
                            outcome.http_status, outcome.error or "failed", retry_at, pause)):
                        return
                    if pause or delay > INLINE_RETRY_S:
                        return  # paused, or the sweep takes it up again when it is due
                    await asyncio.sleep(delay)
            if window.scanned_to > position:  # the rest of the read the filter let pass
                if not await self._db(lambda r, _: r.passed(tenant_id, webhook_id, worker,
                                                            lease, window.scanned_to)):
                    return
                position = window.scanned_to
            if position >= window.head:
                return

    # ------------------------------------------------------------ one claimed trigger

    def run_ended(self) -> None:
        """A pipeline run ended in this process (the runner calls it): triggers waiting for
        one look now rather than at their next poll."""
        self._run_ended.set()

    async def _trigger(self, hook, only: EventFilter | None, lease: float) -> float:
        """Run a claimed trigger's events, one run at a time, until it has caught up, must
        wait (a retry, its run still going, the tenant's queue full), lost its claim or was
        paused. Returns how long nobody should take it up again."""
        tenant_id, webhook_id, worker = hook["tenant_id"], hook["id"], self.worker
        settings = self.settings
        position, failures = hook["delivered_position"], hook["failures"]
        run_id, run_position = hook["run_id"], hook["run_position"]
        max_bytes = READ_BATCH * (settings.feed_max_object_bytes + 1024)
        rows: list[asyncpg.Record] = []
        while True:
            if run_id is None:
                if not rows:
                    window = await self._db(lambda _, conn: ChangeRepository(conn).read(
                        tenant_id, position, READ_BATCH, SCAN, only, max_bytes,
                        for_trigger=True))
                    if position < window.trimmed_through:
                        await self._db(lambda r, _: r.pause(
                            tenant_id, webhook_id, worker, PAUSED_EXPIRED,
                            f"position_expired: events after {position} were dropped by "
                            f"retention (through {window.trimmed_through}); update_webhook "
                            "with a `position` resumes it"))
                        return 0.0
                    rows = list(window.rows)
                    if not rows:
                        if window.scanned_to > position:  # none matched: passed
                            if not await self._db(lambda r, _: r.passed(
                                    tenant_id, webhook_id, worker, lease, window.scanned_to)):
                                return 0.0
                            position = window.scanned_to
                        if position >= window.head:
                            return 0.0
                        continue
                row = rows[0]
                queued = await self._queue_run(hook, row, lease)
                if isinstance(queued, float):
                    return queued  # not queued: wait this long (or 0: claim lost, paused)
                run_id, run_position = queued, row["position"]
            outcome = await self._await_run(tenant_id, webhook_id, run_id, lease)
            if outcome is None:
                return RUN_RECHECK_S  # still queued or running: looked at again later
            if outcome.ok:
                failures = 0
                if not await self._db(lambda r, _: r.delivered(
                        tenant_id, webhook_id, worker, lease, run_position, None)):
                    return 0.0
                position = run_position
                if rows and rows[0]["position"] == run_position:
                    rows.pop(0)
                run_id = run_position = None
                continue
            failures += 1
            delay = backoff(failures, settings.webhook_retry_base_s, settings.webhook_retry_max_s)
            pause = (PAUSED_FAILING if failures >= settings.webhook_pause_after_failures
                     else None)
            retry_at = datetime.now(timezone.utc) + timedelta(seconds=delay)
            if not await self._db(lambda r, _: r.failed(
                    tenant_id, webhook_id, worker, lease, run_position, None,
                    outcome.error or "failed", retry_at, pause)):
                return 0.0
            run_id = run_position = None
            if pause or delay > INLINE_RETRY_S:
                return 0.0  # paused, or the sweep takes it up again when it is due
            await asyncio.sleep(delay)

    async def _queue_run(self, hook, row: asyncpg.Record, lease: float) -> uuid.UUID | float:
        """Queue the trigger's run for the event `row` and record it on the trigger, in one
        transaction, after checking that its creator may still run it. The run's id; or how
        long to wait before trying again (0.0: the claim is gone, or the trigger paused)."""
        tenant_id, webhook_id, worker = hook["tenant_id"], hook["id"], self.worker
        user_id, key_id = hook["created_by_user_id"], hook["created_by_key_id"]
        position = row["position"]
        event = orjson.loads(event_body(row))
        request_id = f"trigger:{webhook_id}:{position}"

        async def queue(repo: WebhookRepository, conn) -> uuid.UUID | float:
            async with conn.transaction():
                if not await repo.hold(tenant_id, webhook_id, worker):
                    return 0.0
                role, why = self._creator_role(
                    await repo.creator_standing(tenant_id, user_id, key_id))
                if role is None:
                    await repo.pause(tenant_id, webhook_id, worker, PAUSED_CREATOR,
                                     f"{PAUSED_CREATOR}: {why}; the trigger runs as the user "
                                     "and key that created it: resuming it (update_webhook "
                                     "with status: active) makes the caller its creator")
                    return 0.0
                pipeline = await PipelineRepository(conn).get(tenant_id, hook["pipeline_id"])
                run = await PipelineRunRepository(conn).enqueue(
                    pipeline, event, "basic", user_id, key_id, role, request_id,
                    self.settings.pipeline_tenant_queued)
                await repo.run_queued(tenant_id, webhook_id, worker, lease, position,
                                      run["id"])
                await AuditRepository(conn).append(PendingEvent(
                    tenant_id=tenant_id, id=uuid.uuid4(), created_at=datetime.now(timezone.utc),
                    actor_user_id=user_id, actor_key_id=key_id, method="run_pipeline",
                    target_kind="pipeline_run", target_id=str(run["id"]), outcome="ok",
                    request_id=request_id, summary=orjson.dumps(
                        {"pipeline_id": str(pipeline["id"]), "trigger_id": str(webhook_id),
                         "position": position, "wait": False},
                        option=orjson.OPT_SORT_KEYS).decode()))
                return run["id"]

        try:
            queued = await self._db(queue)
        except Busy as exc:  # the tenant's queue is full: not the trigger's failure
            return min(float(exc.data.get("retry_after", 5.0)), RUN_RECHECK_S)
        except NotFound:  # its pipeline was deleted (and the trigger with it)
            return 0.0
        if not isinstance(queued, float):
            self.runs_started += 1
            if self.runs_queued is not None:
                self.runs_queued()
        return queued

    def _creator_role(self, standing: asyncpg.Record) -> tuple[str | None, str]:
        return creator_role(standing, self.run_roles, "run pipelines")

    async def _await_run(self, tenant_id, webhook_id, run_id,
                         lease: float) -> Outcome | None:
        """Wait for the trigger's run to end (keeping the claim): its outcome, or None when it
        is still queued or running after RUN_WAIT_S."""
        loop = asyncio.get_running_loop()
        started = renewed = loop.time()
        while True:
            found = await self._db(lambda _, conn: PipelineRunRepository(conn).outcome(
                tenant_id, run_id))
            if found is None:
                return Outcome(False, error=f"run {run_id} no longer exists")
            if found["status"] in RUN_ENDED:
                if found["status"] == "succeeded":
                    return Outcome(True)
                error = found["error"] if isinstance(found["error"], dict) else {}
                kind = error.get("type") or found["status"]
                return Outcome(False, error=f"run {run_id} {found['status']} ({kind}): "
                                            f"{error.get('message', 'no details')}")
            now = loop.time()
            if now - started >= RUN_WAIT_S:
                return None
            if now - renewed >= lease / 3:
                if not await self._db(lambda r, _: r.renew(tenant_id, webhook_id, self.worker,
                                                           lease)):
                    return None
                renewed = now
            self._run_ended.clear()
            try:
                await asyncio.wait_for(self._run_ended.wait(), RUN_POLL_S)
            except asyncio.TimeoutError:
                pass

    # ------------------------------------------------------------ the loop

    async def _claim(self, free: int) -> list[asyncpg.Record]:
        held = self.held_by_tenant()
        return await self._db(lambda r, _: r.claim(self.worker, self.settings.webhook_lease_s,
                                                   free, self.per_tenant, held))

    def _serve_row(self, row: asyncpg.Record) -> Coroutine[Any, Any, None]:
        return self._serve(row)

    def changed(self, tenant_id: uuid.UUID | None) -> None:
        """New positions of `tenant_id` (None: of any tenant, e.g. after a reconnection):
        sweep now if one of its webhooks may be due. Webhooks made since the last look are
        found by the next sweep, within SWEEP_S (and those made here were kicked for)."""
        if tenant_id is None or self.subscribed is None or tenant_id in self.subscribed:
            self.kick()

    def subscribe(self, tenant_id: uuid.UUID) -> None:
        """A webhook of `tenant_id` was made, changed or asked to redeliver here."""
        if self.subscribed is not None:
            self.subscribed.add(tenant_id)
        self.kick()

    async def _after_claim(self) -> None:
        """Look again which tenants have active webhooks (once per SWEEP_S); deliveries
        older than the feed's retention go, a batch at a time."""
        now = asyncio.get_running_loop().time()
        if now >= self._next_look:
            self._next_look = now + SWEEP_S
            self.subscribed = await self._db(lambda r, _: r.subscribed_tenants())
        if now >= self._next_trim:
            self._next_trim = now + TRIM_EVERY_S
            before = datetime.now(timezone.utc) - timedelta(
                days=self.settings.feed_retention_days)
            await self._db(lambda r, _: r.trim_deliveries(before, TRIM_BATCH))

    def start(self) -> None:
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(self.settings.webhook_allow_private),
            use_dns_cache=False, limit=self.settings.webhook_concurrency)
        self._session = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False,
            auto_decompress=False)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run())]

    async def stop(self) -> None:
        """Stop delivering and let go of the claims held (an attempt cut short is made
        again by whoever claims the webhook next)."""
        tasks = [*self._tasks, *self.active.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await self._db(lambda r, _: r.release_all(self.worker))
        except Exception as exc:  # noqa: BLE001 - the leases run out instead
            log.warning("webhook claims left to expire at stop: %r", exc)
        if self._session is not None:
            await self._session.close()
