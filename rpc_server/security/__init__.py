"""Who the caller is and what it may use: API keys and principals, the Bearer
credential, execution tokens for pipeline runs, roles, rate limits, per-tenant slots, the
server secret and the first platform admin. May import audit and everything below it."""
