-- Vector similarity search (issue 23): a node type may declare an embedding field,
-- {"field": "data.<path>", "dimensions": D, "metrics": ["cosine" | "l2" | "inner", ...]}.
-- Only the declaration is static. What needs the optional `vector` extension (pgvector) -
-- the extension itself, the node_embeddings side table, its trigger on nodes - is set up at
-- every start by rpc_server/storage/vectors.py (ensure_vector_storage, idempotent, under an
-- advisory lock) when the extension is available: so these migrations apply on a
-- PostgreSQL without pgvector, and an extension installed later is picked up on the next
-- start without a new (or edited) migration.
ALTER TABLE node_types ADD COLUMN embedding jsonb;
