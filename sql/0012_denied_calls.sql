-- Refused calls (unauthenticated, forbidden, not found) are counted, not recorded one by
-- one: one row per interval, source, method and outcome, so the table grows with time and
-- with the distinct sources, never with the number of attempts (a batch of calls with no
-- valid credentials aimed at random tenant ids adds to one count). `source` is what the
-- caller cannot vary freely: the API key (`key:<id>`) or, without valid credentials, the
-- client's address (`address:<IPv4>` or its IPv6 /64). Not tenant-owned: platform admins
-- read it (list_denied_calls). Rows are counts that grow, so they are not hash-chained.
CREATE TABLE denied_calls (
    id         uuid        NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    created_at timestamptz NOT NULL,  -- the start of the interval the row counts
    source     text        NOT NULL,
    method     text        NOT NULL,
    outcome    text        NOT NULL CHECK (outcome IN ('unauthenticated', 'forbidden',
                                                       'not_found')),
    count      bigint      NOT NULL CHECK (count > 0),
    last_at    timestamptz NOT NULL,
    PRIMARY KEY (created_at, source, method, outcome)
);
CREATE INDEX denied_calls_page_idx ON denied_calls (created_at, id);
REVOKE ALL ON denied_calls FROM PUBLIC;
