-- Which trigger started a pipeline run (NULL: a caller did). The change feed's reads for
-- triggers leave out the changes of every such run, so no trigger fires on a trigger's
-- writes. (Before, only the run a delivery record named last was known to be a trigger's:
-- a retry's run replaced the failed one there, and the failed runs' writes fired triggers,
-- the trigger's own included, without end.) Set by the server queuing the run, never by a
-- caller.
ALTER TABLE pipeline_runs ADD COLUMN started_by_trigger uuid;
UPDATE pipeline_runs r SET started_by_trigger = d.webhook_id
FROM webhook_deliveries d WHERE d.tenant_id = r.tenant_id AND d.run_id = r.id;
