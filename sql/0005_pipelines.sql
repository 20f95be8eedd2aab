-- Pipeline group: stored Python pipelines and their runs. A run keeps a copy of the code it
-- ran, its limits, the caller (for the execution token's role) and everything it produced.

CREATE TABLE pipelines (
    tenant_id   uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id          uuid        NOT NULL DEFAULT gen_random_uuid(),
    name        text        NOT NULL,
    description text        NOT NULL DEFAULT '',
    code        text        NOT NULL,
    timeout_ms  integer     NOT NULL,
    memory_mb   integer     NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    version     integer     NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT pipelines_name_key UNIQUE (tenant_id, name)
);
CREATE INDEX pipelines_keyset_idx ON pipelines (tenant_id, created_at, id);

CREATE TABLE pipeline_runs (
    tenant_id      uuid        NOT NULL,
    id             uuid        NOT NULL DEFAULT gen_random_uuid(),
    pipeline_id    uuid        NOT NULL,
    status         text        NOT NULL CHECK (status IN ('queued', 'running', 'succeeded',
                                                          'failed', 'timed_out', 'cancelled')),
    input          jsonb,
    result         jsonb,
    error          jsonb,
    output         text        NOT NULL DEFAULT '',
    debug_level    text        NOT NULL DEFAULT 'none',
    code           text        NOT NULL,
    timeout_ms     integer     NOT NULL,
    memory_mb      integer     NOT NULL,
    actor_user_id  uuid,
    actor_key_id   uuid,
    actor_role     text        NOT NULL,
    request_id     text        NOT NULL DEFAULT '',
    duration_ms    double precision,
    cpu_ms         double precision,
    peak_memory_kb bigint,
    db_operations  jsonb       NOT NULL DEFAULT '[]'::jsonb,
    created_at     timestamptz NOT NULL DEFAULT now(),
    started_at     timestamptz,
    deadline       timestamptz,
    finished_at    timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT pipeline_runs_pipeline_fkey FOREIGN KEY (tenant_id, pipeline_id)
        REFERENCES pipelines (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX pipeline_runs_keyset_idx ON pipeline_runs (tenant_id, created_at, id);
CREATE INDEX pipeline_runs_pipeline_idx ON pipeline_runs (tenant_id, pipeline_id, created_at, id);
-- The queue: oldest queued run first, claimed with FOR UPDATE SKIP LOCKED.
CREATE INDEX pipeline_runs_queue_idx ON pipeline_runs (created_at) WHERE status = 'queued';
-- Runs left 'running' by a server that died are found by their deadline.
CREATE INDEX pipeline_runs_running_idx ON pipeline_runs (deadline) WHERE status = 'running';
