-- Queued pipeline runs are claimed tenant by tenant: the tenant served longest ago goes
-- first (round robin), so one tenant's hundreds of queued runs do not make another
-- tenant's single run wait behind all of them.
CREATE TABLE pipeline_queue_turns (
    tenant_id       uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    last_claimed_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id)
);
REVOKE ALL ON pipeline_queue_turns FROM PUBLIC;
-- A tenant's queued and running runs are counted at every run_pipeline (its caps).
CREATE INDEX pipeline_runs_tenant_queued_idx ON pipeline_runs (tenant_id, created_at)
    WHERE status = 'queued';
CREATE INDEX pipeline_runs_tenant_running_idx ON pipeline_runs (tenant_id)
    WHERE status = 'running';
