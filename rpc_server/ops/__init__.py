"""Operating the server: logs, Prometheus metrics, readiness checks and the registry
of local quick-start instances. Imports nothing of flexdb's but the foundation (config,
errors)."""
