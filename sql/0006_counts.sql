-- Maintained node counts: a list's total_count reads a few counter rows instead of counting
-- the tenant's nodes. Each writing statement adds its delta to one of 32 slots picked by its
-- backend (a pooled connection keeps its slot), so concurrent writers of one tenant rarely
-- wait on the same counter row until commit; a total is the sum of the slots. The counts
-- change in the writing transaction, so a page and its total come from one snapshot.
CREATE TABLE node_counts (
    tenant_id    uuid     NOT NULL,
    node_type_id uuid     NOT NULL,
    slot         smallint NOT NULL,
    n            bigint   NOT NULL,
    PRIMARY KEY (tenant_id, node_type_id, slot)
);
REVOKE ALL ON node_counts FROM PUBLIC;

CREATE FUNCTION node_counts_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- ORDER BY: one statement locks its counter rows in a fixed order (no deadlocks).
    IF TG_OP = 'INSERT' THEN
        INSERT INTO node_counts AS c (tenant_id, node_type_id, slot, n)
        SELECT tenant_id, node_type_id, pg_backend_pid() % 32, count(*)
        FROM new_rows GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (tenant_id, node_type_id, slot) DO UPDATE SET n = c.n + EXCLUDED.n;
    ELSE
        INSERT INTO node_counts AS c (tenant_id, node_type_id, slot, n)
        SELECT tenant_id, node_type_id, pg_backend_pid() % 32, -count(*)
        FROM old_rows GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (tenant_id, node_type_id, slot) DO UPDATE SET n = c.n + EXCLUDED.n;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER nodes_count_inserts AFTER INSERT ON nodes REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION node_counts_add();
CREATE TRIGGER nodes_count_deletes AFTER DELETE ON nodes REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION node_counts_add();

INSERT INTO node_counts (tenant_id, node_type_id, slot, n)
SELECT tenant_id, node_type_id, 0, count(*) FROM nodes GROUP BY 1, 2;
