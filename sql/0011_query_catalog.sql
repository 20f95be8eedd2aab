-- Tenant SQL sees nothing about the server, even when the text check in front of it
-- (rpc_server/query_guard.py) is fooled: the query role loses what PostgreSQL grants every
-- role on the catalog.
--
-- Privileges granted to PUBLIC cannot be denied to one role, so they are revoked from PUBLIC
-- in this database:
--   * SELECT on every table and view of pg_catalog and information_schema: settings
--     (pg_settings, pg_db_role_setting), roles (pg_roles, pg_user, pg_auth_members), other
--     sessions (pg_stat_activity, pg_locks), table statistics (pg_stats, pg_stat_*,
--     pg_statio_*, pg_class.reltuples), definitions (pg_views, pg_rules, pg_proc.prosrc) and
--     the rest of the catalog;
--   * USAGE on the schemas information_schema and public (the row type of a server table
--     names its columns: NULL::public.api_keys);
--   * EXECUTE on the functions of pg_catalog named pg_* (statistics, definitions, sizes,
--     backends, the server's start time, ...) except the few that describe only their
--     argument, and on introspection functions with other names (settings, version,
--     addresses, privileges, name lookups, transaction ids, comments on objects).
-- The server checks at start that the query role holds none of what query_guard refuses
-- (repositories/tenant_sql.py, setup_problems) and disables execute_query otherwise.
--
-- Only a superuser can revoke what PUBLIC holds on pg_catalog and information_schema (any
-- other role gets a warning per object and nothing changes), and a superuser needs no grant
-- back. So nothing is granted back here: a superuser server bypasses privileges, and a
-- server whose role is not a superuser never had these revoked (nor could use execute_query:
-- migration 0004 has the same requirement). Other roles that are not superusers and read
-- this database's catalog (monitoring, say) need their own grants afterwards.

DO $$
DECLARE
    item record;
BEGIN
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        RAISE WARNING 'flexdb: the catalog stays readable by every role (migration 0011 needs '
                      'a superuser); execute_query stays disabled until a superuser runs it';
        RETURN;
    END IF;
    FOR item IN
        SELECT 'SELECT' AS privilege, format('TABLE %s', c.oid::regclass) AS object
        FROM pg_class c
        WHERE c.relnamespace IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
          AND (has_table_privilege('public', c.oid, 'SELECT')
               OR has_any_column_privilege('public', c.oid, 'SELECT'))
        UNION ALL
        SELECT 'USAGE', format('SCHEMA %I', n.nspname)
        FROM pg_namespace n
        WHERE n.nspname IN ('information_schema', 'public')
          AND has_schema_privilege('public', n.oid, 'USAGE')
        UNION ALL
        SELECT 'EXECUTE', format('FUNCTION %s', p.oid::regprocedure)
        FROM pg_proc p
        WHERE p.pronamespace = 'pg_catalog'::regnamespace
          AND has_function_privilege('public', p.oid, 'EXECUTE')
          AND ((p.proname LIKE 'pg\_%'
                AND p.proname NOT IN ('pg_typeof', 'pg_column_size', 'pg_size_pretty',
                                      'pg_size_bytes', 'pg_collation_for'))
               OR p.proname IN ('current_setting', 'version', 'current_database',
                                'current_schemas', 'current_query', 'obj_description',
                                'col_description', 'shobj_description', 'format_type',
                                'row_security_active')
               OR p.proname LIKE 'has\_%' OR p.proname LIKE 'to\_reg%'
               OR p.proname LIKE 'txid\_%' OR p.proname LIKE 'inet\_server\_%'
               OR p.proname LIKE 'inet\_client\_%')
    LOOP
        EXECUTE format('REVOKE %s ON %s FROM PUBLIC', item.privilege, item.object);
    END LOOP;
END $$;
