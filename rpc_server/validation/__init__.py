"""JSON Schema checks of node data: the cost of a schema measured when saved,
validation metered in CPU, the fast path for flat schemas, safe (RE2) regular expressions,
and the check of a node type's existing nodes against a new schema (the dry run and the
schema change's stamping). May import pipelines and everything below it."""
