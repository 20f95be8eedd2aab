-- Schema evolution (issue 22). Every change of a node type's schema makes a new version of
-- it: node_types.schema_version is the current one, node_type_versions keeps each version's
-- schema and what was found when it was made, and each node records the schema version its
-- data was last validated against (nodes.schema_version). Nodes written before versions
-- existed record 1, the version their node type starts with here.
ALTER TABLE node_types ADD COLUMN schema_version integer NOT NULL DEFAULT 1;
ALTER TABLE nodes ADD COLUMN schema_version integer NOT NULL DEFAULT 1;

CREATE TABLE node_type_versions (
    tenant_id          uuid        NOT NULL,
    node_type_id       uuid        NOT NULL,
    version            integer     NOT NULL,
    schema             jsonb,
    created_at         timestamptz NOT NULL DEFAULT now(),
    created_by_user_id uuid,
    -- how the version was made: 'create' (with the node type), 'validate' (every existing
    -- node was valid under it) or 'allow_invalid' (accepted with nodes_invalid failing)
    mode               text        NOT NULL,
    nodes_checked      bigint      NOT NULL DEFAULT 0,
    nodes_invalid      bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, node_type_id, version),
    FOREIGN KEY (tenant_id, node_type_id) REFERENCES node_types (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT node_type_versions_mode_check CHECK (mode IN ('create', 'validate',
                                                             'allow_invalid'))
);
REVOKE ALL ON node_type_versions FROM PUBLIC;
INSERT INTO node_type_versions (tenant_id, node_type_id, version, schema, created_at, mode)
SELECT tenant_id, id, 1, schema, created_at, 'create' FROM node_types;

-- Tenant SQL sees the recorded versions too (columns appended: the views' others stay).
CREATE OR REPLACE VIEW flexdb_query.node_types WITH (security_barrier) AS
    SELECT id, tenant_id, name, description, schema, created_at, updated_at, version,
           schema_version
    FROM public.node_types WHERE tenant_id = flexdb_private.query_tenant();
CREATE OR REPLACE VIEW flexdb_query.nodes WITH (security_barrier) AS
    SELECT id, tenant_id, node_type_id, data, created_at, updated_at, version, schema_version
    FROM public.nodes WHERE tenant_id = flexdb_private.query_tenant();
