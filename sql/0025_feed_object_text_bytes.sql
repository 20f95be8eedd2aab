-- An event's object_bytes, and the FLEXDB_FEED_MAX_OBJECT_BYTES test of whether the event
-- carries its object, were the object's binary jsonb size (pg_column_size). Every reader
-- gets the object as JSON text, which can be six times that (a control character is one
-- byte in jsonb and six, \u0001, in text), so the byte budgets of list_changes, change
-- streams and webhooks, which count object_bytes, let reads of six times their size
-- through. Both are now the object's size as text: what readers receive. (Events recorded
-- before keep their binary sizes.)
CREATE OR REPLACE FUNCTION change_events_record() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    max_bytes integer := coalesce(nullif(current_setting('flexdb.feed_max_object_bytes', true),
                                         '')::integer, 65536);
    actor_user uuid := nullif(current_setting('flexdb.actor_user_id', true), '')::uuid;
    actor_key uuid := nullif(current_setting('flexdb.actor_key_id', true), '')::uuid;
    actor_run uuid := nullif(current_setting('flexdb.actor_run_id', true), '')::uuid;
BEGIN
    IF current_setting('flexdb.change_feed', true) = 'off' THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        -- A tenant deleted with everything it owns leaves no events (nobody may read them).
        WITH recorded AS (
            INSERT INTO change_events (tenant_id, operation, kind, object_id, version,
                                       actor_user_id, actor_key_id, actor_run_id, node_type_id,
                                       relationship_type, object_bytes, object)
            SELECT o.tenant_id, 'delete', TG_ARGV[0], j ->> TG_ARGV[1],
                   (j ->> 'version')::integer, actor_user, actor_key, actor_run,
                   (j ->> 'node_type_id')::uuid, j ->> 'relationship_type', 0, NULL
            FROM old_rows o CROSS JOIN LATERAL to_jsonb(o) AS j
            WHERE EXISTS (SELECT 1 FROM tenants t WHERE t.id = o.tenant_id)
            RETURNING tenant_id, seq)
        INSERT INTO change_pending (tenant_id, seq) SELECT tenant_id, seq FROM recorded;
    ELSE
        -- OFFSET 0 (as in sql/0023): the JSON, and its size as text, once per row.
        WITH recorded AS (
            INSERT INTO change_events (tenant_id, operation, kind, object_id, version,
                                       actor_user_id, actor_key_id, actor_run_id, node_type_id,
                                       relationship_type, object_bytes, object)
            SELECT n.tenant_id, CASE TG_OP WHEN 'INSERT' THEN 'create' ELSE 'update' END,
                   TG_ARGV[0], j ->> TG_ARGV[1], (j ->> 'version')::integer, actor_user,
                   actor_key, actor_run, (j ->> 'node_type_id')::uuid, j ->> 'relationship_type',
                   text_bytes, CASE WHEN text_bytes <= max_bytes THEN j END
            FROM new_rows n
                 CROSS JOIN LATERAL (SELECT j, octet_length(j::text) FROM (
                     SELECT to_jsonb(n) - 'search_vector' OFFSET 0) AS built (j)
                     OFFSET 0) AS o (j, text_bytes)
            RETURNING tenant_id, seq)
        INSERT INTO change_pending (tenant_id, seq) SELECT tenant_id, seq FROM recorded;
    END IF;
    RETURN NULL;
END
$$;
