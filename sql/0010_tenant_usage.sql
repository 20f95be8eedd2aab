-- What each tenant stores, for its quotas and for get_tenant: the bytes of its node and
-- relationship documents (as stored, pg_column_size), kept by statement triggers in the
-- writing transaction, in 32 slots per tenant picked by the writing backend (as node_counts
-- does), so concurrent writers of one tenant rarely wait on one row. Its node count is
-- node_counts'.
CREATE TABLE tenant_usage (
    tenant_id uuid     NOT NULL,
    slot      smallint NOT NULL,
    bytes     bigint   NOT NULL,
    PRIMARY KEY (tenant_id, slot)
);
REVOKE ALL ON tenant_usage FROM PUBLIC;

CREATE FUNCTION tenant_usage_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- ORDER BY: one statement locks its usage rows in a fixed order (no deadlocks).
    IF TG_OP = 'INSERT' THEN
        INSERT INTO tenant_usage AS u (tenant_id, slot, bytes)
        SELECT tenant_id, pg_backend_pid() % 32, sum(pg_column_size(data))
        FROM new_rows GROUP BY 1 ORDER BY 1
        ON CONFLICT (tenant_id, slot) DO UPDATE SET bytes = u.bytes + EXCLUDED.bytes;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO tenant_usage AS u (tenant_id, slot, bytes)
        SELECT tenant_id, pg_backend_pid() % 32, -sum(pg_column_size(data))
        FROM old_rows GROUP BY 1 ORDER BY 1
        ON CONFLICT (tenant_id, slot) DO UPDATE SET bytes = u.bytes + EXCLUDED.bytes;
    ELSE
        INSERT INTO tenant_usage AS u (tenant_id, slot, bytes)
        SELECT tenant_id, pg_backend_pid() % 32, sum(size)
        FROM (SELECT tenant_id, pg_column_size(data) AS size FROM new_rows
              UNION ALL
              SELECT tenant_id, -pg_column_size(data) FROM old_rows) AS change
        GROUP BY 1 HAVING sum(size) <> 0 ORDER BY 1
        ON CONFLICT (tenant_id, slot) DO UPDATE SET bytes = u.bytes + EXCLUDED.bytes;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER nodes_usage_inserts AFTER INSERT ON nodes REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tenant_usage_add();
CREATE TRIGGER nodes_usage_deletes AFTER DELETE ON nodes REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tenant_usage_add();
CREATE TRIGGER nodes_usage_updates AFTER UPDATE ON nodes
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tenant_usage_add();
CREATE TRIGGER relationships_usage_inserts AFTER INSERT ON relationships
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION tenant_usage_add();
CREATE TRIGGER relationships_usage_deletes AFTER DELETE ON relationships
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION tenant_usage_add();
CREATE TRIGGER relationships_usage_updates AFTER UPDATE ON relationships
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tenant_usage_add();

INSERT INTO tenant_usage (tenant_id, slot, bytes)
SELECT tenant_id, 0, sum(size) FROM (
    SELECT tenant_id, pg_column_size(data) AS size FROM nodes
    UNION ALL
    SELECT tenant_id, pg_column_size(data) FROM relationships) AS stored
GROUP BY 1;
