"""Webhooks (tenant admins): a tenant's change events POSTed to a URL, signed, in position
order, at least once (changes/webhooks.py delivers them). The secret is shown once, by
create_webhook; the URL is checked against private addresses when saved (and again at every
delivery: changes/address_guard.py).

Triggers are webhooks that name a stored pipeline (`pipeline_id`) instead of a URL: each
matching event is run through the pipeline as a queued run, one at a time and in order, as
the user and key that created the trigger (or last resumed it). They have no secret."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal

from pydantic import Field, StrictInt

from rpc_server.api import results
from rpc_server.api.context import Call
from rpc_server.api.params import (
    ChangeFilter,
    Description,
    Id,
    OptionalId,
    PaginationParam,
    Params,
    Version,
)
from rpc_server.api.registry import rpc_method
from rpc_server.changes.address_guard import MAX_URL, RefusedAddress, check_destination
from rpc_server.changes.signing import BadSecret, hint, new_secret, secret_bytes
from rpc_server.errors import Forbidden, InvalidParams, NotFound, PipelineFailed
from rpc_server.methods.common import DELETED, changes_of, require_changes, require_tenant
from rpc_server.security.auth import tenant_role
from rpc_server.storage.repositories.changes import ChangeRepository
from rpc_server.storage.repositories.pipelines import PipelineRepository
from rpc_server.storage.repositories.webhooks import WebhookRepository

UPDATABLE = ("url", "pipeline_id", "description", "filter", "status", "position")
PAUSED_BY_CALLER = "paused"
Position = StrictInt


class CreateWebhook(Params):
    tenant_id: Id
    url: str | None = Field(None, min_length=1, max_length=MAX_URL, description=(
        "Where the events are POSTed: an http:// or https:// URL that does not resolve to a "
        "loopback, private, link-local, shared or reserved address. Give either url or "
        "pipeline_id."))
    pipeline_id: OptionalId = Field(None, description=(
        "Or: a pipeline of the tenant to run with each event as its input (a trigger): "
        "queued runs, one at a time, in position order, as the caller."))
    filter: ChangeFilter | None = Field(None, description="Which events it gets (absent: all).")
    secret: str | None = Field(None, min_length=1, max_length=200, description=(
        "The signing secret, `whsec_` and the base64 of 24 to 64 bytes; absent: generated. "
        "A trigger has none."))
    description: Description = ""


class WebhookId(Params):
    tenant_id: Id
    id: Id


class UpdateWebhook(Params):
    tenant_id: Id
    id: Id
    url: str | None = Field(None, min_length=1, max_length=MAX_URL, description=(
        "A webhook's new URL (not for a trigger)."))
    pipeline_id: OptionalId = Field(None, description=(
        "A trigger's new pipeline (not for a URL webhook); its runs then run as the caller."))
    description: Description | None = None
    filter: ChangeFilter | None = Field(None, description="The new filter (`{}`: all events).")
    status: Literal["active", "paused"] | None = Field(None, description=(
        "`paused` stops deliveries; `active` resumes a paused webhook (its failure count "
        "starts again) with the first event it has not delivered; a trigger resumed then "
        "runs as the caller."))
    position: Position | None = Field(None, ge=0, le=2**62, description=(
        "Set the last position the webhook is done with: the events after it are delivered "
        "next (to replay, or to resume one paused with `position_expired`)."))
    expected_version: Version | None = None


class ListWebhooks(Params):
    tenant_id: Id
    pagination: PaginationParam


class ListWebhookDeliveries(Params):
    tenant_id: Id
    webhook_id: Id
    pagination: PaginationParam


class Redeliver(Params):
    tenant_id: Id
    webhook_id: Id
    position: Position | None = Field(None, ge=1, le=2**62, description=(
        "The event to send again (one the webhook has delivered or passed)."))
    delivery_id: OptionalId = Field(None, description="Or: the delivery whose event to send "
                                                      "again.")


async def _checked_url(ctx: Call, url: str) -> str:
    try:
        await check_destination(url, ctx.state.settings.webhook_allow_private)
    except RefusedAddress as exc:
        raise InvalidParams.field("url", f"the URL {exc}") from None
    return url


def _stored_filter(only: ChangeFilter | None) -> dict | None:
    if only is None:
        return None
    stored = only.model_dump(mode="json", exclude_none=True)
    return stored or None


async def _run_as(ctx: Call) -> tuple:
    """Who a trigger's runs run as: the caller's user and key (never a shared anonymous
    caller, whose rights could not be checked again)."""
    principal = await ctx.principal()
    if principal.user_id is None:
        raise Forbidden("A trigger runs its pipeline as the user who sets it up: call with "
                        "an API key")
    return principal.user_id, principal.key_id


def _pipelines_enabled(ctx: Call) -> None:
    if not ctx.state.pipelines.enabled:
        raise PipelineFailed("Pipelines are not enabled on this server (no sandbox worker "
                             "configured: FLEXDB_SANDBOX_SECRET)", reason="disabled")


@rpc_method(CreateWebhook, tenant_role("admin"), result=results.WebhookCreated,
             run_db=None, tenant_must_exist=True)
async def create_webhook(ctx: Call, p: CreateWebhook) -> dict:
    """Create a webhook: the tenant's change events from now on, POSTed to `url`, signed
    with its secret (returned only in this answer); or a trigger: each event run through
    the pipeline `pipeline_id`."""
    if (p.url is None) == (p.pipeline_id is None):
        raise InvalidParams.field("url", "give either url (a webhook) or pipeline_id (a "
                                  "trigger), not both")
    sealed = shown = None
    if p.url is not None:
        await _checked_url(ctx, p.url)
        shown = p.secret if p.secret is not None else new_secret()
        try:
            secret_bytes(shown)
        except BadSecret as exc:
            raise InvalidParams.field("secret", f"the secret {exc}") from None
        sealed = ctx.state.webhooks.box.seal(shown)
    elif p.secret is not None:
        raise InvalidParams.field("secret", "a trigger (pipeline_id) has no signing secret")
    else:
        _pipelines_enabled(ctx)
    principal = await ctx.principal()
    created_by = ((principal.user_id, principal.key_id) if p.url is not None
                  else await _run_as(ctx))
    await ctx.state.sequencer.flush(p.tenant_id)  # starts after every change made so far
    async with ctx.transaction() as conn:
        await require_tenant(ctx, conn, p.tenant_id)
        if p.pipeline_id is not None:
            await PipelineRepository(conn).get(p.tenant_id, p.pipeline_id)
        row = await WebhookRepository(conn).create(
            p.tenant_id, p.url, p.pipeline_id, p.description, _stored_filter(p.filter),
            sealed, None if shown is None else hint(shown), created_by,
            ctx.state.settings.webhooks_max_per_tenant)
        ctx.set_target("webhook", row["id"])
    ctx.state.webhooks.subscribe(p.tenant_id)
    return {"webhook": ctx.shaper.one(row), "secret": shown}


@rpc_method(WebhookId, tenant_role("admin"), result=results.WebhookResult,
             run_db=None, tenant_must_exist=False)
async def get_webhook(ctx: Call, p: WebhookId) -> dict:
    """Get a webhook: its URL, filter, status (and why it is paused), progress and last
    outcome (never its secret)."""
    async with ctx.connection() as conn:
        row = await WebhookRepository(conn).get(p.tenant_id, p.id)
    return {"webhook": ctx.shaper.one(row)}


@rpc_method(ListWebhooks, tenant_role("admin"), result=results.WebhookList,
             run_db=None, tenant_must_exist=True)
async def list_webhooks(ctx: Call, p: ListWebhooks) -> dict:
    """List a tenant's webhooks (never their secrets)."""
    async with ctx.connection() as conn:
        await require_tenant(ctx, conn, p.tenant_id)
        page = await WebhookRepository(conn).list(p.tenant_id, p.pagination)
    return ctx.shaper.page("webhooks", page)


@rpc_method(UpdateWebhook, tenant_role("admin"), result=results.WebhookResult,
             run_db=None, tenant_must_exist=False)
async def update_webhook(ctx: Call, p: UpdateWebhook) -> dict:
    """Change a webhook's URL, description or filter, pause it, resume it (`status:
    active`), or move its position."""
    changes = changes_of(p, UPDATABLE)
    require_changes(changes, UPDATABLE)
    if "url" in changes:
        await _checked_url(ctx, changes["url"])
    run_as = (await _run_as(ctx) if "pipeline_id" in changes or changes.get("status") == "active"
              else None)
    if "filter" in changes:
        changes["filter"] = _stored_filter(changes["filter"])
    now = datetime.now(timezone.utc)
    async with ctx.transaction() as conn:
        repo = WebhookRepository(conn)
        current = await repo.get(p.tenant_id, p.id)
        trigger = current["pipeline_id"] is not None
        if "url" in changes and trigger:
            raise InvalidParams.field("url", "a trigger runs a pipeline: it has no URL "
                                      "(change its pipeline_id)")
        if "pipeline_id" in changes:
            if not trigger:
                raise InvalidParams.field("pipeline_id", "a webhook POSTs to its URL: it "
                                          "runs no pipeline (create a trigger instead)")
            await PipelineRepository(conn).get(p.tenant_id, changes["pipeline_id"])
        if trigger and run_as is not None:  # (resumed, or a new pipeline) runs as the caller
            changes.update(created_by_user_id=run_as[0], created_by_key_id=run_as[1])
        if "pipeline_id" in changes or p.position is not None:
            # The run in flight (if any) is no longer waited for: the next event's run is.
            changes.update(run_id=None, run_position=None)
        position = changes.pop("position", None)
        if position is not None or changes.get("status") == "active":
            head, trimmed = await ChangeRepository(conn).head(p.tenant_id)
            at = current["delivered_position"] if position is None else position
            if position is not None and position > head:
                raise InvalidParams.field("position", f"position {position} is past the "
                                          f"tenant's last position ({head})")
            if at < trimmed:
                raise InvalidParams.field(
                    "position" if position is not None else "status",
                    f"position_expired: events after {at} were dropped by retention (through "
                    f"{trimmed}); give a `position` of at least {trimmed} (the events between "
                    "are lost to this webhook: resynchronise from the lists)")
            if position is not None:
                changes["delivered_position"] = position
        status = changes.pop("status", None)
        if status == "active" or (status is None and position is not None
                                  and current["status"] == "active"):
            changes.update(status="active", paused_reason=None, paused_at=None, failures=0,
                           next_attempt_at=now)
        elif status == "paused" and current["status"] != "paused":
            changes.update(status="paused", paused_reason=PAUSED_BY_CALLER, paused_at=now)
        if not changes:
            changes["status"] = current["status"]  # (a no-op change still bumps the version)
        if set(changes) - {"description"}:
            # The server delivering it (if any) lets go: what it was doing is not recorded,
            # and the next claim starts from the new state.
            changes.update(claimed_by=None, claimed_until=None)
        row = await repo.update(p.tenant_id, p.id, changes, p.expected_version)
    ctx.state.webhooks.subscribe(p.tenant_id)
    return {"webhook": ctx.shaper.one(row)}


@rpc_method(WebhookId, tenant_role("admin"), result=results.Deleted,
             run_db=None, tenant_must_exist=False)
async def delete_webhook(ctx: Call, p: WebhookId) -> dict:
    """Delete a webhook and its delivery records (a delivery in flight may still arrive)."""
    async with ctx.transaction() as conn:
        await WebhookRepository(conn).delete(p.tenant_id, p.id)
    return DELETED


@rpc_method(ListWebhookDeliveries, tenant_role("admin"), result=results.WebhookDeliveryList,
             run_db=None, tenant_must_exist=False)
async def list_webhook_deliveries(ctx: Call, p: ListWebhookDeliveries) -> dict:
    """List a webhook's deliveries, oldest first: per event its attempts, status, last HTTP
    status and error, and when it is tried next; and the redeliveries asked for."""
    async with ctx.connection() as conn:
        repo = WebhookRepository(conn)
        await repo.get(p.tenant_id, p.webhook_id)
        page = await repo.deliveries(p.tenant_id, p.webhook_id, p.pagination)
    return ctx.shaper.page("deliveries", page)


@rpc_method(Redeliver, tenant_role("admin"), result=results.WebhookDeliveryResult,
             run_db=None, tenant_must_exist=False)
async def redeliver(ctx: Call, p: Redeliver) -> dict:
    """Send one event to a webhook again (by `position`, or a `delivery_id`): queued, sent
    once by the delivery worker before the webhook's next events, with the same
    `webhook-id`."""
    if (p.position is None) == (p.delivery_id is None):
        raise InvalidParams.field("position", "give either position or delivery_id")
    async with ctx.transaction() as conn:
        repo = WebhookRepository(conn)
        hook = await repo.get(p.tenant_id, p.webhook_id)
        if hook["pipeline_id"] is not None:
            raise InvalidParams.field("webhook_id", "a trigger's events are not redelivered: "
                                      "run its pipeline with the event (from list_changes) as "
                                      "input, or move the trigger's position (update_webhook)")
        position = p.position
        if p.delivery_id is not None:
            found = await repo.delivery(p.tenant_id, p.webhook_id, p.delivery_id)
            if found is None:
                raise NotFound("webhook_delivery", p.delivery_id)
            position = found["position"]
        assert position is not None
        _, trimmed = await ChangeRepository(conn).head(p.tenant_id)
        if position > hook["delivered_position"]:
            raise InvalidParams.field("position", f"event {position} is not delivered yet "
                                      f"(the webhook is at {hook['delivered_position']}): it "
                                      "will be sent in its turn")
        if position <= trimmed:
            raise InvalidParams.field("position", f"position_expired: event {position} was "
                                      f"dropped by retention (through {trimmed})")
        row = await repo.request_redelivery(p.tenant_id, p.webhook_id, position)
        ctx.set_target("webhook", p.webhook_id)
    ctx.state.webhooks.subscribe(p.tenant_id)
    return {"delivery": ctx.shaper.one(row)}
