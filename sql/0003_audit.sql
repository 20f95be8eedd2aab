-- Audit trail: one row per state change (and per denied attempt, rate-limited), written in
-- the same transaction as the change, hash-chained per tenant, append-only.
-- tenant_id 00000000-0000-0000-0000-000000000000 is the platform's own chain (users, keys,
-- denied attempts).

CREATE TABLE audit_events (
    tenant_id     uuid        NOT NULL,
    seq           bigint      NOT NULL,
    id            uuid        NOT NULL DEFAULT gen_random_uuid(),
    created_at    timestamptz NOT NULL,
    actor_user_id uuid,
    actor_key_id  uuid,
    method        text        NOT NULL,
    target_kind   text,
    target_id     text,
    outcome       text        NOT NULL CHECK (outcome IN ('ok', 'denied')),
    request_id    text        NOT NULL,
    summary       text        NOT NULL,   -- canonical JSON of the redacted params
    prev_hash     bytea       NOT NULL,
    hash          bytea       NOT NULL,
    PRIMARY KEY (tenant_id, seq),
    CONSTRAINT audit_events_id_key UNIQUE (tenant_id, id)
);
CREATE INDEX audit_events_keyset_idx ON audit_events (tenant_id, created_at, id);

CREATE TABLE audit_chain_heads (
    tenant_id uuid   NOT NULL PRIMARY KEY,
    seq       bigint NOT NULL,
    hash      bytea  NOT NULL
);

CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_events_no_update_or_delete BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();
