-- Core entities. Every tenant-owned table leads its primary key, unique constraints and
-- foreign keys with tenant_id, so a cross-tenant link cannot exist in the database itself.

CREATE TABLE tenants (
    id          uuid        NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
    slug        text        NOT NULL,
    name        text        NOT NULL,
    status      text        NOT NULL DEFAULT 'active',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    version     integer     NOT NULL DEFAULT 1,
    CONSTRAINT tenants_slug_key UNIQUE (slug)
);
CREATE INDEX tenants_keyset_idx ON tenants (created_at, id);

CREATE TABLE users (
    id           uuid        NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
    email        text        NOT NULL,
    display_name text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    version      integer     NOT NULL DEFAULT 1
);
-- Emails are unique regardless of case.
CREATE UNIQUE INDEX users_email_key ON users (lower(email));
CREATE INDEX users_keyset_idx ON users (created_at, id);

CREATE TABLE tenant_users (
    tenant_id   uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id     uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role        text        NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    status      text        NOT NULL DEFAULT 'active',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id)
);
CREATE INDEX tenant_users_keyset_idx ON tenant_users (tenant_id, created_at, user_id);
CREATE INDEX tenant_users_user_idx ON tenant_users (user_id);

CREATE TABLE node_types (
    tenant_id   uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id          uuid        NOT NULL DEFAULT gen_random_uuid(),
    name        text        NOT NULL,
    description text        NOT NULL DEFAULT '',
    schema      jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    version     integer     NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT node_types_name_key UNIQUE (tenant_id, name)
);
CREATE INDEX node_types_keyset_idx ON node_types (tenant_id, created_at, id);

CREATE TABLE nodes (
    tenant_id    uuid        NOT NULL,
    id           uuid        NOT NULL DEFAULT gen_random_uuid(),
    node_type_id uuid        NOT NULL,
    data         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    version      integer     NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT nodes_node_type_fkey FOREIGN KEY (tenant_id, node_type_id)
        REFERENCES node_types (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX nodes_keyset_idx ON nodes (tenant_id, created_at, id);
CREATE INDEX nodes_type_keyset_idx ON nodes (tenant_id, node_type_id, created_at, id);

CREATE TABLE relationships (
    tenant_id         uuid        NOT NULL,
    id                uuid        NOT NULL DEFAULT gen_random_uuid(),
    source_node_id    uuid        NOT NULL,
    target_node_id    uuid        NOT NULL,
    relationship_type text        NOT NULL,
    data              jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    version           integer     NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT relationships_source_fkey FOREIGN KEY (tenant_id, source_node_id)
        REFERENCES nodes (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT relationships_target_fkey FOREIGN KEY (tenant_id, target_node_id)
        REFERENCES nodes (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX relationships_keyset_idx ON relationships (tenant_id, created_at, id);
CREATE INDEX relationships_source_idx ON relationships (tenant_id, source_node_id, created_at, id);
CREATE INDEX relationships_target_idx ON relationships (tenant_id, target_node_id, created_at, id);
CREATE INDEX relationships_type_idx ON relationships (tenant_id, relationship_type, created_at, id);
