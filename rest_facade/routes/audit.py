"""/tenants/{tenant_id}/audit-events (tenant admins; the platform's chain is tenant
00000000-0000-0000-0000-000000000000, for platform admins)."""
from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import Depends, Query, Request
from pydantic import BeforeValidator

from rpc_server.api.params import Moment

from .. import forward
from ..models import paging, result_of
from . import make_router

router = make_router("audit")


RFC3339_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]")


def _rfc3339(value):
    # pydantic would also take a bare number as a Unix time; the API speaks RFC 3339 only.
    if isinstance(value, str) and not RFC3339_DATE.match(value):
        raise ValueError("must be an RFC 3339 date-time with a time zone")
    return value


Since = Annotated[Moment | None, BeforeValidator(_rfc3339), Query()]


@router.get("/tenants/{tenant_id}/audit-events", response_model=result_of("list_audit_events"))
async def list_audit_events(request: Request, tenant_id: UUID,
                            pagination: Annotated[dict, Depends(paging)],
                            actor: Annotated[UUID | None, Query()] = None,
                            method: Annotated[str | None, Query(max_length=100)] = None,
                            target_id: Annotated[str | None, Query(max_length=100)] = None,
                            since: Since = None, until: Since = None):
    """The tenant's audit events, oldest first, filtered by actor, method, target or time."""
    params: dict = {"tenant_id": str(tenant_id), "pagination": pagination}
    filters = {"actor": actor, "method": method, "target_id": target_id, "since": since,
               "until": until}
    for key, value in filters.items():
        if value is not None:
            params[key] = value.isoformat() if isinstance(value, datetime) else str(value)
    return forward.json(await forward.call(request, "list_audit_events", params))


@router.get("/tenants/{tenant_id}/audit-events/verify",
            response_model=result_of("verify_audit_chain"))
async def verify_audit_chain(request: Request, tenant_id: UUID):
    """Recompute the tenant's hash chain: ok, or the first event where it breaks."""
    params = {"tenant_id": str(tenant_id)}
    return forward.json(await forward.call(request, "verify_audit_chain", params))
