-- Triggers (issue 21 item 7): a webhook may name a stored pipeline instead of a URL. Each
-- change event its filter matches is then run through that pipeline (the event as input), as
-- a queued run in the fair pipeline queue, one run at a time per trigger and in position
-- order (rpc_server/changes/webhooks.py; storage/repositories/webhooks.py holds the SQL).
--
-- A trigger has no URL and no signing secret. Deleting its pipeline deletes the trigger and
-- its delivery records, as it deletes the pipeline's runs (ON DELETE CASCADE).
ALTER TABLE webhooks
    ALTER COLUMN url DROP NOT NULL,
    ALTER COLUMN secret_sealed DROP NOT NULL,
    ALTER COLUMN secret_hint DROP NOT NULL,
    ADD COLUMN pipeline_id uuid,
    -- Who created it (a trigger's runs run as this user and key, checked again before each
    -- run: a removed member or a revoked key pauses the trigger). Not foreign keys: a user
    -- or key that is gone is found missing by that check.
    ADD COLUMN created_by_user_id uuid,
    ADD COLUMN created_by_key_id uuid,
    -- A trigger's run in flight and the event it runs for. It is queued and recorded here in
    -- one transaction, by the server holding the claim, so a crash never queues an event's
    -- run twice; the next claim waits for this run instead of queuing another.
    ADD COLUMN run_id uuid,
    ADD COLUMN run_position bigint,
    ADD CONSTRAINT webhooks_pipeline_fkey FOREIGN KEY (tenant_id, pipeline_id)
        REFERENCES pipelines (tenant_id, id) ON DELETE CASCADE,
    ADD CONSTRAINT webhooks_target_check CHECK ((url IS NULL) <> (pipeline_id IS NULL)),
    ADD CONSTRAINT webhooks_secret_check CHECK ((url IS NULL) = (secret_sealed IS NULL)),
    ADD CONSTRAINT webhooks_run_check CHECK ((run_id IS NULL) = (run_position IS NULL));
-- The pipeline's triggers (and the foreign key's cascade on delete_pipeline).
CREATE INDEX webhooks_pipeline_idx ON webhooks (tenant_id, pipeline_id)
    WHERE pipeline_id IS NOT NULL;

-- A trigger's delivery names the run of its last attempt; `running` while that run is
-- queued or running.
ALTER TABLE webhook_deliveries
    ADD COLUMN run_id uuid,
    DROP CONSTRAINT webhook_deliveries_status_check,
    ADD CONSTRAINT webhook_deliveries_status_check
        CHECK (status IN ('pending', 'running', 'retrying', 'delivered', 'failed'));

-- Whether a run was started by a trigger: its changes fire no trigger (the change feed's
-- reads for triggers, storage/repositories/changes.py), so no trigger can loop.
CREATE INDEX webhook_deliveries_run_idx ON webhook_deliveries (tenant_id, run_id)
    WHERE run_id IS NOT NULL;
