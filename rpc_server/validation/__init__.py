"""JSON Schema checks of node data: the cost of a schema measured when saved,
validation metered in CPU, the fast path for flat schemas, safe (RE2) regular expressions.
May import pipelines and everything below it."""
