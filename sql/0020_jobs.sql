-- Jobs (issue 22 item 4): long work a caller starts and follows (get_job, list_jobs,
-- cancel_job), done in steps by the server process that holds the job's claim. The first
-- kind is `migrate_nodes`: a stored pipeline applied to every node of a node type, one
-- batch of nodes per pipeline run, through the fair pipeline queue (rpc_server/pipelines/
-- jobs.py runs them; storage/repositories/jobs.py holds the SQL).
--
-- Claims work as the webhooks' do (sql/0016_webhooks.sql): claimed_by names the server
-- process, claimed_until ends its lease, and every write of the claiming server names
-- itself in its WHERE. A job's batch in flight is run_id: it is queued and recorded here in
-- one transaction, and its outcome is applied (the nodes written, the cursor and counters
-- moved on, run_id cleared) in one transaction, so a crash re-does at most a batch whose
-- outcome was not applied, and never applies one twice.
CREATE TABLE jobs (
    tenant_id          uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id                 uuid        NOT NULL DEFAULT gen_random_uuid(),
    kind               text        NOT NULL CHECK (kind IN ('migrate_nodes')),
    status             text        NOT NULL DEFAULT 'queued'
                                   CHECK (status IN ('queued', 'running', 'succeeded',
                                                     'failed', 'cancelled')),
    -- What the caller asked for (for migrate_nodes: node_type_id, pipeline_id, to_version,
    -- only_outdated). Not foreign keys: a job's record outlives the objects it names, and
    -- a job whose node type or pipeline is deleted fails.
    params             jsonb       NOT NULL,
    total              bigint      NOT NULL DEFAULT 0,  -- items found when it started
    processed          bigint      NOT NULL DEFAULT 0,
    changed            bigint      NOT NULL DEFAULT 0,
    failed             bigint      NOT NULL DEFAULT 0,
    batches            integer     NOT NULL DEFAULT 0,  -- batches applied
    failures           jsonb       NOT NULL DEFAULT '[]',  -- the first ones, bounded
    error              jsonb,  -- why the job failed (or was cancelled)
    -- Where it is: the keyset of the last item done ((created_at, id) of a node), and the
    -- batch in flight (its pipeline run and the items it was queued with).
    cursor_created_at  timestamptz,
    cursor_id          uuid,
    run_id             uuid,
    batch              jsonb,
    created_by_user_id uuid,
    created_by_key_id  uuid,
    request_id         text        NOT NULL DEFAULT '',
    claimed_by         text,
    claimed_until      timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    started_at         timestamptz,
    finished_at        timestamptz,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    version            integer     NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT jobs_run_check CHECK ((run_id IS NULL) = (batch IS NULL))
);
REVOKE ALL ON jobs FROM PUBLIC;
CREATE INDEX jobs_keyset_idx ON jobs (tenant_id, created_at, id);
-- The servers' sweep for jobs to claim, and the per-tenant cap on active jobs.
CREATE INDEX jobs_active_idx ON jobs (created_at) WHERE status IN ('queued', 'running');
CREATE INDEX jobs_tenant_active_idx ON jobs (tenant_id, status)
    WHERE status IN ('queued', 'running');

-- A run that applies its code to each item of a list input (map mode, for jobs): its
-- result is one entry per item, the item's result or its error.
ALTER TABLE pipeline_runs ADD COLUMN map_items boolean NOT NULL DEFAULT false;
