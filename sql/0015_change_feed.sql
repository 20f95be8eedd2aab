-- The change feed (issue 21): every change to a node, relationship, node type, pipeline or
-- membership records an event in the writing transaction, by the statement triggers below,
-- so a rolled-back change has none, a committed one always has it, and a delete that cascades
-- records one event for every row it removed (the cascade's own DELETE fires the triggers).
--
-- Positions: an event is recorded without one, with a row in change_pending. After the change
-- commits, the sequencer (rpc_server/changes/sequencer.py, calling flexdb_sequence_changes)
-- takes the tenant's committed pending events and numbers them 1, 2, 3 … in the order they
-- were recorded (change_positions), holding the tenant's change_heads row locked while it
-- does. A transaction still open has recorded nothing a sequencer can see, so it cannot take a
-- position below one already handed out: its events are numbered after it commits, above
-- every position a reader may have passed. Positions per tenant are dense and only grow, and
-- a reader's statement sees a prefix of them. (Events are never updated: numbering writes
-- two small rows per event instead of a new version of the whole event, which cost writers a
-- fifth of their throughput in bench_changes.py.)
CREATE TABLE change_events (
    tenant_id         uuid        NOT NULL,
    seq               bigint      NOT NULL GENERATED ALWAYS AS IDENTITY,
    occurred_at       timestamptz NOT NULL DEFAULT now(),
    operation         text        NOT NULL,
    kind              text        NOT NULL,
    object_id         text        NOT NULL,
    version           integer,
    actor_user_id     uuid,
    actor_key_id      uuid,
    actor_run_id      uuid,  -- the pipeline run whose token made the change
    node_type_id      uuid,
    relationship_type text,
    object_bytes      integer     NOT NULL,
    object            jsonb,
    PRIMARY KEY (tenant_id, seq)
);
REVOKE ALL ON change_events FROM PUBLIC;

-- Recorded events not numbered yet (a short queue: the sequencer empties it after commits).
CREATE TABLE change_pending (
    tenant_id uuid   NOT NULL,
    seq       bigint NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);
REVOKE ALL ON change_pending FROM PUBLIC;

-- Each numbered event's position.
CREATE TABLE change_positions (
    tenant_id uuid   NOT NULL,
    position  bigint NOT NULL,
    seq       bigint NOT NULL,
    PRIMARY KEY (tenant_id, position)
);
REVOKE ALL ON change_positions FROM PUBLIC;

-- Per tenant: the last position handed out, and the position through which events were
-- dropped by retention (a reader asking for changes after an earlier one has missed some).
CREATE TABLE change_heads (
    tenant_id       uuid   NOT NULL PRIMARY KEY,
    last_position   bigint NOT NULL DEFAULT 0,
    trimmed_through bigint NOT NULL DEFAULT 0
);
REVOKE ALL ON change_heads FROM PUBLIC;

-- Who made the changes of this transaction, for their events: set (transaction-local) by the
-- server before its first change (storage/repositories/changes.py, ACTOR_SQL).
CREATE FUNCTION flexdb_note_actor(user_id uuid, key_id uuid, run_id uuid) RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    SELECT set_config('flexdb.actor_user_id', coalesce(user_id::text, ''), true) IS NOT NULL
       AND set_config('flexdb.actor_key_id', coalesce(key_id::text, ''), true) IS NOT NULL
       AND set_config('flexdb.actor_run_id', coalesce(run_id::text, ''), true) IS NOT NULL
$$;
REVOKE ALL ON FUNCTION flexdb_note_actor(uuid, uuid, uuid) FROM PUBLIC;

-- One trigger function for every table and operation; TG_ARGV[0] is the kind, TG_ARGV[1]
-- the column holding the object's id. The object is the row as JSON, or NULL when it is larger
-- than flexdb.feed_max_object_bytes (a pool setting; 65536 where unset) or was deleted.
-- flexdb.change_feed = 'off' (FLEXDB_CHANGE_FEED=false) records nothing.
CREATE FUNCTION change_events_record() RETURNS trigger LANGUAGE plpgsql AS $$
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
            FROM new_rows n CROSS JOIN LATERAL to_jsonb(n) AS j
            RETURNING tenant_id, seq)
        INSERT INTO change_pending (tenant_id, seq) SELECT tenant_id, seq FROM recorded;
    END IF;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION change_events_record() FROM PUBLIC;

DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT * FROM (VALUES ('nodes', 'node', 'id'),
                                   ('relationships', 'relationship', 'id'),
                                   ('node_types', 'node_type', 'id'),
                                   ('pipelines', 'pipeline', 'id'),
                                   ('tenant_users', 'membership', 'user_id'))
                           AS v (tbl, kind, id_column) LOOP
        EXECUTE format('CREATE TRIGGER %1$s_feed_inserts AFTER INSERT ON %1$I '
                       'REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT '
                       'EXECUTE FUNCTION change_events_record(%2$L, %3$L)',
                       t.tbl, t.kind, t.id_column);
        EXECUTE format('CREATE TRIGGER %1$s_feed_updates AFTER UPDATE ON %1$I '
                       'REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT '
                       'EXECUTE FUNCTION change_events_record(%2$L, %3$L)',
                       t.tbl, t.kind, t.id_column);
        EXECUTE format('CREATE TRIGGER %1$s_feed_deletes AFTER DELETE ON %1$I '
                       'REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT '
                       'EXECUTE FUNCTION change_events_record(%2$L, %3$L)',
                       t.tbl, t.kind, t.id_column);
    END LOOP;
END
$$;

-- Number the tenant's committed pending events (at most `batch`, oldest first) after its last
-- position, under the lock of its change_heads row; tell listeners the new last position.
-- Returns how many it numbered.
CREATE FUNCTION flexdb_sequence_changes(tenant uuid, batch integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    head bigint;
    numbered integer;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM change_pending WHERE tenant_id = tenant) THEN
        RETURN 0;  -- (and no head row for a tenant deleted meanwhile)
    END IF;
    INSERT INTO change_heads (tenant_id) VALUES (tenant) ON CONFLICT DO NOTHING;
    SELECT last_position INTO head FROM change_heads WHERE tenant_id = tenant FOR UPDATE;
    -- A new statement: its snapshot is taken after the lock, so it sees what the sequencer
    -- that held it last has taken.
    WITH taken AS (
        DELETE FROM change_pending WHERE tenant_id = tenant AND seq IN (
            SELECT seq FROM change_pending WHERE tenant_id = tenant ORDER BY seq LIMIT batch)
        RETURNING seq)
    INSERT INTO change_positions (tenant_id, position, seq)
    SELECT tenant, head + row_number() OVER (ORDER BY seq), seq FROM taken;
    GET DIAGNOSTICS numbered = ROW_COUNT;
    IF numbered > 0 THEN
        UPDATE change_heads SET last_position = head + numbered WHERE tenant_id = tenant;
        PERFORM pg_notify('flexdb_changes', tenant::text || ':' || (head + numbered)::text);
    END IF;
    RETURN numbered;
END
$$;
REVOKE ALL ON FUNCTION flexdb_sequence_changes(uuid, integer) FROM PUBLIC;
