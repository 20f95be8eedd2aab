-- audit_pending's primary key leads with tenant_id, like every tenant-owned table's
-- (DESIGN.md, storage rules). Its tenant_id is NOT NULL already: events of no tenant go to
-- the platform's own chain, tenant 00000000-0000-0000-0000-000000000000, so no sentinel or
-- second table is needed. pending_id stays an identity (unique on its own, and the order a
-- tenant's events were recorded in). The rows stay where they are; the new key's index
-- replaces audit_pending_tenant_idx, which had the same columns.
ALTER TABLE audit_pending DROP CONSTRAINT audit_pending_pkey;
ALTER TABLE audit_pending ADD CONSTRAINT audit_pending_pkey PRIMARY KEY (tenant_id, pending_id);
DROP INDEX audit_pending_tenant_idx;
