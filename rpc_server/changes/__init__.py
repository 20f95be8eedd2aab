"""The change feed: the sequencer that numbers each tenant's committed change events
(sql/0015_change_feed.sql records them in the writing transaction), the per-process hub that
reads new events once and wakes every stream waiting on them, and the shape of an event.
Webhooks and triggers read the same log; their workers, like the job runner
(pipelines/jobs.py), serve what they claim under a lease through claim_loop.py. Imports
storage below it; the
HTTP stream (api/event_stream.py) and list_changes (methods/changes.py) sit above it."""
