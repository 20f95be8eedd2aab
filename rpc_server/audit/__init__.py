"""The audit trail's rules: redaction of params into summaries, the chainer that
puts pending events on each tenant's hash chain after commit, and the per-interval counts of
refused calls. May import query and everything below it."""
