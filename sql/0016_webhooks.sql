-- Webhooks (issue 21 item 6): a tenant's change events POSTed to a URL, in position order,
-- at least once, signed the Standard Webhooks way (rpc_server/changes/webhooks.py delivers,
-- storage/repositories/webhooks.py holds the SQL).
--
-- delivered_position is the last position the webhook is done with (delivered, or passed
-- by its filter); the next delivery is the first matching event after it. A server delivers
-- a webhook only while it holds its claim: claimed_by names the server process and
-- claimed_until ends the lease, renewed with every step. Every write of the delivering
-- server names itself in its WHERE (claimed_by = $me), so one whose lease ran out and was
-- taken over changes nothing: one delivery in flight per webhook, in order, across any
-- number of server processes. A server that dies leaves its lease to run out.
CREATE TABLE webhooks (
    tenant_id          uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id                 uuid        NOT NULL DEFAULT gen_random_uuid(),
    url                text        NOT NULL,
    description        text        NOT NULL DEFAULT '',
    filter             jsonb,
    -- The signing secret, sealed (Fernet) with a key derived from the server secret: a copy
    -- of the database alone does not give it away. secret_hint: its last characters.
    secret_sealed      text        NOT NULL,
    secret_hint        text        NOT NULL,
    status             text        NOT NULL DEFAULT 'active'
                                   CHECK (status IN ('active', 'paused')),
    paused_reason      text,
    paused_at          timestamptz,
    delivered_position bigint      NOT NULL DEFAULT 0,
    failures           integer     NOT NULL DEFAULT 0,  -- consecutive, of the current event
    next_attempt_at    timestamptz NOT NULL DEFAULT now(),
    last_attempt_at    timestamptz,
    last_http_status   integer,
    last_error         text,
    claimed_by         text,
    claimed_until      timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    version            integer     NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX webhooks_keyset_idx ON webhooks (tenant_id, created_at, id);
-- The delivery workers' sweep: active webhooks that are due.
CREATE INDEX webhooks_due_idx ON webhooks (next_attempt_at) WHERE status = 'active';
REVOKE ALL ON webhooks FROM PUBLIC;

-- One row per event delivered (its attempts, the last outcome), and per redelivery asked for.
-- status: 'retrying' (failed, will be tried again), 'delivered', 'failed' (given up: the
-- webhook was paused, or a redelivery failed), 'pending' (a redelivery not yet tried).
CREATE TABLE webhook_deliveries (
    tenant_id        uuid        NOT NULL,
    id               uuid        NOT NULL DEFAULT gen_random_uuid(),
    webhook_id       uuid        NOT NULL,
    position         bigint      NOT NULL,
    redelivery       boolean     NOT NULL DEFAULT false,
    status           text        NOT NULL
                                 CHECK (status IN ('pending', 'retrying', 'delivered', 'failed')),
    attempts         integer     NOT NULL DEFAULT 0,
    last_http_status integer,
    last_error       text,
    next_attempt_at  timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT webhook_deliveries_webhook_fkey FOREIGN KEY (tenant_id, webhook_id)
        REFERENCES webhooks (tenant_id, id) ON DELETE CASCADE
);
-- The event's own delivery (its retries update it); a redelivery is a row of its own.
CREATE UNIQUE INDEX webhook_deliveries_event_key
    ON webhook_deliveries (tenant_id, webhook_id, position) WHERE NOT redelivery;
CREATE INDEX webhook_deliveries_keyset_idx
    ON webhook_deliveries (tenant_id, webhook_id, created_at, id);
CREATE INDEX webhook_deliveries_pending_idx
    ON webhook_deliveries (tenant_id, webhook_id, created_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_age_idx ON webhook_deliveries (updated_at);
REVOKE ALL ON webhook_deliveries FROM PUBLIC;
