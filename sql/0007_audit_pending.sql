-- Audit events are written in the change's transaction into audit_pending, which takes no
-- lock, so the writers of one tenant no longer commit one at a time behind its chain head.
-- Right after commit (and in a sweep every second, for events a stopped server left), a
-- server moves them into audit_events, hash-chained, in batches; the chain head row is the
-- lock that keeps two servers from chaining one tenant at once. list_audit_events and
-- verify_audit_chain chain a tenant's pending events first, so readers see every event.
CREATE TABLE audit_pending (
    pending_id    bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     uuid        NOT NULL,
    id            uuid        NOT NULL,
    created_at    timestamptz NOT NULL,
    actor_user_id uuid,
    actor_key_id  uuid,
    method        text        NOT NULL,
    target_kind   text,
    target_id     text,
    outcome       text        NOT NULL,
    request_id    text        NOT NULL,
    summary       text        NOT NULL
);
CREATE INDEX audit_pending_tenant_idx ON audit_pending (tenant_id, pending_id);
REVOKE ALL ON audit_pending FROM PUBLIC;
-- The same rule as audit_events: a value the chain would refuse is refused with the change.
ALTER TABLE audit_pending ADD CONSTRAINT audit_pending_outcome_check
    CHECK (outcome IN ('ok', 'denied', 'rejected'));
