"""How many change streams are open on this server process, per caller (API key, or user
without one), per tenant and in all, and the caps on each (FLEXDB_FEED_STREAMS_*)."""
from __future__ import annotations

from collections import Counter
from typing import Hashable
from uuid import UUID


class StreamCaps:
    def __init__(self, per_caller: int, per_tenant: int, total: int):
        self.per_caller, self.per_tenant, self.total = per_caller, per_tenant, total
        self.callers: Counter[Hashable] = Counter()
        self.tenants: Counter[UUID] = Counter()
        self.open_streams = 0  # read by /metrics

    def refusal(self, caller: Hashable, tenant_id: UUID) -> tuple[str, int] | None:
        """Why a new stream would be one too many: (the setting, its value), or None."""
        if self.open_streams >= self.total:
            return "FLEXDB_FEED_STREAMS_MAX", self.total
        if self.tenants[tenant_id] >= self.per_tenant:
            return "FLEXDB_FEED_STREAMS_PER_TENANT", self.per_tenant
        if self.callers[caller] >= self.per_caller:
            return "FLEXDB_FEED_STREAMS_PER_KEY", self.per_caller
        return None

    def add(self, caller: Hashable, tenant_id: UUID) -> None:
        self.callers[caller] += 1
        self.tenants[tenant_id] += 1
        self.open_streams += 1

    def remove(self, caller: Hashable, tenant_id: UUID) -> None:
        for counter, key in ((self.callers, caller), (self.tenants, tenant_id)):
            counter[key] -= 1  # type: ignore[index]  # (each counter with its own key)
            if counter[key] <= 0:  # type: ignore[index]
                del counter[key]  # type: ignore[arg-type]
        self.open_streams -= 1
