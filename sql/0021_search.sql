-- Full-text search (issue 23). Each node keeps a text search vector of its data, computed
-- by a trigger in the writing statement (so a search right after a write sees it) from its
-- node type's search settings: node_types.search_config = {"language": a text search
-- configuration, "fields": [paths into data as key lists, each starting with "data"] or
-- null for every string value of the document}; NULL means {"language": "simple",
-- "fields": null}. The GIN index leads with tenant_id (btree_gin), as every index on
-- tenant data does.
CREATE EXTENSION IF NOT EXISTS btree_gin;

ALTER TABLE node_types ADD COLUMN search_config jsonb;
ALTER TABLE nodes ADD COLUMN search_vector tsvector NOT NULL DEFAULT ''::tsvector;

-- The part of `data` that is searched: the whole document, or the listed fields' values
-- (as a JSON array; a field the document lacks adds a null). (PL/pgSQL, not SQL: called
-- per row from the trigger, a SQL function that is not inlined is planned at every call.)
CREATE FUNCTION flexdb_search_document(config jsonb, data jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF jsonb_typeof(config -> 'fields') IS DISTINCT FROM 'array' THEN
        RETURN data;
    END IF;
    RETURN coalesce((SELECT jsonb_agg(data #> array(
                         SELECT key FROM jsonb_array_elements_text(f) WITH ORDINALITY
                             AS k (key, n) WHERE n > 1 ORDER BY n))
                     FROM jsonb_array_elements(config -> 'fields') AS f), '[]'::jsonb);
END
$$;
REVOKE ALL ON FUNCTION flexdb_search_document(jsonb, jsonb) FROM PUBLIC;

-- The text search vector of `data` under a node type's search settings. A text search
-- vector holds at most 1 MB: a large document with that many distinct words is indexed by
-- the first 256 KiB of its text instead of failing its write (the check costs a
-- subtransaction, so only documents over 64 KiB as stored take it).
CREATE FUNCTION flexdb_search_vector(config jsonb, data jsonb) RETURNS tsvector
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
DECLARE
    language regconfig := coalesce(config ->> 'language', 'simple')::regconfig;
BEGIN
    IF pg_column_size(data) <= 65536 THEN
        RETURN jsonb_to_tsvector(language, flexdb_search_document(config, data), '["string"]');
    END IF;
    BEGIN
        RETURN jsonb_to_tsvector(language, flexdb_search_document(config, data), '["string"]');
    EXCEPTION WHEN program_limit_exceeded THEN
        RETURN to_tsvector(language, left(flexdb_search_text(config, data), 262144));
    END;
END
$$;
REVOKE ALL ON FUNCTION flexdb_search_vector(jsonb, jsonb) FROM PUBLIC;

-- The searched strings as one text, for highlighted snippets (ts_headline).
CREATE FUNCTION flexdb_search_text(config jsonb, data jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN coalesce((SELECT string_agg(v #>> '{}', ' … ')
                     FROM jsonb_path_query(flexdb_search_document(config, data), 'strict $.**')
                         AS v
                     WHERE jsonb_typeof(v) = 'string'), '');
END
$$;
REVOKE ALL ON FUNCTION flexdb_search_text(jsonb, jsonb) FROM PUBLIC;

CREATE FUNCTION nodes_search_vector() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    config jsonb;
BEGIN
    SELECT search_config INTO config FROM node_types
    WHERE tenant_id = NEW.tenant_id AND id = NEW.node_type_id;
    NEW.search_vector := flexdb_search_vector(config, NEW.data);
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION nodes_search_vector() FROM PUBLIC;
CREATE TRIGGER nodes_search_vector BEFORE INSERT OR UPDATE OF data ON nodes
    FOR EACH ROW EXECUTE FUNCTION nodes_search_vector();

-- The nodes already there (no change events: their data did not change).
SET LOCAL flexdb.change_feed = 'off';
UPDATE nodes SET search_vector = flexdb_search_vector(NULL, data);
RESET flexdb.change_feed;

-- Partial: a node with nothing to search (a node type with "fields": []) costs the index
-- nothing (a search's condition repeats the predicate, so the planner can use it).
CREATE INDEX nodes_search_idx ON nodes USING gin (tenant_id, search_vector)
    WHERE search_vector <> ''::tsvector;

-- Change events carry the node as the API shows it: not its search vector.
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
        WITH recorded AS (
            INSERT INTO change_events (tenant_id, operation, kind, object_id, version,
                                       actor_user_id, actor_key_id, actor_run_id, node_type_id,
                                       relationship_type, object_bytes, object)
            SELECT n.tenant_id, CASE TG_OP WHEN 'INSERT' THEN 'create' ELSE 'update' END,
                   TG_ARGV[0], j ->> TG_ARGV[1], (j ->> 'version')::integer, actor_user,
                   actor_key, actor_run, (j ->> 'node_type_id')::uuid, j ->> 'relationship_type',
                   pg_column_size(j), CASE WHEN pg_column_size(j) <= max_bytes THEN j END
            FROM new_rows n CROSS JOIN LATERAL (SELECT to_jsonb(n) - 'search_vector') AS o (j)
            RETURNING tenant_id, seq)
        INSERT INTO change_pending (tenant_id, seq) SELECT tenant_id, seq FROM recorded;
    END IF;
    RETURN NULL;
END
$$;
