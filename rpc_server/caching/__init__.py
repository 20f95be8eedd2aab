"""Caches in front of the database: per-process TTL caches, the Redis-shared
cache with its generations, invalidation between instances, node types, and the batched
point reads of get_node. May import storage and ops."""
