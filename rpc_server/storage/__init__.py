"""The database: pools, the embedded PostgreSQL, migrations, pagination, the
node filter compiled to SQL, the response byte budget of reads, the audit chain's hash,
vector search's set-up and background index builder (pgvector, when available) and one
repository per entity. The only package that writes SQL. May import only ops and the
foundation (config, errors)."""
