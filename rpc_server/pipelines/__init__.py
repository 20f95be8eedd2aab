"""Running stored pipelines: the fair run queue and the runner that hands runs
to the sandbox worker (sandbox_client), and jobs (jobs.py: migrate_nodes), whose batches are
runs in that queue. May import the layers after it (jobs share the trigger creator's check
with changes/); the execution token is made by the app and given to the runner, and the
schema validators to the job runner."""
