-- Query group: read-only SQL for tenants (execute_query), structured node queries and graph
-- traversal.
--
-- Caller SQL runs as flexdb_query, a NOLOGIN role that owns nothing and may read only the
-- views in schema flexdb_query. The views show the rows of one tenant: the one named by the
-- ticket the server puts in the transaction-local setting flexdb.query_ticket. A ticket is
-- the tenant id plus a SHA-256 over a secret only the server's role can read, the tenant,
-- the backend and the transaction's start time, so even a statement that managed to change
-- the setting could not name another tenant (and set_config is revoked from PUBLIC besides).

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'flexdb_query') THEN
        CREATE ROLE flexdb_query NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT
            NOREPLICATION NOBYPASSRLS;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;  -- another database's migration created it at the same moment (roles are global)
END $$;

-- The server's own role must be able to SET ROLE flexdb_query (superusers always can).
DO $$
BEGIN
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        EXECUTE format('GRANT flexdb_query TO %I', current_user);
    END IF;
END $$;

CREATE SCHEMA flexdb_private;
REVOKE ALL ON SCHEMA flexdb_private FROM PUBLIC;

CREATE TABLE flexdb_private.query_ticket_key (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    key      text    NOT NULL
);
-- gen_random_uuid() draws from the strong random source: two of them give 244 random bits.
INSERT INTO flexdb_private.query_ticket_key (key)
VALUES (replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''));
REVOKE ALL ON flexdb_private.query_ticket_key FROM PUBLIC;

-- The ticket for a tenant, valid only in this backend and this transaction.
CREATE FUNCTION flexdb_private.query_ticket(tenant uuid) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT tenant::text || ':' || encode(sha256(convert_to(
               k.key || ':' || tenant::text || ':' || pg_backend_pid()::text || ':'
               || extract(epoch FROM transaction_timestamp())::text, 'UTF8')), 'hex')
    FROM flexdb_private.query_ticket_key k
$$;
REVOKE ALL ON FUNCTION flexdb_private.query_ticket(uuid) FROM PUBLIC;

-- The tenant the current ticket names, or NULL (no rows) when it is missing or forged.
CREATE FUNCTION flexdb_private.query_tenant() RETURNS uuid
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
    ticket text := current_setting('flexdb.query_ticket', true);
    tenant uuid;
BEGIN
    IF ticket IS NULL OR ticket !~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}:[0-9a-f]{64}$' THEN
        RETURN NULL;
    END IF;
    tenant := substr(ticket, 1, 36)::uuid;
    IF ticket = flexdb_private.query_ticket(tenant) THEN
        RETURN tenant;
    END IF;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION flexdb_private.query_tenant() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION flexdb_private.query_tenant() TO flexdb_query;

CREATE SCHEMA flexdb_query;
REVOKE ALL ON SCHEMA flexdb_query FROM PUBLIC;
GRANT USAGE ON SCHEMA flexdb_query TO flexdb_query;

-- security_barrier: the tenant filter runs before any function of the caller's, so an
-- error or a leaky function can never see another tenant's row.
CREATE VIEW flexdb_query.node_types WITH (security_barrier) AS
    SELECT id, tenant_id, name, description, schema, created_at, updated_at, version
    FROM public.node_types WHERE tenant_id = flexdb_private.query_tenant();
CREATE VIEW flexdb_query.nodes WITH (security_barrier) AS
    SELECT id, tenant_id, node_type_id, data, created_at, updated_at, version
    FROM public.nodes WHERE tenant_id = flexdb_private.query_tenant();
CREATE VIEW flexdb_query.relationships WITH (security_barrier) AS
    SELECT id, tenant_id, source_node_id, target_node_id, relationship_type, data,
           created_at, updated_at, version
    FROM public.relationships WHERE tenant_id = flexdb_private.query_tenant();
GRANT SELECT ON flexdb_query.node_types, flexdb_query.nodes, flexdb_query.relationships
    TO flexdb_query;

-- Server functions a tenant's statement must never reach, even when the text check is
-- fooled: changing settings (the ticket, the role, timeouts), running SQL from a string
-- (query_to_xml and friends, ts_stat, ts_rewrite execute a query inside a SELECT), large
-- objects (they can be created even in a READ ONLY transaction), NOTIFY, files, sleeping,
-- advisory locks and using up transaction ids. Superusers (the server's
-- usual role) are not affected by these revokes; a server role that is not a superuser
-- keeps them through an explicit grant.
DO $$
DECLARE
    fn regprocedure;
    is_super boolean := (SELECT rolsuper FROM pg_roles WHERE rolname = current_user);
BEGIN
    FOR fn IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = 'pg_catalog'::regnamespace
          AND (p.proname IN ('set_config', 'pg_notify', 'loread', 'lowrite', 'query_to_xml',
                             'query_to_xmlschema', 'query_to_xml_and_xmlschema',
                             'cursor_to_xml', 'cursor_to_xmlschema', 'table_to_xml',
                             'table_to_xmlschema', 'table_to_xml_and_xmlschema',
                             'schema_to_xml', 'schema_to_xmlschema',
                             'schema_to_xml_and_xmlschema', 'database_to_xml',
                             'database_to_xmlschema', 'database_to_xml_and_xmlschema',
                             'pg_read_file', 'pg_read_binary_file', 'pg_stat_file',
                             'pg_ls_dir', 'ts_stat', 'ts_rewrite', 'txid_current',
                             'pg_current_xact_id', 'pg_export_snapshot')
               OR p.proname LIKE 'lo\_%' OR p.proname LIKE 'pg\_sleep%'
               OR p.proname LIKE 'pg\_advisory%' OR p.proname LIKE 'pg\_try\_advisory%')
    LOOP
        BEGIN
            EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', fn);
            IF NOT is_super THEN
                EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', fn, current_user);
            END IF;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE WARNING 'flexdb: cannot revoke EXECUTE on % from PUBLIC (not a superuser); '
                          'execute_query stays disabled until a superuser does', fn;
        END;
    END LOOP;
END $$;

-- Stops a tenant statement inside PostgreSQL once its rows add up to more than the caller
-- may receive, before they are sent (SQLSTATE 54000).
CREATE FUNCTION flexdb_query.within_result_limit(bytes numeric, max_bytes bigint)
RETURNS boolean LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog AS $$
BEGIN
    IF bytes > max_bytes THEN
        RAISE EXCEPTION 'the result is larger than % bytes', max_bytes
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    RETURN true;
END
$$;
REVOKE ALL ON FUNCTION flexdb_query.within_result_limit(numeric, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION flexdb_query.within_result_limit(numeric, bigint) TO flexdb_query;

-- Rejected statements are recorded in the audit trail too.
ALTER TABLE audit_events DROP CONSTRAINT audit_events_outcome_check;
ALTER TABLE audit_events ADD CONSTRAINT audit_events_outcome_check
    CHECK (outcome IN ('ok', 'denied', 'rejected'));

-- query_nodes: containment and equality on data use this index.
CREATE INDEX nodes_data_gin_idx ON nodes USING gin (data jsonb_path_ops);
-- query_nodes sorted by updated_at, keyset-paginated like list_nodes.
CREATE INDEX nodes_updated_keyset_idx ON nodes (tenant_id, updated_at, id);
